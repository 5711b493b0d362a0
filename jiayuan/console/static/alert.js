// One alert: what happened, where, since when, its whole history, and the device's readings
// around it.

import { actionButtons } from "./actions.js";
import { bucketSeries, lineChart } from "./chart.js";
import { actor, alertTitle, t, UNITS } from "./i18n.js";
import { live } from "./live.js";
import { api, h, loading, qs, when } from "./util.js";

const BEFORE_MS = 3 * 3600e3;
const AFTER_MS = 3600e3;

/** Which reading tells the story of an alert. */
export function metricFor(a) {
  if (a.kind === "gate") return null;
  if (a.rule_id.includes("spo2")) return "spo2";
  if (a.rule_id.includes("battery")) return "battery";
  if (a.rule_id.includes("co_")) return "co_ppm";
  return a.kind === "smoke" ? "obscuration_pct_m" : "heart_rate";
}

export function fact(label, ...value) {
  return [h("dt", { text: label }), h("dd", {}, ...value)];
}

function where(a) {
  const l = a.labels;
  return [
    l.compound ? fact(t("compound"), l.compound) : null,
    l.building ? fact(t("building"), l.building) : null,
    l.unit ? fact(t("unit"), l.unit) : null,
    fact(t("device"), h("a", { href: `#/devices/${a.device_id}`, class: "mono", text: a.device_id }), ` (${t(`kinds.${a.kind}`)})`),
    l.resident_id ? fact(t("resident"), h("a", { href: `#/residents/${l.resident_id}`, class: "mono", text: l.resident_id })) : null,
  ];
}

function history(a) {
  return h("ol", { class: "timeline" }, a.history.map((e) => h("li", { class: `act-${e.action}` },
    h("div", { class: "tl-head" },
      h("strong", { text: t(`act.${e.action}`) }), " · ", h("span", { text: actor(e.by) }), " · ", when(e.at)),
    e.note ? h("p", { class: "tl-note", text: e.note }) : null)));
}

async function readingsChart(a, box) {
  const metric = metricFor(a);
  const started = Date.parse(a.started_at);
  const end = Date.parse(a.resolved_at || a.ended_at || "") || Date.now();
  const from = started - BEFORE_MS;
  const to = Math.min(Date.now() + 60e3, end + AFTER_MS);
  const events = h("ul", { class: "events" });
  box.replaceChildren(h("p", { class: "muted loading", text: t("loading") }));
  try {
    const [chart, raw] = await Promise.all([
      metric ? api(`/api/devices/${a.device_id}/readings${qs({
        metric, step: "1m", since: new Date(from).toISOString(), until: new Date(to).toISOString(), limit: 10000,
      })}`) : null,
      api(`/api/devices/${a.device_id}/readings${qs({
        since: new Date(started - BEFORE_MS).toISOString(), until: new Date(Math.min(to, started + AFTER_MS)).toISOString(), limit: 2000,
      })}`),
    ]);
    const evs = raw.items.filter((r) => r.stream !== "telemetry").slice(-30);
    events.replaceChildren(...evs.map((r) => h("li", {}, when(r.ts), " · ", h("strong", { text: t(`ev.${r.event || r.stream}`) }))));
    const parts = [];
    if (metric) {
      const label = t(`metrics.${metric}`);
      parts.push(h("h3", { text: `${label} · ${t("chart_around")}` }));
      parts.push(chart.items.length ? lineChart({
        series: [bucketSeries(chart.items, label, "s0")], from, to, unit: UNITS[metric], label,
        marks: [
          { t: started, label: t("started"), cls: "m-start" },
          a.resolved_at ? { t: Date.parse(a.resolved_at), label: t("st.resolved"), cls: "m-end" } : null,
        ].filter(Boolean),
      }) : h("p", { class: "muted", text: t("no_readings") }));
    }
    parts.push(h("h3", { text: t("events_around") }), evs.length ? events : h("p", { class: "muted", text: t("none") }));
    box.replaceChildren(...parts);
  } catch (e) {
    box.replaceChildren(e.status === 403
      ? h("p", { class: "muted", text: t("health_hidden") })
      : h("p", { class: "error", text: `${t("load_failed")}: ${e.message}` }));
  }
}

export function render(root, [id]) {
  const fail = loading(root);
  let current = null;
  const chartBox = h("div", { class: "card chart-card" });

  function draw(a) {
    const head = h("section", { class: ["card", "alert", "alert-head", `sev-${a.severity}`, `sig-${a.signal}`, `st-${a.status}`], "data-alert-id": a.id },
      h("div", { class: "tags" },
        h("span", { class: ["badge", `sev-${a.severity}`], text: t(`sev.${a.severity}`) }),
        h("span", { class: ["tag", `sig-${a.signal}`], text: t(`sig.${a.signal}`) }),
        h("span", { class: ["tag", `st-${a.status}`], "data-field": "status", text: t(`st.${a.status}`) }),
        a.offline ? h("span", { class: "tag warn", text: t("offline_flag") }) : null,
        a.late ? h("span", { class: "tag", text: t("late_flag") }) : null),
      h("h2", { text: alertTitle(a) }),
      h("dl", { class: "facts" },
        where(a),
        fact(t("started"), when(a.started_at)),
        fact(t("raised"), when(a.raised_at)),
        a.match_count > 1 ? fact(t("matches"), String(a.match_count), " · ", t("last_match"), " ", when(a.last_match_at, false)) : null,
        a.acknowledged_at ? fact(t("st.acknowledged"), actor(a.acknowledged_by), " · ", when(a.acknowledged_at)) : null,
        a.resolved_at ? fact(t("st.resolved"), actor(a.resolved_by), " · ", when(a.resolved_at)) : null,
        a.offline_since ? fact(t("offline_flag"), when(a.offline_since)) : null),
      actionButtons(a, (done) => draw(done)));
    root.replaceChildren(h("div", { class: "stack" }, head,
      h("section", { class: "card" }, h("h3", { text: t("history") }), history(a)), chartBox));
  }

  async function load(withChart) {
    try {
      current = await api(`/api/alerts/${id}`);
    } catch (e) {
      fail(e, () => load(true));
      return;
    }
    draw(current);
    if (withChart) readingsChart(current, chartBox);
  }

  const onChange = (e) => {
    if (e.detail.alert && e.detail.alert.id === Number(id)) load(false);
  };
  live.addEventListener("change", onChange);
  load(true);
  return () => live.removeEventListener("change", onChange);
}
