// One alert: the facts (where — building, unit, floor, room, the devices with links; what;
// since when; who acknowledged), then the readings around it, then who has been told in plain
// words, then the history; delivery details (channels, attempts) fold behind a toggle.

import { actionButtons } from "./actions.js";
import { relatedDevices } from "./board.js";
import { bucketSeries, lineChart } from "./chart.js";
import { actor, alertTitle, t, UNITS, words } from "./i18n.js";
import { live } from "./live.js";
import { loadNames, residentName } from "./names.js";
import { mayAsk, usualLine } from "./usual.js";
import { api, deviceLink, h, loading, num, place, qs, unitName, when, who } from "./util.js";

const BEFORE_MS = 3 * 3600e3;
const AFTER_MS = 3600e3;
const MAX_SERIES = 4;

/** Which reading tells the story of an alert. */
export function metricFor(a) {
  if (a.kind === "gate" || a.kind === "system" || a.kind === "building") return null;
  if (a.rule_id.includes("spo2")) return "spo2";
  if (a.rule_id.includes("battery")) return "battery";
  if (a.rule_id.includes("co_")) return "co_ppm";
  return a.kind === "smoke" ? "obscuration_pct_m" : "heart_rate";
}

export function fact(label, ...value) {
  return [h("dt", { text: label }), h("dd", {}, ...value)];
}

/** The devices an alert is about: its own, or those a derived alert stands for. */
function devicesOf(a) {
  const related = relatedDevices(a);
  return related.length ? related : [{ device_id: a.device_id }];
}

function deviceLine(d, a) {
  const floor = d.floor != null && String(d.floor) !== a.labels.floor ? t("dev_floor", { n: d.floor }) : null;
  const unit = d.unit && d.unit !== a.labels.unit ? unitName(d.unit) : null;
  return h("li", {}, deviceRef(d.device_id, d.kind),
    [unit, floor].filter(Boolean).map((x) => [" · ", h("span", { class: "nobr", text: x })]),
    d.kind ? ` (${t(`kinds.${d.kind}`)})` : "");
}

/** Whether the reader may open that page: a guard shown a resident's fall in a fire sees the
 * ids, not links to pages that would refuse them. */
function may(what) {
  return Boolean(who.me && who.me.can.includes(what));
}

/** A device's id, as a link to its page for those who may open it. */
function deviceRef(id, kind) {
  return kind !== "wearable" || may("wearables") ? deviceLink(id) : h("span", { class: "mono nobr", text: id });
}

function where(a, devices) {
  const l = a.labels;
  const floor = l.floor || (devices.length === 1 && devices[0].floor != null ? String(devices[0].floor) : "");
  const room = l.room || (devices.length === 1 && devices[0].room) || "";
  const name = residentName(l.resident_id);
  const related = relatedDevices(a).length > 0;
  return [
    fact(t("where"), place(l), floor ? [" · ", h("span", { class: "nobr", text: t("floor_n", { n: floor }) })] : null,
      room ? [" · ", h("span", { class: "nobr", text: `${t("room")} ${room}` })] : null),
    l.resident_id ? fact(t("resident"), name ? [h("strong", { "data-field": "resident-name", text: name }), " "] : null,
      may("residents") ? h("a", { href: `#/residents/${l.resident_id}`, class: "mono nobr", text: l.resident_id })
        : h("span", { class: "mono nobr", text: l.resident_id })) : null,
    a.kind === "building" ? null : related || devices.length > 1
      ? fact(t("devices_label"), h("ul", { class: "devices-list", "data-field": "devices" }, devices.map((d) => deviceLine(d, a))))
      : fact(t("device"), h("span", { "data-field": "devices" },
        deviceRef(a.device_id, a.kind),
        ` (${t(`kinds.${a.kind}`)})`)),
  ];
}

// ------------------------------------------------------------------ who was told, in words

const STEP = /^step (\d+)\/(\d+)(?::| →) (.*)$/;
const REPEAT = /^repeat (\d+)(?::| →) (.*)$/;
const DELIVERY = /^(delivered to|delivery to) /;
const UNREACHABLE = /^(\S+) cannot be reached/;
const CANCELLED = /messages not sent yet were cancelled$/;

/** Staff named in "a (reason); b (reason; no notification channel); and 3 more":
 * [{id, reachable}]. */
function named(text) {
  return text.split(/; (?=[A-Za-z0-9_-]+ \()/).map((p) => ({
    id: p.split(" (")[0].trim(), reachable: !p.includes("no notification channel"),
  })).filter((x) => /^[A-Za-z0-9_-]+$/.test(x.id));
}


/** Whom the history says each step reached (when the service keeps no delivery receipts). */
function toldFromHistory(a) {
  const people = new Map();
  for (const e of a.history) {
    if (e.kind === "page") { // structured (newer service): the people a step paged
      for (const p of e.people || []) {
        if (!people.has(p.staff_id) && TOLD.has(p.outcome)) people.set(p.staff_id, { step: Number(e.step), reachable: true, name: p.name });
      }
      continue;
    }
    const m = STEP.exec(e.note || "");
    if (!m || (e.action !== "notified" && e.action !== "escalated") || m[3].includes("nobody on duty")) continue;
    for (const x of named(m[3])) if (!people.has(x.id)) people.set(x.id, { step: Number(m[1]), reachable: x.reachable });
  }
  return people;
}

/** A staff member by name when the service told us it (or it is the reader), else the id. */
function staffName(id, names) {
  if (names.has(id)) return names.get(id);
  if (who.me && who.me.staff_id === id && who.me.name) return who.me.name;
  return id;
}

/** A line naming several people, each kept whole: "已通知 甲、乙（无通知渠道）（第3步）".
 * `whom`: [{name, reachable}]. */
function people(make, key, whom, vars) {
  const sep = t("list_sep");
  return words(make, key, { ...vars, who: "\u0000" }).flatMap((part) => (part instanceof Node && part.textContent === "\u0000"
    ? whom.flatMap((w, i) => [i ? sep : null, make("span", { class: "nobr", text: w.name }),
      w.reachable ? null : make("span", { class: "bad nobr", text: t("no_channel_short") })]).filter(Boolean) : [part]));
}

const TOLD = new Set(["sent", "held", "merged"]);

/** A history entry of a newer service, from its structured fields (never its English note). */
function structuredLine(e, names) {
  const person = (p) => ({ name: p.name || staffName(p.staff_id, names), reachable: true });
  switch (e.kind) {
    case "page": {
      const told = (e.people || []).filter((p) => TOLD.has(p.outcome)).map(person);
      const already = (e.people || []).filter((p) => !TOLD.has(p.outcome)).map(person);
      const key = e.purpose === "repeat" ? "told_repeat" : e.purpose === "update" ? "told_update" : "told_step";
      const parts = [];
      if (told.length) parts.push(people(h, key, told, { step: e.step }));
      if (already.length) parts.push(people(h, "already_told", already, { step: e.step }));
      if (e.fallback) parts.push(t("fallback_desk"));
      return parts.length ? parts.flatMap((x, i) => [i ? "；" : null, x]).filter(Boolean) : words(h, "told_nobody_new", { step: e.step });
    }
    case "skipped": return words(h, "told_nobody_new", { step: e.step });
    case "unreached": return h("span", { class: "bad", text: t("reached_nobody") });
    case "delivery": return null; // one message's receipt: the details
    case "false_alarm": return t("false_alarm_line");
    case "incident": return t("incident_line");
    default: return undefined;
  }
}

/** One history entry as a plain line, or null when it is a delivery detail (folded away). */
function plainLine(e, names) {
  const n = e.note || "";
  if (e.kind) return structuredLine(e, names);
  if (e.action === "notified" || e.action === "escalated") {
    let m = STEP.exec(n);
    if (m && n.includes("nobody on duty")) return words(h, "told_nobody", { step: m[1], sel: n.split("nobody on duty for ")[1] || "" });
    const person = (x) => ({ name: staffName(x.id, names), reachable: x.reachable });
    if (m) return people(h, "told_step", named(m[3]).map(person), { step: m[1] });
    m = REPEAT.exec(n);
    if (m) return people(h, "told_repeat", named(m[2]).map(person), {});
    if (DELIVERY.test(n)) return null;
    m = UNREACHABLE.exec(n);
    if (m) return words(h, "unreachable", { who: staffName(m[1], names) });
    if (CANCELLED.test(n)) return t("cancelled_line");
    return null; // other paging detail
  }
  const again = /^match (\d+)$/.exec(n);
  if (e.action === "rematched" && again) return `${t("act.rematched")} ×${again[1]}`;
  return undefined; // not about paging: shown as it is
}

/** The rule's own notes (written in English by the service), in the console's language; the
 * note as it is when it is none of these. */
const RULE_NOTES = [
  [/^raised from late readings$/, () => t("note_late")],
  [/^rule cleared$/, () => t("note_cleared")],
  [/^paging waits (\d+) s for the rule's verification window$/, (m) => t("note_wait", { s: m[1] })],
  [/^cancelled on the device \(\w+\) (\d+) s after, within the ([\d.]+) s verification window: nobody was paged$/,
    (m) => t("note_cancelled", { after: m[1], within: m[2] })],
  [/^cancelled on the device \(\w+\) (\d+) s after, within the ([\d.]+) s verification window: it arrived after/,
    (m) => t("note_cancelled_late", { after: m[1], within: m[2] })],
  [/^did not persist ([\d.]+) s \(cleared after (\d+) s\): a pre-alarm/,
    (m) => t("note_preallarm", { persist: m[1], after: m[2] })],
];

function ruleNote(note) {
  return note.split("; ").map((part) => {
    for (const [re, say] of RULE_NOTES) {
      const m = re.exec(part);
      if (m) return say(m);
    }
    return part;
  }).join("；");
}

function history(a, names) {
  const shown = [];
  const details = [];
  for (const e of a.history) {
    const line = plainLine(e, names);
    if (line === null) {
      details.push(e);
      continue;
    }
    const by = e.action === "notified" || e.action === "escalated" ? null
      : e.by === "rule" || e.by === "system" ? actor(e.by) : staffName(e.by, names);
    shown.push(h("li", { class: `act-${e.action}` },
      h("div", { class: "tl-head" },
        h("strong", {}, line === undefined ? t(`act.${e.action}`) : line),
        by ? [" · ", h("span", { text: by })] : null, " · ", when(e.at)),
      line === undefined && e.note
        ? h("p", { class: "tl-note", text: e.by === "rule" ? ruleNote(e.note) : e.note }) : null));
  }
  return [h("ol", { class: "timeline" }, shown), details];
}

function deliveryState(items) {
  if (items.some((d) => d.status === "sent")) return ["ok", t("delivered")];
  if (items.length && items.every((d) => d.status === "failed")) return ["bad", t("delivery_failed")];
  return ["", t("delivery_pending")];
}

/** "已通知 张护理员（第1步）· 已送达" per person, and who acknowledged. */
function toldCard(a, deliveries, names, details) {
  const people = new Map();
  for (const d of deliveries || []) {
    if (!people.has(d.staff_id)) people.set(d.staff_id, []);
    people.get(d.staff_id).push(d);
  }
  const rows = [...people.entries()].map(([id, items]) => {
    const steps = items.map((d) => d.step).filter((s) => s >= 0);
    const whom = staffName(id, names);
    const [cls, state] = deliveryState(items);
    const text = steps.length ? words(h, "told_step", { who: whom, step: Math.min(...steps) + 1 }) : words(h, "told_update", { who: whom });
    return h("li", { "data-staff-id": id }, h("span", {}, text), h("span", { class: cls, text: `· ${state}` }));
  });
  if (!rows.length) {
    for (const [id, p] of toldFromHistory(a)) {
      const whom = p.name || staffName(id, names);
      rows.push(h("li", { "data-staff-id": id }, p.reachable
        ? h("span", {}, words(h, "told_step", { who: whom, step: p.step }))
        : h("span", { class: "bad" }, words(h, "not_told_step", { who: whom, step: p.step }))));
    }
  }
  const acked = a.acknowledged_by
    ? h("p", { "data-field": "acked" }, h("strong", {}, words(h, "acked_line", { who: staffName(a.acknowledged_by, names) })), " · ", when(a.acknowledged_at))
    : a.status === "firing" ? h("p", { class: "warn-text", "data-field": "acked", text: t("nobody_acked") }) : null;
  const raw = h("details", { class: "delivery", "data-field": "delivery-details" },
    h("summary", { text: t("delivery_details") }),
    h("ul", { class: "events" },
      (deliveries || []).map((d) => h("li", {}, when(d.updated_at || d.created_at), " · ",
        h("span", { class: "mono", text: `${d.staff_id} · ${d.channel} · ${d.purpose} · ${d.status}${d.error ? ` · ${d.error}` : ""}` }))),
      details.map((e) => h("li", {}, when(e.at), " · ", h("span", { class: "mono", text: e.note })))));
  return h("section", { class: "card", "data-field": "told" }, h("h3", { text: t("told") }),
    acked,
    rows.length ? h("ul", { class: "told" }, rows) : deliveries ? h("p", { class: "muted", text: t("no_deliveries") }) : null,
    deliveries && deliveries.length || details.length ? raw : null);
}

// ------------------------------------------------------------------ the readings, spanning the data

async function readingsChart(a, devices, box) {
  const metric = metricFor(a);
  const started = Date.parse(a.started_at);
  const end = Date.parse(a.resolved_at || a.ended_at || "") || Date.now();
  const since = started - BEFORE_MS;
  const until = Math.min(Date.now() + 60e3, end + AFTER_MS);
  const ids = devices.map((d) => d.device_id).slice(0, MAX_SERIES);
  const events = h("ul", { class: "events" });
  box.replaceChildren(h("p", { class: "muted loading", text: t("loading") }));
  try {
    const [charts, raw] = await Promise.all([
      metric ? Promise.all(ids.map((id) => api(`/api/devices/${id}/readings${qs({
        metric, step: "1m", since: new Date(since).toISOString(), until: new Date(until).toISOString(), limit: 10000,
      })}`))) : [],
      api(`/api/devices/${ids[0]}/readings${qs({
        since: new Date(since).toISOString(), until: new Date(Math.min(until, started + AFTER_MS)).toISOString(), limit: 2000,
      })}`),
    ]);
    const evs = raw.items.filter((r) => r.stream !== "telemetry").slice(-30);
    events.replaceChildren(...evs.map((r) => h("li", {}, when(r.ts), " · ", h("strong", { text: t(`ev.${r.event || r.stream}`) }))));
    const parts = [];
    if (metric) {
      const label = t(`metrics.${metric}`);
      const series = charts.map((c, i) => bucketSeries(c.items.filter((b) => b.mean != null), ids.length > 1 ? ids[i] : label, `s${i}`))
        .filter((sr) => sr.points.length);
      parts.push(h("h3", { text: `${label} · ${t("chart_around")}` }));
      // the wearer's own usual at the alert's hour, beside the reading then (their caretakers)
      const first = charts.length ? charts[0].items.find((b) => b.mean != null && Date.parse(b.ts) + 60e3 >= started) : null;
      const usual = metric === "heart_rate" && a.kind === "wearable" && mayAsk() ? await usualLine(ids[0], metric, started) : null;
      if (usual) {
        if (first) usual.prepend(h("span", { class: "reading", "data-field": "reading" }, `${t("reading_then")} `, h("b", { class: "nobr", text: `${num(first.mean)} ${UNITS[metric]}` })), " · ");
        parts.push(usual);
      }
      if (series.length) {
        // the span of the data there is (and the alert's start), not a fixed three hours
        const times = series.flatMap((sr) => sr.points.map(([x]) => x));
        const lo = Math.min(started, ...times);
        const hi = Math.max(started, a.resolved_at ? Date.parse(a.resolved_at) : -Infinity, ...times);
        const pad = Math.max(15e3, (hi - lo) * 0.05);
        parts.push(lineChart({
          series, from: lo - pad, to: hi + pad, unit: UNITS[metric], label,
          marks: [
            { t: started, label: t("started"), cls: "m-start" },
            a.resolved_at ? { t: Date.parse(a.resolved_at), label: t("st.resolved"), cls: "m-end" } : null,
          ].filter(Boolean),
        }));
        if (series.length > 1) {
          parts.push(h("p", { class: "legend" }, series.map((sr) => h("span", { class: ["key", sr.cls] }, h("i"), sr.label))));
        }
      } else {
        parts.push(h("p", { class: "muted", text: t("no_readings") }));
      }
    }
    parts.push(h("h3", { text: t("events_around") }), evs.length ? events : h("p", { class: "muted", text: t("none") }));
    box.replaceChildren(...parts);
  } catch (e) {
    box.replaceChildren(e.status === 403
      ? h("p", { class: "muted", text: t("health_hidden") })
      : h("p", { class: "error", text: `${t("load_failed")}: ${e.message}` }));
  }
}

/** The devices with what the registry knows of them (unit, floor), when the alert names only ids. */
async function withDetails(devices) {
  return Promise.all(devices.map(async (d) => {
    if (d.floor != null && d.unit) return d;
    try {
      const full = await api(`/api/devices/${d.device_id}`);
      return { ...full, ...Object.fromEntries(Object.entries(d).filter(([, v]) => v != null)) };
    } catch {
      return d;
    }
  }));
}

export function render(root, [id]) {
  const fail = loading(root);
  let current = null;
  let devices = [];
  let deliveries = null;
  const chartBox = h("section", { class: "card chart-card" });

  function draw(a) {
    const names = new Map();
    for (const e of a.history) {
      for (const p of e.people || []) if (p.name) names.set(p.staff_id, p.name);
      if (e.delivery && e.delivery.name) names.set(e.delivery.staff_id, e.delivery.name);
    }
    const [timeline, details] = history(a, names);
    const head = h("section", { class: ["card", "alert", "alert-head", `sev-${a.severity}`, `sig-${a.signal}`, `st-${a.status}`], "data-alert-id": a.id },
      h("div", { class: "tags" },
        h("span", { class: ["badge", `sev-${a.severity}`], text: t(`sev.${a.severity}`) }),
        h("span", { class: ["tag", `sig-${a.signal}`], text: t(`sig.${a.signal}`) }),
        h("span", { class: ["tag", `st-${a.status}`], "data-field": "status", text: t(`st.${a.status}`) }),
        a.offline ? h("span", { class: "tag warn", text: t("offline_flag") }) : null,
        a.late ? h("span", { class: "tag", text: t("late_flag") }) : null),
      h("h2", { text: alertTitle(a) }),
      h("dl", { class: "facts" },
        where(a, devices),
        fact(t("started"), when(a.started_at)),
        a.match_count > 1 ? fact(t("matches"), String(a.match_count), " · ", t("last_match"), " ", when(a.last_match_at, false)) : null,
        a.acknowledged_at ? fact(t("st.acknowledged"), staffName(a.acknowledged_by, names), " · ", when(a.acknowledged_at)) : null,
        a.resolved_at ? fact(t("st.resolved"), a.resolved_by === "rule" ? actor("rule") : staffName(a.resolved_by, names), " · ", when(a.resolved_at)) : null,
        a.offline_since ? fact(t("offline_flag"), when(a.offline_since)) : null),
      actionButtons(a, (done) => { current = done; draw(done); }));
    root.replaceChildren(h("div", { class: "stack" }, head, chartBox,
      toldCard(a, deliveries, names, details),
      h("section", { class: "card" }, h("h3", { text: t("history") }), timeline)));
  }

  async function load(first) {
    try {
      current = await api(`/api/alerts/${id}`);
    } catch (e) {
      fail(e, () => load(true));
      return;
    }
    try {
      deliveries = (await api(`/api/alerts/${id}/deliveries`)).items;
    } catch {
      deliveries = null; // alerting not running here: the history tells what there is
    }
    // a wearable's state and readings are not for everyone shown its alert (a guard shown a
    // resident's fall in a fire): nothing asked that would be refused
    const mine = current.kind !== "wearable" || may("wearables");
    if (first) {
      devices = devicesOf(current);
      await loadNames();
      if (mine) devices = await withDetails(devices);
    }
    draw(current);
    if (first && mine) readingsChart(current, devices, chartBox);
    else if (first) chartBox.replaceChildren(h("p", { class: "muted", text: t("health_hidden") }));
  }

  const onChange = (e) => {
    if (e.detail.alert && e.detail.alert.id === Number(id)) load(false);
  };
  live.addEventListener("change", onChange);
  load(true);
  return () => live.removeEventListener("change", onChange);
}
