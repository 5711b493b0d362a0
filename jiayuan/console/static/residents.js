// Residents, for caretakers: their own residents with the latest vitals, open alerts and the
// day's activity; one resident with charts. Vitals appear only on these pages.

import { staffId } from "./actions.js";
import { alertCard } from "./board.js";
import { fact } from "./alert.js";
import { readingsBlock, stateDot } from "./devices.js";
import { t, UNITS } from "./i18n.js";
import { live } from "./live.js";
import { api, h, loading, num, qs, saved, STAFF_PATTERN, when, who } from "./util.js";

const SHOWN_VITALS = ["heart_rate", "spo2", "battery"];

function dayStart() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d.toISOString();
}

function vital(r, name) {
  const v = r.latest[name];
  if (!v) return null;
  return h("span", { class: "vital", title: new Date(v.at).toLocaleString() },
    h("small", { text: t(`metrics.${name}`) }), h("b", { text: num(v.value, 1) }), h("small", { text: UNITS[name] }));
}

function worn(r) {
  const v = r.latest.worn;
  if (!v) return null;
  return h("span", { class: ["vital", v.value ? "" : "warn-text"] }, h("b", { text: v.value ? t("worn") : t("not_worn") }));
}

function activity(r) {
  const a = r.activity;
  if (!a) return null; // health data: only for the resident's caretakers
  return h("p", { class: "muted" },
    `${t("today")}: ${t("steps")} ${a.steps == null ? "—" : num(a.steps)} · ${t("readings_today", { n: num(a.readings) })}`,
    Object.entries(a.events).map(([e, n]) => ` · ${t(`ev.${e}`)} ×${n}`).join(""));
}

function residentCard(r, me) {
  const role = r.caretakers[0] === me ? t("primary") : r.caretakers.includes(me) ? t("backup") : null;
  return h("article", { class: ["card", "resident", r.open_alerts ? "has-alerts" : ""], "data-resident-id": r.resident_id },
    h("div", { class: "tags" },
      r.open_alerts ? h("span", { class: "badge sev-critical", text: `${t("open_alerts")} ${r.open_alerts}` }) : null,
      role ? h("span", { class: "tag", text: role }) : null,
      r.device_id ? stateDot(r) : h("span", { class: "tag warn", text: t("no_wearable") })),
    h("h3", {}, h("a", { href: `#/residents/${r.resident_id}`, class: "mono", text: r.resident_id })),
    h("p", { class: "where", text: [r.compound, r.building, r.unit].filter(Boolean).join(" · ") }),
    h("div", { class: "vitals" }, SHOWN_VITALS.map((n) => vital(r, n)), worn(r)),
    activity(r),
    h("p", { class: "muted" }, t("last_seen"), " ", when(r.last_seen, false)));
}

export function render(root) {
  // a caretaker sees their own residents (the server allows no others); others may filter
  const mine = who.me && who.me.role === "caretaker";
  const input = h("input", { name: "caretaker", pattern: STAFF_PATTERN, value: mine ? staffId() : saved.get("caretaker", ""), placeholder: t("caretaker_id"), autocapitalize: "off", spellcheck: "false" });
  const list = h("div", { class: "grid residents" });
  const form = h("form", { class: "filters" }, h("label", { class: "filter" }, t("caretaker_id"), input),
    h("button", { type: "submit", text: t("show") }));
  form.addEventListener("submit", (e) => { e.preventDefault(); saved.set("caretaker", input.value.trim()); load(); });
  root.replaceChildren(h("section", { class: "stack" }, h("h2", { text: t("residents_title") }), form, list));

  async function load() {
    const me = input.value.trim() || null;
    const fail = loading(list);
    try {
      const r = await api(`/api/residents${qs({ caretaker: me, day_start: dayStart(), limit: 200 })}`);
      list.replaceChildren(...(r.items.length ? r.items.map((x) => residentCard(x, me)) : [h("p", { class: "muted", text: t("no_residents") })]));
    } catch (e) {
      fail(e, load);
    }
  }
  load();
  // a new or changed alert of one of them: fetch again (cheap: a caretaker has a dozen)
  let timer = null;
  const onChange = (e) => {
    if (!e.detail.alert || e.detail.alert.kind !== "wearable" || timer) return;
    timer = setTimeout(() => { timer = null; load(); }, 1000);
  };
  live.addEventListener("change", onChange);
  return () => { live.removeEventListener("change", onChange); clearTimeout(timer); };
}

export function renderResident(root, [id]) {
  const fail = loading(root);
  async function load() {
    let r;
    try {
      r = await api(`/api/residents/${id}${qs({ day_start: dayStart() })}`);
    } catch (e) {
      fail(e, load);
      return;
    }
    root.replaceChildren(h("div", { class: "stack" },
      h("section", { class: "card" },
        h("h2", {}, h("span", { class: "mono", text: r.resident_id })),
        h("dl", { class: "facts" },
          fact(t("where"), [r.compound, r.building, r.unit].filter(Boolean).join(" · ")),
          fact(t("caretakers"), r.caretakers.join(", ") || "—"),
          fact(t("device"), r.device_id ? h("a", { href: `#/devices/${r.device_id}`, class: "mono", text: r.device_id }) : t("no_wearable"),
            r.device_id ? [" ", stateDot(r)] : null),
          fact(t("last_seen"), when(r.last_seen))),
        h("h3", { text: t("vitals") }),
        h("div", { class: "vitals" }, ["heart_rate", "spo2", "skin_temp_c", "battery"].map((n) => vital(r, n)), worn(r)),
        activity(r)),
      r.alerts.length ? h("section", {}, h("h3", { text: t("open_alerts") }), h("div", { class: "grid alerts" }, r.alerts.map((a) => alertCard(a)))) : null,
      r.device_id && r.caretakers.includes(staffId())
        ? h("section", { class: "card" }, readingsBlock(r.device_id, "wearable", { hours: 6 })) : null));
  }
  load();
}
