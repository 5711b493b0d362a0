// Acknowledge and resolve, with a note: one dialog for the board and the alert page.

import { alertTitle, t } from "./i18n.js";
import { live } from "./live.js";
import { api, h, place, who } from "./util.js";

/** The signed-in person's staff id: the name the server records on what they do. */
export function staffId() { return (who.me && who.me.staff_id) || ""; }

/** Ask for the note, then POST as the signed-in person — for every alert of an incident
 * (`members`) still needing it; resolves with `alert` as the server now has it. */
export function act(alert, action, members = [alert]) {
  return new Promise((resolve) => {
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const note = h("textarea", { name: "note", rows: 3, maxlength: 2000, placeholder: t("note_ph") });
    // resolving as a false alarm is counted in the weekly review (a newer service keeps it)
    const falseAlarm = action === "resolve" ? h("input", { type: "checkbox", name: "false_alarm" }) : null;
    const quick = t(action === "ack" ? "q_ack" : "q_resolve").map((text, i) =>
      h("button", { type: "button", class: "chip", text, onclick: () => {
        note.value = text;
        if (falseAlarm) falseAlarm.checked = i === 0; // the first quick note is "false alarm"
        note.focus();
      } }));
    const submit = h("button", {
      type: "submit", class: action === "ack" ? "primary" : "good", "data-act": "submit",
      text: t(action === "ack" ? "submit_ack" : "submit_resolve"),
    });
    const form = h("form", { method: "dialog" },
      h("h2", { text: t(action === "ack" ? "dlg_ack" : "dlg_resolve") }),
      h("p", { class: ["dlg-alert", `sev-${alert.severity}`] },
        h("strong", { text: alertTitle(alert) }), h("br"), h("span", { class: "muted" }, place(alert.labels))),
      h("p", { class: "muted acting-as", text: t("acting_as", { id: staffId() }) }),
      h("label", {}, t("note"), note),
      h("div", { class: "chips" }, quick),
      falseAlarm ? h("label", { class: "check" }, falseAlarm, t("false_alarm")) : null,
      error,
      h("div", { class: "dlg-buttons" },
        h("button", { type: "button", value: "cancel", text: t("cancel"), onclick: () => dlg.close() }),
        submit));
    const dlg = h("dialog", { class: "act-dialog", "aria-label": t(action === "ack" ? "dlg_ack" : "dlg_resolve") }, form);
    let result = null;
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      submit.disabled = true;
      error.hidden = true;
      const todo = members.filter((m) => (action === "ack" ? m.status === "firing" : m.status !== "resolved"));
      let first = null;
      for (const m of todo) {
        try {
          const body = { note: note.value.trim() };
          if (falseAlarm && falseAlarm.checked) body.false_alarm = true;
          let done;
          try {
            done = await api(`/api/alerts/${m.id}/${action}`, body);
          } catch (err) {
            if (!(err.status === 422 && body.false_alarm && /false_alarm/.test(err.message))) throw err;
            delete body.false_alarm; // a service without it: resolved with the note alone
            done = await api(`/api/alerts/${m.id}/${action}`, body);
          }
          live.put(done);
          if (m === alert || !result) result = done;
        } catch (err) {
          first ??= err;
        }
      }
      if (result) {
        dlg.close();
      } else {
        error.textContent = `${t("refused")}: ${first ? first.message : "?"}`;
        error.hidden = false;
        submit.disabled = false;
      }
    });
    dlg.addEventListener("close", () => { dlg.remove(); resolve(result); });
    document.body.append(dlg);
    dlg.showModal();
    live.unlock();
    note.focus();
  });
}

/** The Acknowledge / Resolve buttons an open alert (or incident: `members`) gets. */
export function actionButtons(alert, onDone, members = [alert], compact = false) {
  if (members.every((m) => m.status === "resolved")) return null;
  const run = (action) => async (e) => {
    e.preventDefault();
    e.stopPropagation();
    const done = await act(alert, action, members);
    if (done && onDone) onDone(done);
  };
  return h("div", { class: "actions" },
    members.some((m) => m.status === "firing") ? h("button", { type: "button", class: "primary", "data-act": "ack", onclick: run("ack"), text: t(compact ? "ack_short" : "ack"), title: t("ack") }) : null,
    h("button", { type: "button", class: "good", "data-act": "resolve", onclick: run("resolve"), text: t("resolve") }));
}
