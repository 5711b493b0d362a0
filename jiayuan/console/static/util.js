// Small helpers: building DOM safely, talking to the API, formatting times.

import { locale, t } from "./i18n.js";

/** An element; text is always set as text (never parsed as HTML). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Append ``children`` to ``el`` as h() does: null and false skipped (the DOM's own append
 * writes them out as the text "null" and "false"). */
export function add(el, ...children) {
  append(el, children);
  return el;
}

/** Replace ``el``'s children, null and false skipped (see add). */
export function fill(el, ...children) {
  el.replaceChildren();
  return add(el, ...children);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The API's {"detail": ...} as one readable line (a string, or FastAPI's list of problems). */
export function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).filter((x) => x !== "body").join(".")}: ${d.msg}`).join("; ");
  }
  return JSON.stringify(detail);
}

/** Who is signed in (GET /api/auth/me): `staff_id`, `role`, `can`, and the session's
 * `csrf_token`, sent back on every POST (the session cookie itself is HttpOnly: never seen here). */
export const who = { me: null };

/** GET (or POST/PUT `body`) JSON from the API; a refusal throws ApiError with the API's detail.
 * A 401 (the session ended: signed out elsewhere, expired) also fires "signedout". */
export async function api(path, body, method = "POST") {
  const init = body === undefined ? {} : {
    method, body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-CSRF-Token": (who.me && who.me.csrf_token) || "" },
  };
  init.headers = { ...(init.headers || {}), "Accept-Language": locale() };
  const r = await fetch(path, { ...init, credentials: "same-origin" });
  let data = null;
  try { data = await r.json(); } catch { /* not JSON */ }
  if (r.status === 401) document.dispatchEvent(new CustomEvent("signedout"));
  if (!r.ok) throw new ApiError(r.status, data && data.detail ? detailText(data.detail) : `HTTP ${r.status}`);
  return data;
}

export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v == null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) q.append(k, one);
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

export const saved = {
  get(key, fallback = null) {
    try { return localStorage.getItem(`jy.${key}`) ?? fallback; } catch { return fallback; }
  },
  set(key, value) {
    try {
      if (value == null || value === "") localStorage.removeItem(`jy.${key}`);
      else localStorage.setItem(`jy.${key}`, value);
    } catch { /* not remembered */ }
  },
};

export const STAFF_PATTERN = "[A-Za-z0-9_\\-]{1,64}";

// ------------------------------------------------------------------ times (local time)

export function ms(iso) { return iso ? Date.parse(iso) : NaN; }

/** Absolute local time: the time alone today, with the date otherwise. */
export function absTime(iso, withSeconds = false) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "—";
  const today = new Date().toDateString() === d.toDateString();
  const opts = { hour: "2-digit", minute: "2-digit", hour12: false };
  if (withSeconds) opts.second = "2-digit";
  if (!today) Object.assign(opts, { month: "2-digit", day: "2-digit" });
  if (!today && d.getFullYear() !== new Date().getFullYear()) opts.year = "numeric";
  return new Intl.DateTimeFormat(locale(), opts).format(d);
}

/** "5 minutes ago" in the reader's language. */
export function relTime(iso) {
  const t0 = ms(iso);
  if (Number.isNaN(t0)) return "—";
  const sec = Math.round((t0 - Date.now()) / 1000);
  const rtf = new Intl.RelativeTimeFormat(locale(), { numeric: "auto" });
  const abs = Math.abs(sec);
  if (abs < 45) return rtf.format(sec, "second");
  if (abs < 2700) return rtf.format(Math.round(sec / 60), "minute");
  if (abs < 64800) return rtf.format(Math.round(sec / 3600), "hour");
  return rtf.format(Math.round(sec / 86400), "day");
}

/** A <time> with the relative time shown, the absolute one beside it, kept fresh by tick(). */
export function when(iso, withAbs = true) {
  if (!iso) return h("span", { class: "muted", text: "—" });
  return h("time", { datetime: iso, "data-rel": withAbs ? "abs" : "rel", title: new Date(iso).toLocaleString(locale()) },
    relText(iso, withAbs));
}

function relText(iso, withAbs) {
  return withAbs ? `${relTime(iso)} · ${absTime(iso, true)}` : relTime(iso);
}

/** Refresh every relative time on the page (called every few seconds). */
export function tick(root = document) {
  for (const el of root.querySelectorAll("time[data-rel]")) {
    el.textContent = relText(el.getAttribute("datetime"), el.dataset.rel === "abs");
  }
}

export function num(v, digits = 0) {
  if (v == null || Number.isNaN(v)) return "—";
  return Number(v).toLocaleString(locale(), { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** A page's loading / failure state inside `root`; returns a function showing an error. */
export function loading(root) {
  root.replaceChildren(h("p", { class: "muted pad loading", text: t("loading") }));
  return (e, again) => root.replaceChildren(h("div", { class: "notice error", role: "alert" },
    h("p", {}, `${t("load_failed")}: ${e.message}`),
    again ? h("button", { type: "button", onclick: again, text: t("retry") }) : null));
}

// ------------------------------------------------------------------ places, as people say them

const NUMBERED = /^[A-Za-z]+0*(\d+)$/;

/** ``B03`` → ``3号楼`` / ``Building 3``; an id of another shape stays as it is. */
export function buildingName(id) {
  const m = NUMBERED.exec(id || "");
  return m ? t("bldg", { n: m[1] }) : id || "";
}

/** ``C01`` → ``1号院`` / ``Compound 1``. */
export function compoundName(id) {
  const m = NUMBERED.exec(id || "");
  return m ? t("cmpd", { n: m[1] }) : id || "";
}

/** A household ``3-2-501`` (building-entrance-flat) → ``2单元501``; other shapes unchanged. */
export function unitName(unit) {
  const m = /^\d+-(\d+)-(\d+)$/.exec(unit || "");
  return m ? t("entrance_unit", { e: m[1], r: m[2] }) : unit || "";
}

/** Where an alert or device is, from its labels or fields: ``1号院 · 3号楼 2单元501``. Each
 * part is kept whole (never broken mid-word). */
export function place(x, withCompound = true) {
  const parts = [];
  if (withCompound && x.compound) parts.push(compoundName(x.compound));
  const home = [x.building ? buildingName(x.building) : null, x.unit ? unitName(x.unit) : null].filter(Boolean).join(" ");
  if (home) parts.push(home);
  if (!parts.length) return h("span", { text: "—" });
  return h("span", { class: "place-text" }, parts.map((p, i) => [i ? " · " : null, h("span", { class: "nobr", text: p })]));
}

/** A device id as a link that never breaks mid-word. */
export function deviceLink(id) {
  return h("a", { href: `#/devices/${id}`, class: "mono nobr", text: id });
}
