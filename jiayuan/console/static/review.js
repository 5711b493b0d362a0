// The weekly review (managers, admins): a week's figures per building from /api/review —
// alerts by kind, time to acknowledge and to resolve, escalations, staff unreachable, false
// alarms, devices low on battery or offline longest — and the same as CSV (/api/review.csv).
// Whatever the service answers is shown; without the review API, a clear message says so.

import { getLang, locale, t } from "./i18n.js";
import { api, buildingName, deviceLink, h, loading, num, qs, saved, unitName } from "./util.js";

/** ISO week of a date, ``2026-W49``. */
export function isoWeek(d = new Date()) {
  const day = new Date(Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()));
  const dow = day.getUTCDay() || 7;
  day.setUTCDate(day.getUTCDate() + 4 - dow);
  const year = day.getUTCFullYear();
  const week = Math.ceil(((day - Date.UTC(year, 0, 1)) / 864e5 + 1) / 7);
  return `${year}-W${String(week).padStart(2, "0")}`;
}

function label(key) {
  const text = t(`review_keys.${key}`);
  return text === key.split(".").pop() ? key.replace(/_/g, " ") : text;
}

function cell(v) {
  if (v == null) return "—";
  if (typeof v === "number") return num(v, 1);
  if (typeof v === "boolean") return v ? "✓" : "✗";
  if (Array.isArray(v)) return v.map(cell).join(", ");
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${label(k)} ${cell(x)}`).join(" · ");
  return String(v);
}

function table(rows) {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return h("div", { class: "table-wrap" }, h("table", { class: "review-table" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { text: label(c) })))),
    h("tbody", {}, rows.map((r) => h("tr", {}, cols.map((c) => h("td", { text: c === "building" && r[c] ? buildingName(r[c]) : cell(r[c]) })))))));
}

/** A duration in words: "3分12秒", "1 h 5 min". */
export function duration(sec) {
  if (sec == null) return "—";
  const s = Math.round(sec);
  const [d, hh, m, ss] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60), s % 60];
  const zh = getLang() === "zh";
  const parts = zh
    ? [d && `${d}天`, hh && `${hh}小时`, m && `${m}分`, !d && !hh && `${ss}秒`]
    : [d && `${d} d`, hh && `${hh} h`, m && `${m} min`, !d && !hh && `${ss} s`];
  return parts.filter(Boolean).slice(0, 2).join(zh ? "" : " ") || (zh ? "0秒" : "0 s");
}

function pair(d) {
  return d && d.n ? `${duration(d.median_s)} / ${duration(d.p90_s)}` : "—";
}

function kindTitle(k) {
  if (k.rule_id === "*") return t("review_all");
  return (getLang() === "zh" ? k.title_zh : k.title_en) || t(`rules.${k.rule_id}`);
}

function deviceTable(items, extra) {
  if (!items.length) return h("p", { class: "muted", text: t("none") });
  return h("div", { class: "table-wrap" }, h("table", { class: "review-table" },
    h("thead", {}, h("tr", {}, [t("device"), t("building"), t("unit"), extra[0]].map((c) => h("th", { text: c })))),
    h("tbody", {}, items.map((d) => h("tr", {},
      h("td", {}, deviceLink(d.device_id)), h("td", { class: "nobr", text: d.building ? buildingName(d.building) : "—" }),
      h("td", { class: "nobr", text: d.unit ? unitName(d.unit) : "—" }), h("td", { class: "nobr", text: extra[1](d) }))))));
}

/** The service's weekly review (``kinds``, ``total``, staff unreachable, devices). */
function showReview(r) {
  const fmt = new Intl.DateTimeFormat(locale(), { month: "short", day: "numeric", weekday: "short" });
  const last = new Date(Date.parse(r.ends_at) - 1);
  const rows = [...r.kinds, r.total];
  return [
    h("p", { class: "muted", "data-field": "review-range", text: `${fmt.format(new Date(r.starts_at))} – ${fmt.format(last)}${r.building ? ` · ${buildingName(r.building)}` : ""}` }),
    h("section", { class: "card" }, h("h3", { text: t("review_keys.alerts_by_kind") }),
      h("div", { class: "table-wrap" }, h("table", { class: "review-table", "data-field": "review-kinds" },
        h("thead", {}, h("tr", {}, [t("review_kind"), t("review_raised"), t("review_ack"), t("review_resolve"),
          t("review_keys.escalations"), t("review_unreached"), t("review_keys.false_alarms")].map((c) => h("th", { text: c })))),
        h("tbody", {}, rows.map((k) => h("tr", { class: k.rule_id === "*" ? "total" : "" },
          h("td", { text: kindTitle(k) }), h("td", { text: num(k.raised) }), h("td", { class: "nobr", text: pair(k.acknowledged) }),
          h("td", { class: "nobr", text: pair(k.resolved) }), h("td", { text: num(k.escalations) }),
          h("td", { class: k.unreached ? "bad" : "", text: num(k.unreached) }), h("td", { text: num(k.false_alarms) }))))))),
    h("section", { class: "card" }, h("h3", { text: t("review_keys.staff_unreachable") }),
      r.staff_unreachable.length ? h("ul", {}, r.staff_unreachable.map((x) => h("li", {}, h("span", { class: "mono nobr", text: x.staff_id }),
        ` · ${t("review_times", { n: x.times ?? "?" })}`))) : h("p", { class: "muted", text: t("none") })),
    h("section", { class: "card" }, h("h3", { text: t("review_keys.low_battery") }),
      deviceTable(r.low_battery, [t("battery"), (d) => (d.battery == null ? "—" : `${num(d.battery)}%`)])),
    h("section", { class: "card" }, h("h3", { text: t("review_keys.offline_longest") }),
      deviceTable(r.offline_longest, [t("review_offline_for"), (d) => duration(d.offline_s)])),
  ];
}

/** Any JSON the review answers, readably: figures as tiles, lists of records as tables. */
function show(data) {
  const tiles = [];
  const sections = [];
  for (const [k, v] of Object.entries(data)) {
    if (k === "week" || k === "building") continue;
    if (Array.isArray(v) && v.length && typeof v[0] === "object") {
      sections.push(h("section", { class: "card" }, h("h3", { text: label(k) }), table(v)));
    } else if (v && typeof v === "object" && !Array.isArray(v)) {
      const rows = Object.entries(v).map(([kk, vv]) => (vv && typeof vv === "object" && !Array.isArray(vv) ? { [k]: kk, ...vv } : { [k]: kk, value: vv }));
      sections.push(h("section", { class: "card" }, h("h3", { text: label(k) }), rows.length ? table(rows) : h("p", { class: "muted", text: t("none") })));
    } else if (Array.isArray(v)) {
      sections.push(h("section", { class: "card" }, h("h3", { text: label(k) }), h("p", { text: v.length ? cell(v) : t("none") })));
    } else {
      tiles.push(h("div", { class: "tile" }, h("small", { text: label(k) }), h("b", { text: cell(v) })));
    }
  }
  return [tiles.length ? h("div", { class: "tiles" }, tiles) : null, ...sections];
}

export function render(root) {
  // by default the last full week: the one to review
  const params = { week: saved.get("review_week", "") || isoWeek(new Date(Date.now() - 7 * 864e5)), building: saved.get("review_building", "") };
  const out = h("div", { class: "stack" });
  const csv = h("a", { class: "button", "data-ctl": "csv", download: "" , text: t("csv") });
  const week = h("input", { type: "week", name: "week", value: params.week, onchange: (e) => { params.week = e.target.value || isoWeek(new Date(Date.now() - 7 * 864e5)); saved.set("review_week", e.target.value); load(); } });
  const building = h("select", { name: "building", onchange: (e) => { params.building = e.target.value; saved.set("review_building", e.target.value); load(); } },
    h("option", { value: "", text: t("all") }));
  root.replaceChildren(h("section", { class: "stack review" },
    h("h2", { text: t("review_title") }),
    h("div", { class: "filters" },
      h("label", { class: "filter" }, t("week"), week),
      h("label", { class: "filter" }, t("filter_building"), building),
      csv),
    out));

  api("/api/fleet/summary").then((r) => {
    const ids = r.places.map((p) => p.building).filter(Boolean).sort((x, y) => x.localeCompare(y, undefined, { numeric: true }));
    building.append(...ids.map((b) => h("option", { value: b, selected: b === params.building, text: buildingName(b) })));
  }).catch(() => { /* all buildings only */ });

  async function load() {
    const q = qs({ week: params.week, building: params.building });
    csv.href = `/api/review.csv${q}`;
    const fail = loading(out);
    try {
      const data = await api(`/api/review${q}`);
      const parts = Array.isArray(data.kinds) && data.total ? showReview(data) : show(data);
      out.replaceChildren(...(parts.some(Boolean) ? parts : [h("p", { class: "muted", text: t("review_empty") })]));
    } catch (e) {
      if (e.status === 404 || e.status === 405) {
        csv.hidden = true;
        out.replaceChildren(h("p", { class: "notice", "data-field": "review-absent", text: t("review_absent") }));
      } else {
        fail(e, load);
      }
    }
  }
  load();
}
