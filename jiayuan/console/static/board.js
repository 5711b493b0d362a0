// The alert board: open alerts, most urgent first, live from the stream; filters by status,
// kind and building; acknowledge and resolve from the card.

import { actionButtons } from "./actions.js";
import { actor, alertTitle, t } from "./i18n.js";
import { byPriority, live } from "./live.js";
import { api, h, place, qs, saved, when } from "./util.js";

const SHOWN = 200;
const FRESH_MS = 12000;
const STATUSES = ["open", "firing", "acknowledged", "resolved"];
const KINDS = ["wearable", "smoke", "gate"];

let buildings = null; // from /api/fleet/summary, once

function filters() {
  try {
    const f = JSON.parse(saved.get("filters", "{}"));
    return { status: STATUSES.includes(f.status) ? f.status : "open", kind: f.kind || "", building: f.building || "" };
  } catch {
    return { status: "open", kind: "", building: "" };
  }
}

function matches(a, f) {
  const statusOk = f.status === "open" ? a.status !== "resolved" : a.status === f.status;
  return statusOk && (!f.kind || a.kind === f.kind) && (!f.building || a.labels.building === f.building);
}

/** One alert as a card: colour by severity and signal, where, since when, and the actions. */
export function alertCard(a, fresh = false) {
  const who = a.status === "acknowledged" ? t("acked_by", { by: actor(a.acknowledged_by) })
    : a.status === "resolved" ? t("resolved_by", { by: actor(a.resolved_by) }) : null;
  return h("article", {
    class: ["card", "alert", `sev-${a.severity}`, `sig-${a.signal}`, `st-${a.status}`, fresh && "fresh"],
    "data-alert-id": a.id, "data-status": a.status,
  },
  h("div", { class: "tags" },
    h("span", { class: ["badge", `sev-${a.severity}`], text: t(`sev.${a.severity}`) }),
    h("span", { class: ["tag", `sig-${a.signal}`], text: t(`sig.${a.signal}`) }),
    h("span", { class: ["tag", `st-${a.status}`], "data-field": "status", text: t(`st.${a.status}`) }),
    a.offline ? h("span", { class: "tag warn", text: t("offline_flag") }) : null,
    a.late ? h("span", { class: "tag", text: t("late_flag") }) : null),
  h("h3", {}, h("a", { href: `#/alerts/${a.id}`, text: alertTitle(a) })),
  h("p", { class: "where" }, place(a.labels), " · ", h("span", { class: "mono", text: a.device_id })),
  h("p", { class: "since" }, when(a.started_at)),
  who ? h("p", { class: "who muted", text: who }) : null,
  h("div", { class: "card-foot" },
    actionButtons(a),
    h("a", { class: "more", href: `#/alerts/${a.id}`, text: `${t("details")} →` })));
}

export function render(root) {
  const f = filters();
  const list = h("div", { class: "grid alerts", "aria-live": "polite" });
  const note = h("p", { class: "muted center" });
  let resolved = new Map(); // when the status filter shows resolved alerts: fetched, then live
  const freshIds = new Map();

  const select = (key, options, label) => h("label", { class: "filter" }, label,
    h("select", { name: key, onchange: (e) => { f[key] = e.target.value; saved.set("filters", JSON.stringify(f)); load(); } },
      options.map(([value, text]) => h("option", { value, selected: f[key] === value, text }))));

  const buildingSelect = h("span", { class: "contents" });
  const bar = h("div", { class: "filters" },
    select("status", STATUSES.map((v) => [v, v === "open" ? t("status_open") : t(`st.${v}`)]), t("filter_status")),
    select("kind", [["", t("all")], ...KINDS.map((k) => [k, t(`kinds.${k}`)])], t("filter_kind")),
    buildingSelect);

  function fillBuildings() {
    const known = new Set(buildings || []);
    for (const a of live.alerts.values()) if (a.labels.building) known.add(a.labels.building);
    if (f.building) known.add(f.building);
    const sorted = [...known].sort((x, y) => x.localeCompare(y, undefined, { numeric: true }));
    buildingSelect.replaceChildren(select("building", [["", t("all")], ...sorted.map((b) => [b, b])], t("filter_building")));
  }

  const cards = new Map(); // id → {key, el}: an unchanged alert keeps its element (and a press on it)

  function card(a, now) {
    const fresh = (freshIds.get(a.id) || 0) > now;
    const key = `${a.updated_at}|${a.status}|${fresh}`;
    let c = cards.get(a.id);
    if (!c || c.key !== key) {
      c = { key, el: alertCard(a, fresh) };
      cards.set(a.id, c);
    }
    return c.el;
  }

  function draw() {
    const now = Date.now();
    const items = f.status === "resolved" ? [...resolved.values()]
      : [...live.alerts.values(), ...(f.status === "open" ? [] : resolved.values())];
    const shown = items.filter((a) => matches(a, f)).sort(byPriority);
    const els = shown.slice(0, SHOWN).map((a) => card(a, now));
    const ids = new Set(shown.slice(0, SHOWN).map((a) => a.id));
    for (const id of cards.keys()) if (!ids.has(id)) cards.delete(id);
    if (els.length !== list.children.length || els.some((e, i) => list.children[i] !== e)) list.replaceChildren(...els);
    note.textContent = shown.length === 0 ? t("board_empty")
      : shown.length > SHOWN ? t("board_more", { n: shown.length - SHOWN }) : "";
  }

  async function load() {
    fillBuildings();
    resolved = new Map();
    if (f.status === "resolved") {
      list.replaceChildren(h("p", { class: "muted loading", text: t("loading") }));
      try {
        const r = await api(`/api/alerts${qs({ status: "resolved", kind: f.kind, building: f.building, limit: 100 })}`);
        r.items.forEach((a) => resolved.set(a.id, a));
      } catch (e) {
        note.textContent = `${t("load_failed")}: ${e.message}`;
      }
    }
    draw();
  }

  const onChange = (e) => {
    const { action, alert } = e.detail;
    if (alert && action === "raised") freshIds.set(alert.id, Date.now() + FRESH_MS);
    if (alert && alert.status === "resolved" && f.status === "resolved") resolved.set(alert.id, alert);
    if (action === "refetch") fillBuildings();
    draw();
  };
  live.addEventListener("change", onChange);

  root.replaceChildren(h("section", { class: "board" }, bar, list, note));
  if (buildings === null) {
    api("/api/fleet/summary").then((r) => {
      buildings = r.places.map((p) => p.building).filter(Boolean);
      fillBuildings();
    }).catch(() => { buildings = []; });
  }
  load();
  return () => live.removeEventListener("change", onChange);
}
