// Signing in and out. The session is an HttpOnly cookie set by POST /api/auth/login: the page
// never reads it; it keeps who is signed in (and the CSRF token its POSTs carry) in `who.me`.

import { t } from "./i18n.js";
import { ApiError, detailText, h, STAFF_PATTERN, who } from "./util.js";

/** Who the cookie says is signed in, or null (not signed in, or the session ended). */
export async function loadMe() {
  const r = await fetch("/api/auth/me", { credentials: "same-origin" });
  if (r.status === 401) return null;
  if (!r.ok) throw new ApiError(r.status, `HTTP ${r.status}`);
  who.me = await r.json();
  return who.me;
}

export function can(what) { return Boolean(who.me && who.me.can.includes(what)); }

/** The sign-in page in `root`; `done()` once signed in. */
export function renderLogin(root, done) {
  const staff = h("input", { name: "staff_id", required: true, pattern: STAFF_PATTERN, autocomplete: "username",
    autocapitalize: "off", spellcheck: "false", placeholder: "care-C01-01" });
  const password = h("input", { name: "password", type: "password", required: true, autocomplete: "current-password" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "primary", "data-act": "sign-in", text: t("sign_in") });
  const form = h("form", { class: "login stack", method: "post", action: "/api/auth/login" },
    h("h2", { text: t("sign_in_title") }),
    h("label", {}, t("staff_id"), staff),
    h("label", {}, t("password"), password),
    error, submit);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!form.reportValidity()) return;
    submit.disabled = true;
    error.hidden = true;
    try {
      const r = await fetch("/api/auth/login", {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ staff_id: staff.value.trim(), password: password.value }),
      });
      const data = await r.json().catch(() => null);
      if (r.ok) {
        who.me = data;
        password.value = "";
        done();
        return;
      }
      error.textContent = r.status === 401 ? t("wrong_credentials")
        : r.status === 429 ? t("too_many", { s: r.headers.get("Retry-After") || "?" })
          : (data && data.detail ? detailText(data.detail) : `HTTP ${r.status}`);
    } catch (err) {
      error.textContent = `${t("load_failed")}: ${err.message}`;
    }
    error.hidden = false;
    submit.disabled = false;
    password.select();
  });
  root.replaceChildren(h("section", { class: "login-page" }, form));
  (staff.value ? password : staff).focus();
}

/** End the session on the server, then start over at the sign-in page. */
export async function signOut() {
  try {
    await fetch("/api/auth/logout", {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": (who.me && who.me.csrf_token) || "" },
    });
  } finally {
    who.me = null;
    location.reload();
  }
}
