// The live picture: every open alert, kept current from /api/stream, and the alarm sound.
//
// On (re)connect the list is fetched again, so nothing missed while away stays missed. Until the
// first fetch since sign-in has arrived the list is not known (`loaded` false; `loadFailed` when
// the last try failed and another is due): nobody may read it as "no alerts". Listeners get
// "change" ({action, alert}) for each alert change and "status" when the connection, the load
// state or the sound setting changes.

import { api, qs, saved } from "./util.js";

const PAGE = 500;
const MAX_PAGES = 4;
const REPEAT_MS = 20000;
const REFETCH_MS = 5000;

const STATUS_RANK = { firing: 0, acknowledged: 1, resolved: 2 };
const SIGNAL_RANK = { alarm: 0, supervisory: 1, trouble: 2 };
const SEVERITY_RANK = { critical: 0, major: 1, minor: 2, warning: 3, info: 4 };

/** The board's order: open before resolved; open ones by severity (an acknowledged fire stays
 * above every warning until it is resolved), then firing before acknowledged, alarms before
 * the rest, then oldest first; resolved ones newest first. */
export function byPriority(a, b) {
  const open = a.status !== "resolved";
  return (Number(a.status === "resolved") - Number(b.status === "resolved"))
    || (open ? SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity] : 0)
    || (STATUS_RANK[a.status] - STATUS_RANK[b.status])
    || (open ? SIGNAL_RANK[a.signal] - SIGNAL_RANK[b.signal] : 0)
    || (open ? Date.parse(a.started_at) - Date.parse(b.started_at) : 0)
    || (open ? 0 : Date.parse(b.resolved_at) - Date.parse(a.resolved_at))
    || a.id - b.id;
}

class Live extends EventTarget {
  constructor() {
    super();
    this.alerts = new Map();
    this.connected = false;
    /** The open alerts have been fetched since sign-in: until then an empty list means nothing. */
    this.loaded = false;
    /** The last fetch failed (another follows in REFETCH_MS). */
    this.loadFailed = false;
    /** Counts the sign-ins: a fetch begun before a sign-out lands nowhere. */
    this.session = 0;
    this.again = false;
    this.truncated = false;
    this.muted = saved.get("muted") === "1";
    this.audio = null;
    this.es = null;
    this.backoff = 1000;
    this.fetching = null;
    this.during = [];
    this.stopped = true;
    this.reminder = null;
    /** Alerts the signed-in role does not act on (a guard's low batteries): not counted in the
     * title and the banner, and never a reason to sound. */
    this.ignore = () => false;
  }

  start() {
    this.stopped = false;
    this.connect();
    // at once, not only when the stream opens: a stream slow to connect (or kept from it by a
    // proxy) must not keep the open alerts off the board; the stream's opening fetches again
    this.refetch();
    this.reminder ??= setInterval(() => this.remind(), REPEAT_MS);
  }

  /** Close the stream for good (signed out). */
  stop() {
    this.stopped = true;
    if (this.es) this.es.close();
    this.es = null;
    this.alerts = new Map();
    this.session++;
    this.fetching = null;
    this.again = false;
    this.loaded = false;
    this.loadFailed = false;
    this.setConnected(false);
  }

  connect() {
    if (this.stopped) return;
    const es = new EventSource("/api/stream");
    this.es = es;
    es.addEventListener("open", () => {
      this.backoff = 1000;
      this.setConnected(true);
      // a fetch begun before the stream opened may have missed what changed in between
      if (this.fetching) this.again = true;
      this.refetch();
    });
    es.addEventListener("alert", (e) => this.onEvent(JSON.parse(e.data)));
    es.addEventListener("resync", () => this.refetch());
    es.addEventListener("error", () => {
      es.close();
      if (this.es !== es) return;
      this.setConnected(false);
      // refused because the session ended? then sign in again rather than retry for ever
      fetch("/api/auth/me", { credentials: "same-origin" }).then((r) => {
        if (r.status === 401) document.dispatchEvent(new CustomEvent("signedout"));
      }, () => { /* unreachable: the retry below tells */ });
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 15000);
    });
  }

  setConnected(on) {
    this.connected = on;
    this.emit("status");
  }

  /** Fetch every open alert again (events arriving meanwhile are applied on top). */
  async refetch() {
    if (this.stopped) return undefined;
    if (this.fetching) return this.fetching;
    this.during = [];
    const session = this.session;
    const fetching = (async () => {
      const fresh = new Map();
      let total = 0;
      try {
        for (let page = 0; page < MAX_PAGES; page++) {
          const r = await api(`/api/alerts${qs({ status: ["firing", "acknowledged"], limit: PAGE, offset: page * PAGE })}`);
          r.items.forEach((a) => fresh.set(a.id, a));
          total = r.total;
          if (fresh.size >= total || r.items.length < PAGE) break;
        }
      } catch {
        if (session !== this.session) return;
        this.fetching = null;
        this.again = false;
        this.loadFailed = true;
        this.emit("status");
        setTimeout(() => { if (session === this.session) this.refetch(); }, REFETCH_MS);
        return;
      }
      if (session !== this.session) return;
      this.fetching = null;
      this.alerts = fresh;
      this.truncated = total > fresh.size;
      for (const ev of this.during) this.apply(ev);
      this.during = [];
      this.loaded = true;
      this.loadFailed = false;
      this.emit("change", { action: "refetch", alert: null });
      if (this.again) {
        this.again = false;
        this.refetch();
      }
    })();
    this.fetching = fetching;
    return fetching;
  }

  onEvent(ev) {
    if (this.fetching) this.during.push(ev);
    this.apply(ev);
    this.emit("change", ev);
    if (ev.action === "raised" && !this.ignore(ev.alert)) this.beep(ev.alert.signal === "alarm" ? "alarm" : "soft");
  }

  /** Put an alert as the server now has it; an older copy never replaces a newer one. */
  apply(ev) {
    const a = ev.alert;
    const known = this.alerts.get(a.id);
    if (known && Date.parse(known.updated_at) > Date.parse(a.updated_at)) return;
    if (a.status === "resolved") this.alerts.delete(a.id);
    else this.alerts.set(a.id, a);
  }

  /** An alert as an action returned it (before its event arrives). */
  put(alert) {
    this.apply({ alert });
    this.emit("change", { action: "local", alert });
  }

  open() { return [...this.alerts.values()].sort(byPriority); }

  counts() {
    let firing = 0;
    let alarms = 0;
    for (const a of this.alerts.values()) {
      if (a.status !== "firing" || this.ignore(a)) continue;
      firing++;
      if (a.signal === "alarm") alarms++;
    }
    return { firing, alarms, open: this.alerts.size };
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  // -------------------------------------------------------------- sound (WebAudio, no files)

  /** Browsers start audio only from a user's gesture: call from a click. */
  unlock() {
    try {
      this.audio ??= new AudioContext();
      if (this.audio.state === "suspended") this.audio.resume().then(() => this.emit("status"));
    } catch { /* no audio here */ }
    this.emit("status");
  }

  get audible() { return !this.muted && this.audio !== null && this.audio.state === "running"; }

  setMuted(m) {
    this.muted = m;
    saved.set("muted", m ? "1" : null);
    if (!m) this.unlock();
    this.emit("status");
  }

  beep(kind) {
    if (!this.audible) return;
    const ctx = this.audio;
    const tones = kind === "alarm" ? [988, 740, 988, 740, 988, 740] : [660, 880];
    let t0 = ctx.currentTime + 0.02;
    for (const f of tones) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = kind === "alarm" ? "square" : "sine";
      osc.frequency.value = f;
      gain.gain.setValueAtTime(0.0001, t0);
      gain.gain.exponentialRampToValueAtTime(kind === "alarm" ? 0.25 : 0.15, t0 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.16);
      osc.connect(gain).connect(ctx.destination);
      osc.start(t0);
      osc.stop(t0 + 0.18);
      t0 += 0.2;
    }
  }

  /** Alarms nobody acknowledged keep sounding until someone does (or the sound is muted). */
  remind() {
    if (this.counts().alarms > 0) this.beep("alarm");
  }
}

export const live = new Live();
