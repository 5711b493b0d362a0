// The rules page (managers, admins): the rules in force in words (what each watches, for how
// long, when, what waits before paging, whom it pages) from GET /api/rules, and a trial on past
// data (POST /api/rules/backtest): change a rule's numbers — or paste a rule file — pick the
// days, and read per day what it would have raised beside the rules in force and what was
// really raised, the difference in words first.

import { getLang, locale, t, UNITS, words } from "./i18n.js";
import { api, h, loading, num } from "./util.js";

const MAX_DAYS = 31;
const MINUTES = new Set(["for", "window"]); // seconds in the API, minutes on the page

// ------------------------------------------------------------------ words

/** Seconds as people say them: "10 分钟", "30 秒", "1 小时 30 分钟". */
export function span(sec) {
  const s = Math.round(Number(sec) || 0);
  const parts = [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]];
  const out = [];
  let rest = s;
  for (const [size, key] of parts) {
    const n = Math.floor(rest / size);
    if (n) out.push(t(`dur.${key}`, { n }));
    rest -= n * size;
  }
  return out.join(" ") || t("dur.s", { n: 0 });
}

function metricWord(m) { return t(`metrics.${m}`); }
function unit(m) { const u = UNITS[m]; return u ? ` ${u}` : ""; }
function eventWords(list) { return (list || []).map((e) => t(`ev.${e}`)).join(t("list_sep")); }

/** A rule's name as its alerts carry it (the service's words), else the console's. */
export function ruleTitle(r) {
  if (r[`title_${getLang()}`]) return r[`title_${getLang()}`];
  const own = t(`rules.${r.id}`);
  return own === r.id ? r.definition.summary || r.id : own;
}

function activeWords(a) {
  const all = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
  const days = a.days && a.days.length < 7 ? a.days.filter((d) => all.includes(d)).map((d) => t(`rules_days.${d}`)).join(t("list_sep")) : t("rw.every_day");
  return t("rw.active", { days, hours: (a.hours || "00:00-24:00").replace("-", "–") });
}

function conditionWords(c) {
  if (c.unchanged != null) return t("rw.unchanged", { m: metricWord(c.metric), d: span(c.unchanged) });
  if (c.event) return t("rw.event_within", { e: t(`ev.${c.event}`), d: span(c.within) });
  const side = c.above != null ? t("rw.above", { m: metricWord(c.metric), v: num(c.above, 1), u: unit(c.metric) })
    : t("rw.below", { m: metricWord(c.metric), v: num(c.below, 1), u: unit(c.metric) });
  return c.for ? `${side} ${t("rw.for", { d: span(c.for) })}` : side;
}

/** What a rule watches, as lines: the condition first, then what clears it, when it applies,
 * what waits before paging. */
export function ruleLines(r) {
  const d = r.definition;
  const lines = [];
  const sep = getLang() === "zh" ? "，" : ", ";
  switch (d.type) {
    case "threshold": {
      const m = metricWord(d.metric);
      const u = unit(d.metric);
      if (d.baseline) {
        const b = d.baseline;
        const first = b.above_by != null ? t("rw.baseline_above", { m, v: num(b.above_by, 1), u, days: b.days ?? 14 })
          : t("rw.baseline_below", { m, v: num(b.below_by, 1), u, days: b.days ?? 14 });
        lines.push([first, d.for ? t("rw.for", { d: span(d.for) }) : null].filter(Boolean).join(" "));
        lines.push([t("rw.baseline_clear", { v: num(b.clear_by, 1), u }), t("rw.baseline_min", { n: b.min_days ?? 7 })].join(sep));
      } else {
        const first = d.above != null ? t("rw.above", { m, v: num(d.above, 1), u }) : t("rw.below", { m, v: num(d.below, 1), u });
        lines.push([first, d.for ? t("rw.for", { d: span(d.for) }) : null].filter(Boolean).join(" "));
        const clear = d.clear == null ? null : t(d.above != null ? "rw.clear_above" : "rw.clear_below", { v: num(d.clear, 1), u });
        lines.push([clear, d.override ? t("rw.override") : null].filter(Boolean).join(sep));
      }
      break;
    }
    case "event":
      lines.push([t("rw.events", { e: eventWords(d.events) }),
        d.clear_events ? t("rw.clear_events", { e: eventWords(d.clear_events) }) : t("rw.manual")].join(sep));
      if (d.verify) lines.push(t("rw.verify", { d: span(d.verify.within), e: eventWords(d.verify.cancel_events) }));
      if (d.persist) lines.push(t("rw.persist", { d: span(d.persist) }));
      break;
    case "absence":
      lines.push(t("rw.absence", { d: span(d.for) }));
      break;
    case "count":
      lines.push(t("rw.count", { e: t(`ev.${d.event}`), n: d.threshold, w: span(d.window) }));
      break;
    case "zone":
      lines.push(t("rw.zone", { d: span(d.for || 0) }));
      break;
    case "all":
    case "any":
      lines.push(`${t(`rw.${d.type}`)}${d.scope === "unit" ? t("rw.unit_scope") : ""} ${(d.conditions || []).map(conditionWords).join(getLang() === "zh" ? "；" : "; ")}`);
      break;
    default:
      lines.push(d.summary || "");
  }
  if (d.active) lines.push(activeWords(d.active));
  if (d.where && d.where.building != null) lines.push(t(d.where.building ? "rw.where_building" : "rw.where_entrance"));
  return lines.filter(Boolean);
}

function ruleCard(r, tryIt) {
  const d = r.definition;
  return h("article", { class: ["card", "rule", r.enabled ? "" : "disabled"], "data-rule-id": r.id },
    h("div", { class: "tags" },
      h("span", { class: ["badge", `sev-${d.severity}`], text: t(`sev.${d.severity}`) }),
      h("span", { class: ["tag", `sig-${d.signal}`], text: t(`sig.${d.signal}`) }),
      h("span", { class: "tag", text: t(`kinds.${r.kind}`) }),
      r.enabled ? null : h("span", { class: "tag warn", text: t("rules_disabled") })),
    h("h3", { text: ruleTitle(r) }),
    h("ul", { class: "rule-words" }, ruleLines(r).map((line) => h("li", { text: line }))),
    h("p", { class: "rule-pages", "data-field": "pages" }, h("strong", { text: t("rules_pages", { who: t(`rules_route.${d.route}`) }) })),
    r.editable.length ? h("button", { type: "button", class: "link", "data-act": "try-rule", onclick: () => tryIt(r), text: t("rules_change_this") }) : null);
}

// ------------------------------------------------------------------ days in the community's zone

/** Today in time zone `tz`, ``YYYY-MM-DD``. */
function today(tz) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
}

function addDays(day, n) {
  const d = new Date(`${day}T12:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

/** Local midnight of `day` in `tz` as RFC 3339 with its offset (``2026-11-25T00:00:00+08:00``). */
function midnight(day, tz) {
  const part = new Intl.DateTimeFormat("en-US", { timeZone: tz, timeZoneName: "longOffset" })
    .formatToParts(new Date(`${day}T12:00:00Z`)).find((p) => p.type === "timeZoneName");
  const off = part ? part.value.replace("GMT", "") : "";
  return `${day}T00:00:00${off || "Z"}`;
}

function dayLabel(day) {
  return new Intl.DateTimeFormat(locale(), { month: "short", day: "numeric", weekday: "short", timeZone: "UTC" })
    .format(new Date(`${day}T12:00:00Z`));
}

// ------------------------------------------------------------------ the trial's answer

function diffWords(diff) {
  if (diff > 0) return t("rules_more", { n: diff });
  if (diff < 0) return t("rules_fewer", { n: -diff });
  return t("rules_same");
}

function signed(n) { return n > 0 ? `+${n}` : n < 0 ? `−${-n}` : "0"; }

function resultFor(rc, days, rules) {
  const rule = rules.find((r) => r.id === rc.rule_id);
  const title = rule ? ruleTitle(rule) : rc.rule_id;
  let sentence;
  if (rc.in_force == null) sentence = words(h, "rules_new_rule", { tried: rc.tried });
  else if (rc.tried == null) sentence = words(h, "rules_gone", { now: rc.in_force });
  else sentence = words(h, "rules_sentence", { tried: rc.tried, now: rc.in_force, diff: diffWords(rc.tried - rc.in_force) });
  const actual = rc.raised_per_day || null;
  const rows = days.map((day) => {
    const [tried, now] = rc.per_day[day] || [0, 0];
    const diff = tried - now;
    return h("tr", { "data-day": day, class: diff ? "changed" : "" },
      h("td", { class: "nobr", text: dayLabel(day) }),
      h("td", { "data-col": "now", text: rc.in_force == null ? "—" : String(now) }),
      h("td", { "data-col": "tried", text: rc.tried == null ? "—" : String(tried) }),
      h("td", { "data-col": "diff", class: diff > 0 ? "more" : diff < 0 ? "fewer" : "muted", text: signed(diff) }),
      actual ? h("td", { "data-col": "actual", text: String(actual[day] || 0) }) : null);
  });
  return h("section", { class: "card trial-rule", "data-rule-id": rc.rule_id },
    h("h3", { text: title }),
    h("p", { class: "trial-sentence", "data-field": "trial-sentence" }, h("strong", {}, sentence),
      rc.raised != null ? ` ${t("rules_actual", { n: rc.raised })}` : ""),
    h("div", { class: "table-wrap" }, h("table", { class: "review-table trial-table", "data-field": "trial-days" },
      h("thead", {}, h("tr", {}, h("th", { text: t("rules_day") }),
        ["now", "tried", "diff", actual ? "actual" : null].filter(Boolean).map((c) => h("th", {},
          h("span", { class: "long", text: t(`rules_col_${c}`) }), h("span", { class: "short", text: t(`rules_short.${c}`) }))))),
      h("tbody", {}, rows))));
}

function showResult(out, res, rules, from, to) {
  const tried = res.rules.filter((rc) => rc.tried != null);
  const n = res.days.length;
  out.replaceChildren(
    h("p", { class: "trial-range", "data-field": "trial-range" },
      h("b", { text: t("rules_result", { from: dayLabel(from), to: dayLabel(to), n }) })),
    ...(tried.length ? tried : res.rules).map((rc) => resultFor(rc, res.days, rules)),
    h("p", { class: "muted" }, tried.length < res.rules.length ? `${t("rules_unchanged")} ` : "",
      t("rules_replayed", { rows: num(res.rows), s: num(res.seconds, 1) })));
}

// ------------------------------------------------------------------ the page

export function render(root) {
  const list = h("div", { class: "grid rules" });
  const trial = h("section", { class: "card trial", "data-field": "trial" });
  root.replaceChildren(h("section", { class: "stack rules-page" },
    h("h2", { text: t("rules_title") }),
    h("p", { class: "muted", text: t("rules_intro") }),
    trial, list));
  const fail = loading(list);
  let data = null;
  let form = null;

  async function load() {
    try {
      data = await api("/api/rules");
    } catch (e) {
      fail(e, load);
      return;
    }
    form = trialForm(trial, data);
    list.replaceChildren(...data.rules.map((r) => ruleCard(r, (rule) => {
      form.pick(rule.id);
      trial.scrollIntoView({ block: "start" });
    })));
  }
  load();
}

function fieldValue(def, key) {
  if (key.startsWith("baseline.")) return def.baseline ? def.baseline[key.slice(9)] : undefined;
  if (key === "for") return def.for ?? 0;
  return def[key];
}

/** The trial: a rule and its numbers, the days, run; or a pasted rule file. */
function trialForm(box, data) {
  const tz = data.timezone;
  const editable = data.rules.filter((r) => r.editable.length && r.enabled);
  const last = addDays(today(tz), -1);
  const from = h("input", { type: "date", name: "from", value: addDays(last, -6), max: last, required: true });
  const to = h("input", { type: "date", name: "to", value: last, max: today(tz), required: true });
  const select = h("select", { name: "rule", onchange: () => fields() },
    editable.map((r) => h("option", { value: r.id, text: ruleTitle(r) })));
  const numbers = h("div", { class: "filters trial-fields" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const out = h("div", { class: "stack", "data-field": "trial-result" });
  const run = h("button", { type: "submit", class: "primary", "data-act": "run-trial", text: t("rules_run") });
  const fileText = h("textarea", { name: "rules", rows: 8, spellcheck: "false", class: "mono" });
  const fileRun = h("button", { type: "button", "data-act": "run-file", text: t("rules_file_run") });
  let inputs = [];

  function fields() {
    const rule = editable.find((r) => r.id === select.value);
    if (!rule) return;
    const metric = rule.definition.metric;
    inputs = rule.editable.map((key) => {
      const orig = fieldValue(rule.definition, key);
      if (orig === undefined || orig === null) return null; // the other side (below of an "above" rule)
      const shown = MINUTES.has(key) ? orig / 60 : orig;
      const input = h("input", { type: "number", name: key, value: String(shown), step: "any", min: key === "above" || key === "below" || key === "clear" ? null : 0, required: true, "data-orig": String(shown) });
      const u = MINUTES.has(key) || key === "threshold" ? "" : UNITS[metric] || "";
      return [key, input, h("label", { class: "filter" }, t(`rules_fields.${key.replace("baseline.", "")}`), h("span", { class: "with-unit" }, input, u ? h("small", { class: "muted", text: ` ${u}` }) : null))];
    }).filter(Boolean);
    numbers.replaceChildren(...inputs.map(([, , label]) => label));
  }

  function range() {
    if (!from.value || !to.value) return null;
    const days = (Date.parse(to.value) - Date.parse(from.value)) / 864e5 + 1;
    if (!(days >= 1 && days <= MAX_DAYS)) return null;
    return { since: midnight(from.value, tz), until: midnight(addDays(to.value, 1), tz) };
  }

  async function go(body) {
    error.hidden = true;
    const when = range();
    if (!when) {
      error.textContent = t("rules_range_bad");
      error.hidden = false;
      return;
    }
    run.disabled = true;
    fileRun.disabled = true;
    out.replaceChildren(h("p", { class: "muted loading", text: t("rules_running") }));
    const [a, b] = [from.value, to.value];
    try {
      const res = await api("/api/rules/backtest", { ...body, ...when });
      showResult(out, res, data.rules, a, b);
    } catch (e) {
      out.replaceChildren();
      error.textContent = e.status === 409 ? t("rules_busy") : `${t("refused")}: ${e.message}`;
      error.hidden = false;
    } finally {
      run.disabled = false;
      fileRun.disabled = false;
    }
  }

  const formEl = h("form", { class: "stack" },
    h("div", { class: "filters" },
      h("label", { class: "filter wide" }, t("rules_pick"), select)),
    numbers,
    h("div", { class: "filters" },
      h("label", { class: "filter" }, t("rules_from"), from),
      h("label", { class: "filter" }, t("rules_to"), to),
      run),
    error);
  formEl.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!formEl.reportValidity()) return;
    const change = { rule_id: select.value };
    for (const [key, input] of inputs) {
      if (input.value === input.dataset.orig) continue;
      const v = Number(input.value);
      change[key.replace("baseline.", "")] = MINUTES.has(key) ? Math.round(v * 60) : v;
    }
    if (Object.keys(change).length === 1) {
      error.textContent = t("rules_no_change");
      error.hidden = false;
      return;
    }
    go({ changes: [change] });
  });
  fileRun.addEventListener("click", () => { if (fileText.value.trim()) go({ rules: fileText.value }); });

  box.replaceChildren(
    h("h3", { text: t("rules_try_title") }),
    formEl,
    h("details", { class: "trial-file" }, h("summary", { text: t("rules_file") }), fileText, fileRun),
    out);
  fields();
  return {
    pick(id) {
      if (!editable.some((r) => r.id === id)) return;
      select.value = id;
      fields();
      const first = inputs[0];
      if (first) first[1].focus({ preventScroll: true });
    },
  };
}
