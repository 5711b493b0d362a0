// The alert board: open alerts, most severe first (an acknowledged fire stays above every
// warning until resolved), live from the stream. Alerts of one incident are one card; warnings
// the signed-in role does not act on (low battery for a guard) fold into one line. Filters by
// status, kind and building fold behind a button on a phone. Someone who sees several
// communities (a district manager) also filters by community, and each card names its own.
// Unacknowledged alerts the filters hide are counted above the cards, with a way back to all.
// Until the alerts it shows have arrived the board says it is loading (or that it could not load
// and is retrying), never that no alerts match: a guard would read that as all clear.

import { actionButtons } from "./actions.js";
import { actor, alertTitle, t } from "./i18n.js";
import { byPriority, live } from "./live.js";
import { loadNames, residentName } from "./names.js";
import { api, buildingName, h, place, qs, saved, when, who } from "./util.js";

const SHOWN = 200;
const FRESH_MS = 12000;
const STATUSES = ["open", "firing", "acknowledged", "resolved"];
const KINDS = ["wearable", "smoke", "gate"];
const SEVERITY_RANK = { critical: 0, major: 1, minor: 2, warning: 3, info: 4 };

let buildings = null; // from /api/fleet/summary, once

function filters() {
  try {
    const f = JSON.parse(saved.get("filters", "{}"));
    const community = communities().includes(f.community) ? f.community : "";
    return { status: STATUSES.includes(f.status) ? f.status : "open", kind: f.kind || "", building: f.building || "", community };
  } catch {
    return { status: "open", kind: "", building: "", community: "" };
  }
}

/** The communities the signed-in person sees when there are several; none (empty) when one. */
export function communities() {
  const seen = (who.me && who.me.communities) || [];
  return seen.length > 1 ? seen : [];
}

function matches(a, f) {
  const statusOk = f.status === "open" ? a.status !== "resolved" : a.status === f.status;
  return statusOk && (!f.kind || a.kind === f.kind) && (!f.building || a.labels.building === f.building)
    && (!f.community || a.labels.community === f.community);
}

/** The devices a derived alert (a confirmed fire) stands for: the service's `related_devices`
 * when it sends them, else the ids its labels name. */
export function relatedDevices(a) {
  if (Array.isArray(a.related_devices) && a.related_devices.length) {
    return a.related_devices.map((d) => (typeof d === "string" ? { device_id: d } : d));
  }
  // a confirmed fire names its detectors; a building's trouble counts its devices (a number)
  const ids = (a.labels && a.labels.devices) || "";
  return ids.split(",").filter((id) => id && !/^\d+$/.test(id)).map((device_id) => ({ device_id }));
}

/** Open alerts as incidents: by the service's `incident_id` when it sends one; without it, a
 * confirmed fire gathers the smoke alarms it names. Each group's most telling alert first (the
 * most severe; of equals, the fire before a resident's fall in it, and a derived alert such as
 * the confirmed fire). */
export function incidents(alerts) {
  const byDevice = new Map();
  for (const a of alerts) {
    if (a.incident_id != null || a.status === "resolved") continue;
    for (const d of relatedDevices(a)) byDevice.set(d.device_id, `d${a.id}`);
  }
  const groups = new Map();
  for (const a of alerts) {
    const key = a.incident_id != null ? `i${a.incident_id}`
      : relatedDevices(a).length ? `d${a.id}`
        : (a.status !== "resolved" && a.kind === "smoke" && byDevice.get(a.device_id)) || `a${a.id}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(a);
  }
  return [...groups.entries()].map(([key, members]) => {
    members.sort((x, y) => (SEVERITY_RANK[x.severity] - SEVERITY_RANK[y.severity])
      || (Number(y.kind === "smoke") - Number(x.kind === "smoke"))
      || (relatedDevices(y).length - relatedDevices(x).length) || byPriority(x, y));
    const firing = members.some((m) => m.status === "firing");
    const status = firing ? "firing" : members.some((m) => m.status === "acknowledged") ? "acknowledged" : "resolved";
    // the group sorts as its most severe alert would, with the group's status
    return { key, members, head: members[0], sortAs: { ...members[0], status, started_at: members.map((m) => m.started_at).sort()[0] } };
  }).sort((x, y) => byPriority(x.sortAs, y.sortAs));
}

/** Warnings a role does not act on: a guard's low batteries and device faults of low rank. */
export function foldable(a, role) {
  if (role !== "security" || a.signal === "alarm") return false;
  return a.rule_id.includes("battery") || (a.signal === "trouble" && SEVERITY_RANK[a.severity] >= SEVERITY_RANK.warning);
}

/** Who the alert is about, or where: a resident's name for those who may know it. */
function subject(a) {
  const name = residentName(a.labels.resident_id);
  const related = relatedDevices(a);
  const floor = a.labels.floor ? ` ${t("floor_n", { n: a.labels.floor })}` : "";
  const community = communities().length && a.labels.community
    ? [h("span", { class: "tag nobr", "data-field": "community", text: t("community_n", { c: a.labels.community }) }), " "] : null;
  return [
    community,
    name ? [h("strong", { class: "who-name nobr", "data-field": "resident-name", text: name }), " · "] : null,
    place(a.labels, false), floor,
    related.length ? [" · ", h("span", { class: "nobr", text: `${related.length} ${t("kinds.smoke")}` })]
      : a.kind === "building" ? null : [" · ", h("span", { class: "mono nobr", text: a.device_id })],
  ];
}

/** An incident's other member, in its line: the resident's name for those who may know it,
 * else the device. */
function memberWho(m) {
  return residentName(m.labels.resident_id) || m.device_id;
}

/** One alert (or one incident: `members`, most telling first) as a card: severity, what, who
 * or where, since when, the actions. */
export function alertCard(a, fresh = false, members = [a]) {
  const status = members.some((m) => m.status === "firing") ? "firing" : a.status;
  const acked = members.find((m) => m.acknowledged_by);
  const who = status === "acknowledged" && acked ? t("acked_by", { by: actor(acked.acknowledged_by) })
    : a.status === "resolved" ? t("resolved_by", { by: actor(a.resolved_by) }) : null;
  const others = members.slice(1);
  return h("article", {
    class: ["card", "alert", `sev-${a.severity}`, `sig-${a.signal}`, `st-${status}`, fresh && "fresh"],
    "data-alert-id": a.id, "data-status": status, "data-alert-ids": members.map((m) => m.id).join(","),
    "data-incident-id": a.incident_id ?? null,
  },
  h("div", { class: "card-top" },
    h("span", { class: ["badge", `sev-${a.severity}`], text: t(`sev.${a.severity}`) }),
    h("h3", {}, h("a", { href: `#/alerts/${a.id}`, text: alertTitle(a) })),
    h("span", { class: ["tag", `st-${status}`], "data-field": "status", text: t(`st.${status}`) })),
  h("p", { class: "where" }, subject(a),
    a.offline ? h("span", { class: "tag warn", text: t("offline_flag") }) : null,
    a.late ? h("span", { class: "tag", text: t("late_flag") }) : null),
  others.length ? h("p", { class: "members muted" }, t("incident_more", { n: others.length }), " ",
    others.map((m, i) => [i ? "、" : null, h("a", { href: `#/alerts/${m.id}`, class: "nobr", text: `${alertTitle(m)} ${memberWho(m)}` })])) : null,
  h("div", { class: "card-foot" },
    h("span", { class: "since" }, when(members.map((m) => m.started_at).sort()[0], false), who ? [" · ", h("span", { class: "who", text: who })] : null),
    actionButtons(a, null, members, true)));
}

export function render(root) {
  const f = filters();
  const list = h("div", { class: "grid alerts", "aria-live": "polite" });
  const note = h("p", { class: "muted center" });
  // firing alerts the filters hide: said above the cards, with one press back to all of them
  // (a guard who filtered one building must not miss a fire in the next)
  const outsideText = h("span");
  const outside = h("p", { class: "notice outside", "data-field": "outside-filters", hidden: true }, outsideText, " ",
    h("button", { type: "button", "data-ctl": "clear-filters", onclick: () => {
      Object.assign(f, { status: "open", kind: "", building: "", community: "" });
      saved.set("filters", JSON.stringify(f));
      for (const s of bar.querySelectorAll("select")) s.value = f[s.name];
      showToggle();
      load();
    }, text: t("show_all") }));
  let resolved = new Map(); // when the status filter shows resolved alerts: fetched, then live
  let resolvedError = null; // null, "" while they are fetched, else why they could not be
  let loads = 0; // a filter changed while its alerts were fetched: the older answer is dropped
  const freshIds = new Map();

  const select = (key, options, label) => h("label", { class: "filter" }, label,
    h("select", { name: key, onchange: (e) => { f[key] = e.target.value; saved.set("filters", JSON.stringify(f)); load(); } },
      options.map(([value, text]) => h("option", { value, selected: f[key] === value, text }))));

  const buildingSelect = h("span", { class: "contents" });
  const bar = h("div", { class: "filters collapsible", id: "board-filters" },
    select("status", STATUSES.map((v) => [v, v === "open" ? t("status_open") : t(`st.${v}`)]), t("filter_status")),
    select("kind", [["", t("all")], ...KINDS.map((k) => [k, t(`kinds.${k}`)])], t("filter_kind")),
    communities().length ? select("community", [["", t("all")], ...communities().map((c) => [c, t("community_n", { c })])], t("filter_community")) : null,
    buildingSelect);
  // on a phone the filters fold behind one button that says what they are set to
  const toggleText = h("span");
  const toggle = h("button", { type: "button", class: "filter-toggle", "data-ctl": "filters", "aria-expanded": "false",
    "aria-controls": "board-filters", onclick: () => {
      const open = !bar.classList.contains("open");
      bar.classList.toggle("open", open);
      toggle.setAttribute("aria-expanded", String(open));
    } }, "☰ ", toggleText);
  const showToggle = () => {
    const parts = [f.status === "open" ? t("status_open") : t(`st.${f.status}`)];
    if (f.kind) parts.push(t(`kinds.${f.kind}`));
    if (f.community) parts.push(t("community_n", { c: f.community }));
    if (f.building) parts.push(buildingName(f.building));
    toggleText.textContent = `${t("filters")}: ${parts.join(" · ")}`;
  };

  function fillBuildings() {
    const known = new Set(buildings || []);
    for (const a of live.alerts.values()) if (a.labels.building) known.add(a.labels.building);
    if (f.building) known.add(f.building);
    const sorted = [...known].sort((x, y) => x.localeCompare(y, undefined, { numeric: true }));
    buildingSelect.replaceChildren(select("building", [["", t("all")], ...sorted.map((b) => [b, buildingName(b)])], t("filter_building")));
  }

  const cards = new Map(); // id → {key, el}: an unchanged alert keeps its element (and a press on it)

  function card(g, now) {
    const fresh = g.members.some((m) => (freshIds.get(m.id) || 0) > now);
    // only what the card shows: a note in the history (a page sent) keeps the element, and a
    // press on it; the residents' names of every member (the head's and the member line's), so
    // the cards are drawn again when the names arrive after them
    const key = JSON.stringify([g.members.map((m) => [m.id, m.status, m.severity, m.signal, m.acknowledged_by, m.offline, m.late,
      m.started_at, m.title, m.title_zh, m.title_en, residentName(m.labels.resident_id)]), fresh]);
    let c = cards.get(g.key);
    if (!c || c.key !== key) {
      c = { key, el: alertCard(g.head, fresh, g.members) };
      cards.set(g.key, c);
    }
    return c.el;
  }

  const foldSummary = h("span");
  const foldedList = h("div", { class: "grid alerts" });
  const folded = h("details", { class: "folded card", hidden: true, "data-field": "folded" },
    h("summary", {}, foldSummary), foldedList);
  let foldedGroups = [];
  folded.addEventListener("toggle", () => drawFolded());

  function drawFolded() {
    const now = Date.now();
    foldedList.replaceChildren(...(folded.open ? foldedGroups.slice(0, SHOWN).map((g) => card(g, now)) : []));
  }

  // what the board knows: "loading", "failed" (retrying), "loaded", or "stale" (loaded, but
  // the latest fetch failed and is retried)
  const state = h("p", { class: "notice board-state", role: "status", "data-field": "board-state", hidden: true });
  let stateKey = "";

  function knowing() {
    if (f.status === "resolved") return resolvedError === null ? "loaded" : resolvedError === "" ? "loading" : "failed";
    if (!live.loaded) return live.loadFailed ? "failed" : "loading";
    return live.loadFailed ? "stale" : "loaded";
  }

  function drawState(known) {
    const key = JSON.stringify([known, f.status === "resolved", resolvedError]);
    if (key === stateKey) return;
    stateKey = key;
    state.hidden = known === "loaded";
    state.dataset.state = known;
    state.classList.toggle("error", known === "failed" || known === "stale");
    list.setAttribute("aria-busy", String(known === "loading"));
    if (known === "loaded") state.replaceChildren();
    else if (known === "loading") state.replaceChildren(f.status === "resolved" ? t("loading") : t("board_loading"));
    else if (f.status === "resolved") {
      state.replaceChildren(`${t("load_failed")}: ${resolvedError} `,
        h("button", { type: "button", "data-ctl": "reload", onclick: () => load(), text: t("retry") }));
    } else state.replaceChildren(t(known === "failed" ? "board_load_failed" : "board_refresh_failed"));
  }

  function draw() {
    const now = Date.now();
    const known = knowing();
    drawState(known);
    const items = f.status === "resolved" ? [...resolved.values()]
      : [...live.alerts.values(), ...(f.status === "open" ? [] : resolved.values())];
    const groups = incidents(items.filter((a) => matches(a, f)));
    const role = who.me && who.me.role;
    const main = [];
    foldedGroups = [];
    for (const g of groups) (f.status !== "resolved" && g.members.every((m) => foldable(m, role)) ? foldedGroups : main).push(g);
    const els = main.slice(0, SHOWN).map((g) => card(g, now));
    const keys = new Set([...main.slice(0, SHOWN), ...foldedGroups.slice(0, SHOWN)].map((g) => g.key));
    for (const k of cards.keys()) if (!keys.has(k)) cards.delete(k);
    if (els.length !== list.children.length || els.some((e, i) => list.children[i] !== e)) list.replaceChildren(...els);
    folded.hidden = foldedGroups.length === 0;
    const nFolded = foldedGroups.reduce((n, g) => n + g.members.length, 0);
    foldSummary.replaceChildren(t("folded", { n: nFolded, what: t("fold_what"), role: t(`roles.${role}`) }));
    drawFolded();
    const hidden = [...live.alerts.values()].filter((a) => a.status === "firing" && !matches(a, f)).length;
    outside.hidden = hidden === 0;
    outsideText.textContent = t("outside_filters", { n: hidden });
    // "no alerts match" only of a list that has arrived
    note.textContent = main.length > SHOWN ? t("board_more", { n: main.length - SHOWN })
      : groups.length === 0 && (known === "loaded" || known === "stale") ? t("board_empty") : "";
  }

  async function load() {
    fillBuildings();
    showToggle();
    const mine = ++loads;
    resolved = new Map();
    resolvedError = null;
    if (f.status === "resolved") {
      resolvedError = "";
      draw();
      let got = [];
      let error = null;
      try {
        got = (await api(`/api/alerts${qs({ status: "resolved", kind: f.kind, building: f.building, community: f.community, limit: 100 })}`)).items;
      } catch (e) {
        error = e.message || "?";
      }
      if (mine !== loads) return;
      resolvedError = error;
      for (const a of got) if (!resolved.has(a.id)) resolved.set(a.id, a); // those resolved meanwhile are newer
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
  const onStatus = () => draw(); // a fetch of the open alerts failed (the connection, the sound: no change)
  live.addEventListener("status", onStatus);

  root.replaceChildren(h("section", { class: "board" }, toggle, bar, outside, state, list, folded, note));
  loadNames().then(() => draw());
  if (buildings === null) {
    api("/api/fleet/summary").then((r) => {
      buildings = r.places.map((p) => p.building).filter(Boolean);
      fillBuildings();
    }).catch(() => { buildings = []; });
  }
  load();
  return () => {
    live.removeEventListener("change", onChange);
    live.removeEventListener("status", onStatus);
  };
}
