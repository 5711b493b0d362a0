// Residents, for caretakers: their own residents by name (shown only to their caretakers and
// managers), with the latest vitals, open alerts and the day's activity; one resident with
// charts. Vitals appear only on these pages. Admins and managers choose a caretaker from a list.

import { staffId } from "./actions.js";
import { alertCard } from "./board.js";
import { fact } from "./alert.js";
import { readingsBlock, stateDot } from "./devices.js";
import { t, UNITS } from "./i18n.js";
import { live } from "./live.js";
import { loadNames } from "./names.js";
import { mayAsk, usualLine } from "./usual.js";
import { api, h, loading, num, place, qs, saved, when, who } from "./util.js";

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

/** Only news: a wearable that is not worn (being worn is the normal case, said by nothing). */
function worn(r) {
  const v = r.latest.worn;
  if (!v || v.value) return null;
  return h("span", { class: "vital warn-text" }, h("b", { text: t("not_worn") }));
}

function mayName(r) {
  const me = who.me;
  return Boolean(me && (me.role === "admin" || me.role === "manager" || me.role === "district_manager" || (me.role === "caretaker" && r.caretakers.includes(me.staff_id))));
}

function floorText(r) {
  return r.floor != null ? [" · ", h("span", { class: "nobr", text: t("floor_n", { n: r.floor }) })] : null;
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
    h("h3", {}, h("a", { href: `#/residents/${r.resident_id}` },
      r.display_name ? [h("span", { class: "resident-name", "data-field": "resident-name", text: r.display_name }), " "] : null,
      h("span", { class: r.display_name ? "mono muted small nobr" : "mono nobr", text: r.resident_id }))),
    h("p", { class: "where" }, place(r), floorText(r)),
    h("div", { class: "vitals" }, SHOWN_VITALS.map((n) => vital(r, n)), worn(r)),
    activity(r),
    h("p", { class: "muted" }, t("last_seen"), " ", when(r.last_seen, false)));
}

export function render(root) {
  // a caretaker sees their own residents (the server allows no others); admins and managers
  // choose a caretaker from the list the server gives, or see everyone
  const mine = who.me && who.me.role === "caretaker";
  const list = h("div", { class: "grid residents" });
  const chooser = h("span", { class: "contents" });
  let chosen = mine ? null : saved.get("caretaker", "") || null;
  const form = mine ? null : h("div", { class: "filters" }, chooser);
  root.replaceChildren(h("section", { class: "stack" },
    h("h2", { text: mine ? t("residents_title") : t("residents_all") }), form, list));

  async function fillChooser() {
    let items = [];
    try {
      items = (await api("/api/residents/caretakers")).items;
    } catch { /* the list only: residents still load */ }
    if (chosen && !items.some((c) => c.staff_id === chosen)) chosen = null;
    const select = h("select", { name: "caretaker", onchange: (e) => { chosen = e.target.value || null; saved.set("caretaker", chosen); load(); } },
      h("option", { value: "", selected: !chosen, text: t("everyone") }),
      items.map((c) => h("option", { value: c.staff_id, selected: c.staff_id === chosen, text: `${c.name} (${c.staff_id}) · ${c.residents}` })));
    chooser.replaceChildren(h("label", { class: "filter wide" }, t("choose_caretaker"), select));
  }

  let latest = 0; // answers to an earlier request (another caretaker chosen since) are dropped
  async function load() {
    const seq = ++latest;
    const fail = loading(list);
    try {
      const r = await api(`/api/residents${qs({ caretaker: chosen, day_start: dayStart(), limit: 200 })}`);
      if (seq !== latest) return;
      list.replaceChildren(...(r.items.length ? r.items.map((x) => residentCard(x, mine ? staffId() : chosen)) : [h("p", { class: "muted", text: t("no_residents") })]));
    } catch (e) {
      if (seq !== latest) return;
      if (e.status === 404 || e.status === 422) {
        list.replaceChildren(h("p", { class: "notice error", role: "alert", text: `${t("caretaker_refused")}: ${e.message}` }));
      } else {
        fail(e, load);
      }
    }
  }
  if (mine) load();
  else fillChooser().then(load);
  // a new or changed alert of one of them: fetch again (cheap: a caretaker has a dozen)
  let timer = null;
  const onChange = (e) => {
    if (!e.detail.alert || e.detail.alert.kind !== "wearable" || timer) return;
    timer = setTimeout(() => { timer = null; load(); }, 1000);
  };
  live.addEventListener("change", onChange);
  return () => { live.removeEventListener("change", onChange); clearTimeout(timer); };
}

/** Name a resident (their caretakers, managers, admins): what they are called here. */
function labelForm(r, done) {
  const input = h("input", { name: "label", maxlength: 40, value: r.display_name || "", placeholder: t("label_ph") });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const form = h("form", { class: "label-form", hidden: true },
    h("label", { class: "filter wide" }, t("name_label"), input),
    h("button", { type: "submit", class: "good", "data-act": "save-label", text: t("save") }), error);
  const open = h("button", { type: "button", class: "link", "data-act": "edit-label", text: t("edit_label"),
    onclick: () => { form.hidden = !form.hidden; if (!form.hidden) input.focus(); } });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api(`/api/residents/${r.resident_id}/label`, { label: input.value }, "PUT");
      loadNames(true);
      done();
    } catch (err) {
      error.textContent = `${t("refused")}: ${err.message}`;
      error.hidden = false;
    }
  });
  return [open, form];
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
    // beside the latest heart rate: her usual at this hour (her caretakers only)
    const usual = h("div", { class: "contents" });
    if (r.device_id && mayAsk(r.caretakers)) {
      const at = r.latest.heart_rate ? Date.parse(r.latest.heart_rate.at) : Date.now();
      usualLine(r.device_id, "heart_rate", at || Date.now()).then((line) => { if (line) usual.replaceChildren(line); });
    }
    root.replaceChildren(h("div", { class: "stack" },
      h("section", { class: "card" },
        h("h2", {}, r.display_name ? [h("span", { "data-field": "resident-name", text: r.display_name }), " "] : null,
          h("span", { class: r.display_name ? "mono muted small" : "mono", text: r.resident_id })),
        mayName(r) ? labelForm(r, load) : null,
        h("dl", { class: "facts" },
          fact(t("where"), place(r), floorText(r)),
          fact(t("caretakers"), r.caretakers.join(", ") || "—"),
          fact(t("device"), r.device_id ? h("a", { href: `#/devices/${r.device_id}`, class: "mono nobr", text: r.device_id }) : t("no_wearable"),
            r.device_id ? [" ", stateDot(r)] : null),
          fact(t("last_seen"), when(r.last_seen))),
        h("h3", { text: t("vitals") }),
        h("div", { class: "vitals" }, ["heart_rate", "spo2", "skin_temp_c", "battery"].map((n) => vital(r, n)), worn(r)),
        usual,
        activity(r)),
      r.alerts.length ? h("section", {}, h("h3", { text: t("open_alerts") }), h("div", { class: "grid alerts" }, r.alerts.map((a) => alertCard(a)))) : null,
      r.device_id && r.caretakers.includes(staffId())
        ? h("section", { class: "card" }, readingsBlock(r.device_id, "wearable", { hours: 6 })) : null));
  }
  load();
}
