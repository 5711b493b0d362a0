// The console's shell: header (navigation, live state, sound, who is signed in, sign-out,
// language), the alarm banner, the title-bar count, and the hash routes — or the sign-in page
// when nobody is signed in (or the session ended).

import * as alertPage from "./alert.js";
import * as board from "./board.js";
import * as commission from "./commission.js";
import * as devices from "./devices.js";
import * as duty from "./duty.js";
import { getLang, locale, setLang, t, tn } from "./i18n.js";
import { live } from "./live.js";
import * as ops from "./ops.js";
import { forgetNames } from "./names.js";
import * as residents from "./residents.js";
import * as review from "./review.js";
import * as rules from "./rules.js";
import { can, loadMe, renderLogin, signOut } from "./session.js";
import { h, s, tick, who } from "./util.js";

const ID = "([A-Za-z0-9_-]{1,64})";
const ROUTES = [
  [/^$/, board.render, "board"],
  [/^alerts\/(\d+)$/, alertPage.render, "board"],
  [/^devices$/, devices.render, "devices"],
  [new RegExp(`^devices/${ID}$`), devices.renderDevice, "devices"],
  [/^residents$/, residents.render, "residents"],
  [new RegExp(`^residents/${ID}$`), residents.renderResident, "residents"],
  [/^ops$/, ops.render, "ops"],
  [/^review$/, review.render, "review"],
  [/^duty$/, duty.render, "duty"],
  [/^rules$/, rules.render, "rules"],
  [/^commission$/, commission.render, "commission"],
];
const NAV = [["board", "#/"], ["devices", "#/devices"], ["residents", "#/residents"], ["review", "#/review"], ["duty", "#/duty"], ["rules", "#/rules"], ["commission", "#/commission"], ["ops", "#/ops"]];
const NEEDS = { residents: "residents", ops: "ops" };
const ROLES = { review: ["admin", "manager", "district_manager"], duty: ["admin", "manager", "operator", "district_manager"], rules: ["admin", "manager", "district_manager"], commission: ["admin", "manager", "operator", "district_manager"] }; // the weekly review and the rules are the managers' duty; the duty roster the desk's

function offered(name) {
  if (NEEDS[name] && !can(NEEDS[name])) return false;
  return !ROLES[name] || Boolean(who.me && ROLES[name].includes(who.me.role));
}

const top = document.getElementById("top");
const banner = document.getElementById("banner");
const main = document.getElementById("main");
let cleanup = null;
let section = "board";
let linked = false; // the stream has opened since sign-in: until then the header says connecting, not lost
let slow = false; // the open alerts have been loading a while: the banner says so (not at every sign-in)
let slowTimer = null;
const SLOW_MS = 3000;

const ICONS = {
  on: "M16 8.5a5 5 0 0 1 0 7M18.5 6a8.5 8.5 0 0 1 0 12",
  off: "M16 9l6 6M22 9l-6 6",
  pending: "M17 12h.01M20 12h.01M23 12h.01",
};

function speaker(state) {
  return s("svg", { viewBox: "0 0 24 24", width: 20, height: 20, "aria-hidden": "true" },
    s("path", { d: "M3 9h4l5-4v14l-5-4H3z", fill: "currentColor" }),
    s("path", { d: ICONS[state], fill: "none", stroke: "currentColor", "stroke-width": 2, "stroke-linecap": "round" }));
}

function soundState() {
  if (live.muted) return ["off", t("sound_off")];
  return live.audible ? ["on", t("sound_on")] : ["pending", t("sound_enable")];
}

const el = {};

/** The header and banner, built once per language; updateShell() changes them in place (a
 * rebuilt button between a press and its release would lose the click). */
function buildShell() {
  el.badge = h("span", { class: "count-badge", hidden: true });
  el.nav = NAV.filter(([name]) => offered(name)).map(([name, href]) =>
    h("a", { href, class: "nav", "data-section": name }, t(`nav_${name}`), name === "board" ? el.badge : null));
  el.conn = h("span", { class: "conn", role: "status" });
  el.sound = h("button", { type: "button", class: "icon", "data-ctl": "sound",
    onclick: () => (live.muted || live.audible ? live.setMuted(!live.muted) : live.unlock()) });
  const me = who.me;
  el.staff = h("span", { class: "staff", "data-ctl": "staff", title: me.name },
    h("span", { class: "staff-label", text: t(`roles.${me.role}`) }), ` ${me.staff_id}`);
  el.signOut = h("button", { type: "button", "data-ctl": "sign-out", onclick: signOut, text: t("sign_out") });
  top.replaceChildren(
    h("a", { class: "brand", href: "#/" }, h("b", { text: t("brand") }), h("span", { text: t("brand_sub") })),
    h("nav", { "aria-label": "main" }, el.nav),
    h("div", { class: "controls" }, el.conn, el.sound, el.staff, el.signOut,
      h("button", { type: "button", class: "lang", "data-ctl": "lang", lang: getLang() === "zh" ? "en" : "zh",
        onclick: () => { setLang(getLang() === "zh" ? "en" : "zh"); buildShell(); route(); }, text: t("lang_switch") })));
  el.bannerText = h("span");
  el.bannerSound = h("button", { type: "button", "aria-label": t("sound_enable"), onclick: () => live.unlock() }, speaker("pending"), h("span", { class: "label", text: ` ${t("sound_enable")}` }));
  banner.replaceChildren(h("a", { href: "#/" }, "⚠ ", el.bannerText), el.bannerSound);
}

/** The banner's words: the alarms waiting for someone (else any alerts), and when some of them
 * share an incident — a fire and the fall in its flat, one card on the board — the incidents
 * too: "1 起事件（2 条报警）待确认", not "2 条报警" over a single card. */
function bannerWords(c) {
  const [n, what] = c.alarms ? [c.alarms, "n_alarms"] : [c.firing, "n_alerts"];
  const waiting = (a) => a.status === "firing" && !live.ignore(a) && (!c.alarms || a.signal === "alarm");
  const cards = board.incidents(live.open().filter((a) => !live.ignore(a)))
    .filter((g) => g.members.some(waiting)).length;
  const words = cards && cards < n ? t("banner_in", { i: tn("n_incidents", cards), n: tn(what, n) }) : tn(what, n);
  return t("banner_wait", { what: words });
}

function updateShell() {
  const c = live.counts();
  // until the open alerts have arrived nothing here says zero: what came live counts as "at least"
  const more = live.truncated || !live.loaded ? "+" : "";
  const count = c.firing ? `${c.firing}${more}` : live.loaded ? "" : "…";
  document.title = count ? `(${count}) ${t("brand")}` : t("title");
  el.badge.hidden = !count;
  el.badge.textContent = count;
  el.badge.title = live.loaded ? "" : t(live.loadFailed ? "board_load_failed" : "board_loading");
  for (const a of el.nav) {
    const here = a.dataset.section === section;
    a.classList.toggle("current", here);
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  linked ||= live.connected;
  el.conn.className = `conn ${live.connected ? "up" : linked ? "down" : "wait"}`;
  el.conn.textContent = t(live.connected ? "live" : linked ? "offline_conn" : "connecting");
  const [state, label] = soundState();
  el.sound.replaceChildren(speaker(state));
  el.sound.className = `icon sound-${state}`;
  el.sound.title = label;
  el.sound.setAttribute("aria-label", label);
  const unknown = !live.loaded && (live.loadFailed || slow);
  banner.hidden = c.firing === 0 && !unknown;
  banner.className = c.alarms ? "alarm" : "attention";
  el.bannerText.textContent = c.firing ? bannerWords(c) : unknown ? t(live.loadFailed ? "board_load_failed" : "board_loading") : "";
  // hidden but keeping its room: the first tap anywhere enables sound, and the page must not
  // shift under the finger between press and release (the tap would miss its link)
  el.bannerSound.style.visibility = state === "pending" ? "visible" : "hidden";
}

function route() {
  const path = decodeURIComponent(location.hash.replace(/^#\/?/, "")).split("?")[0];
  if (cleanup) cleanup();
  cleanup = null;
  document.documentElement.lang = locale();
  const found = ROUTES.find(([re]) => re.test(path));
  if (!found) {
    section = "";
    main.replaceChildren(h("p", { class: "notice", text: t("not_found") }), h("a", { href: "#/", text: t("nav_board") }));
  } else {
    const [re, render, name] = found;
    section = name;
    if (!offered(name)) { // not for this role: the usual refusal, nothing asked of the API
      main.replaceChildren(h("p", { class: "notice error", role: "alert", "data-field": "page-refused", text: t("page_refused") }), h("a", { href: "#/", text: t("nav_board") }));
      updateShell();
      return;
    }
    // a view of its own: what a page left still loading lands in its detached view, not here
    const view = h("div", { class: "view" });
    main.replaceChildren(view);
    cleanup = render(view, path.match(re).slice(1)) || null;
  }
  updateShell();
  window.scrollTo(0, 0);
}

let running = false;

/** The console for the signed-in person. */
function start() {
  running = true;
  linked = false;
  slow = false;
  clearTimeout(slowTimer);
  slowTimer = setTimeout(() => { slow = true; if (running) updateShell(); }, SLOW_MS);
  const role = who.me && who.me.role;
  live.ignore = (a) => board.foldable(a, role);
  buildShell();
  route();
  live.start();
}

/** The sign-in page (nobody signed in, or the session ended). */
function showLogin() {
  running = false;
  forgetNames();
  live.stop();
  if (cleanup) cleanup();
  cleanup = null;
  document.title = t("title");
  banner.hidden = true;
  top.replaceChildren(
    h("a", { class: "brand", href: "#/" }, h("b", { text: t("brand") }), h("span", { text: t("brand_sub") })),
    h("div", { class: "controls" }, h("button", { type: "button", class: "lang", "data-ctl": "lang",
      onclick: () => { setLang(getLang() === "zh" ? "en" : "zh"); showLogin(); }, text: t("lang_switch") })));
  renderLogin(main, start);
}

window.addEventListener("hashchange", () => { if (running) route(); });
document.addEventListener("signedout", () => { if (running) showLogin(); });
document.addEventListener("pointerdown", () => { if (!live.muted && !live.audible) live.unlock(); });
live.addEventListener("status", () => { if (running) updateShell(); });
live.addEventListener("change", () => { if (running) updateShell(); });
setInterval(() => tick(), 15000);
loadMe().then((me) => (me ? start() : showLogin()), () => showLogin());
