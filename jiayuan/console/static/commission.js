// Commissioning (operators, managers, admins): devices that report but are not in the registry,
// with what each sent last (fetched again every few seconds while the page is open: a device's
// row in `devices`, its battery, is written up to a second after its readings), and a form that
// registers one to a place; then (managers, admins)
// the import of a registry spreadsheet: the diff it would make, and a button that applies
// exactly that diff.

import { t } from "./i18n.js";
import { add, api, detailText, fill, h, loading, num, qs, when, who } from "./util.js";

const ID_PATTERN = "[A-Za-z0-9_\\-]{1,64}";

function field(name, label, attrs = {}) {
  return h("label", { class: "filter" }, label,
    h("input", { name, autocomplete: "off", pattern: ID_PATTERN, ...attrs }));
}

/** What a device sent last: its stream or event, the values shown, the fields withheld. */
function lastSent(d) {
  const last = d.last;
  if (!last) return h("span", { class: "muted", text: t("commission.nothing_yet") });
  const what = last.event ? t(`ev.${last.event}`) : t(`commission.streams.${last.stream}`);
  const values = Object.entries(last.values).filter(([k]) => !["ts", "seq", "event"].includes(k));
  return h("div", { class: "last-sent", "data-field": "last-sent" },
    h("b", { text: what }), " · ", when(last.received),
    values.length ? h("div", { class: "mono wrap" }, values.map(([k, v], i) => [i ? ", " : null,
      h("span", { class: "nobr", text: `${t(`metrics.${k}`)}=${typeof v === "object" ? JSON.stringify(v) : v}` })])) : null,
    last.withheld.length ? h("div", { class: "muted", text: t("commission.withheld", { fields: last.withheld.map((k) => t(`metrics.${k}`)).join(", ") }) }) : null);
}

function registerForm(d, done) {
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const form = h("form", { class: "label-form register-form", "data-device": d.device_id, hidden: true },
    field("compound", t("compound"), { required: true }),
    d.kind === "gate" ? null : field("building", t("building"), { required: true }),
    d.kind === "gate" ? null : field("unit", t("unit"), { pattern: "[^\\s]{1,32}", required: true }),
    d.kind === "gate" ? null : field("floor", t("commission.floor"), { type: "number", pattern: null, min: -10, max: 200 }),
    d.kind === "gate" ? null : field("room", t("commission.room"), { pattern: "[^\\s]{1,32}" }),
    d.kind === "wearable" ? field("resident_id", t("resident"), { required: true }) : null,
    h("label", { class: "filter wide" }, t("commission.name"), h("input", { name: "name", maxlength: 80 })),
    h("button", { type: "submit", class: "good", "data-act": "register-submit", text: t("commission.register") }),
    error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {};
    for (const [k, v] of new FormData(form)) if (v !== "") body[k] = k === "floor" ? Number(v) : v;
    error.hidden = true;
    try {
      const r = await api(`/api/devices/unregistered/${d.device_id}/register`, body);
      done(r, body);
    } catch (err) {
      error.textContent = `${t("refused")}: ${err.message}`;
      error.hidden = false;
    }
  });
  return form;
}

function unregisteredRow(d) {
  const row = h("li", { class: "device-row unregistered-device", "data-device": d.device_id });
  const form = registerForm(d, (r, body) => {
    const password = r.broker.passwords[d.device_id];
    fill(row,
      h("span", { class: "mono nobr", text: d.device_id }),
      h("span", { class: "good-text", "data-field": "registered", text: `✓ ${t("commission.registered_to", { place: [body.compound, body.building, body.unit].filter(Boolean).join(" · ") })}` }),
      password ? h("span", { class: "notice", "data-field": "password" }, t("commission.password_once"), " ", h("code", { class: "mono", text: password })) : null,
      r.broker.accounts === "not managed" ? h("span", { class: "muted", text: t("commission.accounts_not_managed") }) : null);
  });
  add(row,
    h("span", { class: "mono nobr", text: d.device_id }),
    h("span", { class: "muted nobr", text: t(`kinds.${d.kind}`) }),
    d.retired ? h("span", { class: "tag", "data-field": "retired", text: t("commission.retired") }) : null,
    h("span", { class: "muted" }, t("first_seen"), " ", when(d.first_seen, false)),
    h("span", { class: "muted" }, t("last_seen"), " ", when(d.last_seen, false)),
    h("span", { class: "nobr", text: t("commission.messages", { n: num(d.messages) }) }),
    d.battery == null ? null : h("span", { text: `${t("battery")} ${num(d.battery)}%` }),
    lastSent(d),
    h("button", { type: "button", "data-act": "register", text: t("commission.register"),
      onclick: () => { form.hidden = !form.hidden; if (!form.hidden) form.querySelector("input").focus(); } }),
    form);
  return row;
}

const SECTIONS = ["buildings", "devices", "residents", "staff"];

function shown(v) {
  if (v == null || v === "" || (Array.isArray(v) && !v.length)) return t("commission.empty");
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** The diff as an operator reads it: per section what is added, removed, and each changed
 * field with its value before and after. */
export function diffView(diff) {
  return h("div", { class: "diff", "data-field": "diff" }, SECTIONS.filter((sec) => {
    const d = diff[sec];
    return d.added.length || d.removed.length || d.changed.length;
  }).map((sec) => {
    const d = diff[sec];
    return h("section", { "data-section": sec },
      h("h4", { text: t("commission.section_counts", { section: t(`commission.sections.${sec}`), a: d.added.length, r: d.removed.length, c: d.changed.length }) }),
      h("ul", { class: "diff-lines" },
        d.added.map((id) => h("li", { class: "added" }, h("b", { class: "mono", text: `+ ${id}` }), " ",
          h("span", { class: "muted wrap", text: Object.entries(d.added_records[id] || {}).filter(([, v]) => v !== id).map(([k, v]) => `${k}=${shown(v)}`).join(", ") }))),
        d.removed.map((id) => h("li", { class: "removed" }, h("b", { class: "mono", text: `− ${id}` }), " ", t("commission.removed"))),
        d.changed.map((c) => h("li", { class: "changed" }, h("b", { class: "mono", text: `~ ${c.id}` }),
          h("ul", {}, c.fields.map((f) => h("li", { class: "mono wrap", text: `${f.field}: ${shown(f.before)} → ${shown(f.after)}` })))))));
  }));
}

async function upload(file, apply) {
  const r = await fetch(`/api/registry/import${qs({ name: file.name, apply })}`, {
    method: "POST", body: file, credentials: "same-origin",
    headers: { "Content-Type": "application/octet-stream", "X-CSRF-Token": (who.me && who.me.csrf_token) || "" },
  });
  let data = null;
  try { data = await r.json(); } catch { /* not JSON */ }
  if (r.status === 401) document.dispatchEvent(new CustomEvent("signedout"));
  if (!r.ok) {
    const detail = data && data.detail;
    const err = new Error(detail && detail.problems ? detail.message : detail ? detailText(detail) : `HTTP ${r.status}`);
    err.problems = (detail && detail.problems) || [];
    err.status = r.status;
    throw err;
  }
  return data;
}

function importSection() {
  const input = h("input", { type: "file", name: "file", accept: ".xlsx,.csv,.yaml,.yml" });
  const out = h("div", { class: "import-result", "data-field": "import-result" });
  let previewed = null;

  function showError(e) {
    out.replaceChildren(h("div", { class: "notice error", role: "alert" },
      h("p", { text: `${e.status === 409 ? t("commission.stale") : t("refused")}: ${e.message}` }),
      e.problems && e.problems.length ? h("ul", { class: "problems" }, e.problems.map((p) => h("li", { class: "mono wrap", text: p }))) : null));
  }

  async function preview() {
    const file = input.files[0];
    if (!file) return;
    out.replaceChildren(h("p", { class: "muted loading", text: t("loading") }));
    try {
      const r = await upload(file, null);
      previewed = { file, version: r.version };
      const empty = r.changes === "no changes";
      fill(out,
        h("p", {}, h("b", { text: t("commission.diff_of", { file: r.file }) }), " ", h("span", { class: "mono", text: r.changes })),
        empty ? h("p", { class: "muted", text: t("commission.no_changes") }) : diffView(r.diff),
        empty ? null : h("button", { type: "button", class: "good", "data-act": "apply-import", onclick: apply, text: t("commission.apply") }));
    } catch (e) {
      showError(e);
    }
  }

  async function apply() {
    if (!previewed) return;
    try {
      const r = await upload(previewed.file, previewed.version);
      previewed = null;
      const passwords = Object.entries(r.broker ? r.broker.passwords : {});
      fill(out, h("p", { class: "notice", "data-field": "applied", text: `✓ ${t("commission.applied", { changes: r.changes })}` }),
        passwords.length ? h("div", { class: "notice" }, h("p", { text: t("commission.password_once") }),
          h("ul", {}, passwords.map(([id, pw]) => h("li", { class: "mono", text: `${id}: ${pw}` })))) : null);
    } catch (e) {
      showError(e);
    }
  }

  return h("section", { class: "card", id: "import" },
    h("h3", { text: t("commission.import_title") }),
    h("p", { class: "muted", text: t("commission.import_intro") }),
    h("div", { class: "label-form" }, input,
      h("button", { type: "button", "data-act": "preview-import", onclick: preview, text: t("commission.preview") })),
    out);
}

const REFRESH_MS = 5000;

/** Whether an operator is at work on a row: its form open, or it was just registered (then it
 * says where, and the broker password shown once). A refresh leaves such a row as it is. */
function busy(row) {
  return Boolean(row.querySelector("form.register-form:not([hidden]), [data-field=registered]"));
}

/** The page, kept current: the list is fetched again every REFRESH_MS, so a device that reports
 * while an operator waits for it (switched on at the door, its first telemetry, its battery)
 * appears without a reload. Rows being registered are left alone; the import is never redrawn. */
export function render(root) {
  const fail = loading(root);
  const manages = who.me && ["admin", "manager", "district_manager"].includes(who.me.role);
  let heading = null;
  let list = null;
  let none = null;
  let stopped = false;
  let timer = null;

  function show(page) {
    const rows = new Map([...list.children].map((row) => [row.dataset.device, row]));
    const listed = new Set();
    for (const d of page.items) {
      listed.add(d.device_id);
      const row = rows.get(d.device_id);
      if (!row) list.append(unregisteredRow(d));
      else if (!busy(row)) row.replaceWith(unregisteredRow(d));
    }
    for (const [id, row] of rows) if (!listed.has(id) && !busy(row)) row.remove();
    heading.textContent = `${t("unregistered")} (${num(page.total)})`;
    none.hidden = list.children.length > 0;
  }

  async function load() {
    clearTimeout(timer);
    let page;
    try {
      page = await api(`/api/devices/unregistered${qs({ limit: 200 })}`);
    } catch (e) {
      if (stopped) return;
      if (!list) {
        fail(e, load);
        return;
      }
    }
    if (stopped) return;
    if (page && !list) {
      heading = h("h3");
      list = h("ul", { class: "device-list" });
      none = h("p", { class: "muted", text: t("none") });
      root.replaceChildren(h("div", { class: "stack commission" },
        h("h2", { text: t("commission.title") }),
        h("section", { class: "card", id: "unregistered-devices" },
          heading,
          h("p", { class: "muted", text: t("commission.intro") }),
          list, none),
        manages ? importSection() : null));
    }
    if (page) show(page);
    timer = setTimeout(load, REFRESH_MS);
  }
  load();
  return () => { stopped = true; clearTimeout(timer); };
}
