// Operators: ingestion rate (from two samples of the same counters /metrics shows), journal
// lag, dead letters by reason and the latest ones, alerts by status.

import { lineChart } from "./chart.js";
import { t } from "./i18n.js";
import { api, h, loading, num, qs, when } from "./util.js";

const POLL_MS = 5000;
const KEEP = 120; // samples: ten minutes

function tile(label, value, cls) {
  return h("div", { class: ["tile", cls] }, h("small", { text: label }), h("b", { text: value }));
}

function reasonBars(counts, allTime) {
  const max = Math.max(1, ...Object.values(allTime));
  return h("ul", { class: "bars" }, Object.keys(allTime).sort((a, b) => allTime[b] - allTime[a]).map((reason) =>
    h("li", {},
      h("span", { class: "bar-label" }, h("b", { text: t(`reasons.${reason}`) }), " ", h("small", { class: "mono muted", text: reason })),
      h("span", { class: "bar" }, h("span", { class: "fill", "data-w": Math.round((100 * allTime[reason]) / max) })),
      h("span", { class: "bar-num", text: `${num(counts[reason] || 0)} / ${num(allTime[reason])}` }))));
}

function deadLetter(d, openIds) {
  return h("li", { class: "dead" },
    h("div", {}, h("b", { text: t(`reasons.${d.reason}`) }), " · ", when(d.received)),
    h("div", { class: "mono wrap", text: d.topic }),
    h("div", { class: "muted wrap", text: d.detail }),
    h("details", { "data-id": d.id, open: openIds.has(String(d.id)) }, h("summary", { text: t("show_payload") }), h("pre", { class: "wrap", text: d.payload })));
}

export function render(root) {
  const samples = [];
  let stopped = false;
  let timer = null;
  const fail = loading(root);

  function rate() {
    if (samples.length < 2) return null;
    const [a, b] = [samples.at(-2), samples.at(-1)];
    return (b.messages_received_total - a.messages_received_total) / Math.max(0.001, b.at_epoch - a.at_epoch);
  }

  async function poll() {
    if (stopped) return;
    try {
      const [ops, health, counts, latest] = await Promise.all([
        api("/api/ops/summary"),
        fetch("/healthz").then((r) => r.json()),
        api("/api/dead-letters/counts"),
        api(`/api/dead-letters${qs({ limit: 20 })}`),
      ]);
      if (stopped) return;
      samples.push(ops);
      if (samples.length > KEEP) samples.shift();
      draw(ops, health, counts, latest);
    } catch (e) {
      if (!samples.length) fail(e, poll);
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  function draw(ops, health, counts, latest) {
    const r = rate();
    const rates = samples.slice(1).map((s, i) => [s.at_epoch * 1000,
      (s.messages_received_total - samples[i].messages_received_total) / Math.max(0.001, s.at_epoch - samples[i].at_epoch)]);
    const lag = ops.journal_commit_lag_seconds;
    const connected = ops.mqtt_connected ?? health.mqtt_connected;
    const openIds = new Set([...root.querySelectorAll("details[open]")].map((d) => d.dataset.id));
    const deadSinceStart = Object.values(ops.dead_letters).reduce((x, y) => x + y, 0);
    root.replaceChildren(h("div", { class: "stack" },
      h("h2", { text: t("ops_title") }),
      h("div", { class: "tiles" },
        tile(t("mqtt"), connected ? t("connected") : t("disconnected"), connected ? "good" : "bad"),
        tile(t("rate"), r == null ? "…" : `${num(r, 1)} ${t("per_s")}`),
        tile(t("lag"), lag == null ? "—" : `${num(lag * 1000, 1)} ms`, lag > 1 ? "warn" : ""),
        tile(t("queue"), num(ops.ingest_queue_depth)),
        tile(t("commit_mean"), ops.journal_commit_seconds_mean == null ? "—" : `${num(ops.journal_commit_seconds_mean * 1000, 2)} ms`),
        tile(t("received_total"), num(ops.messages_received_total)),
        tile(t("duplicates"), num(ops.duplicates_total)),
        tile(t("ingest_errors"), num(ops.ingest_errors_total), ops.ingest_errors_total ? "bad" : ""),
        tile(t("stream_clients"), num(ops.stream_clients)),
        ...["firing", "acknowledged", "resolved"].map((st) => tile(t("alerts_st", { st: t(`st.${st}`) }), num(ops.alerts[st] || 0)))),
      rates.length > 1 ? h("section", { class: "card" }, h("h3", { text: `${t("rate")} (${t("per_s")})` }),
        lineChart({ series: [{ points: rates, cls: "s0" }], from: rates[0][0], to: rates.at(-1)[0], yMin: 0, height: 120, label: t("rate") })) : null,
      h("section", { class: "card" },
        h("h3", {}, t("dead_letters"), " ", h("small", { class: "muted", text: `${t("since_start")} ${num(deadSinceStart)} / ${t("all_time")} ${num(counts.total)}` })),
        reasonBars(ops.dead_letters, counts.counts)),
      h("section", { class: "card" }, h("h3", { text: t("latest_dead") }),
        latest.items.length ? h("ul", { class: "dead-list" }, latest.items.map((d) => deadLetter(d, openIds))) : h("p", { class: "muted", text: t("none") }))));
    for (const fill of root.querySelectorAll(".fill[data-w]")) fill.style.width = `${fill.dataset.w}%`;
  }

  poll();
  return () => { stopped = true; clearTimeout(timer); };
}
