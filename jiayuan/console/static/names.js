// Whom the signed-in person looks after: resident id → display name, from /api/residents, which
// answers names only to a resident's caretakers, managers and admins (a guard gets none, and
// this module never asks). Fetched once per sign-in, again on demand.

import { api, qs, who } from "./util.js";

const PAGE = 500;
let names = new Map();
let loaded = null;

/** Load the names once (resolves when known); later calls return the same promise. */
export function loadNames(again = false) {
  if (loaded && !again) return loaded;
  const me = who.me;
  if (!me || !me.can.includes("residents")) {
    loaded = Promise.resolve(names);
    return loaded;
  }
  loaded = (async () => {
    const fresh = new Map();
    try {
      for (let offset = 0; offset < 20 * PAGE; offset += PAGE) {
        const r = await api(`/api/residents${qs({ limit: PAGE, offset })}`);
        for (const x of r.items) if (x.display_name) fresh.set(x.resident_id, x.display_name);
        if (offset + PAGE >= r.total) break;
      }
      names = fresh;
    } catch { /* no names: ids only */ }
    return names;
  })();
  return loaded;
}

/** A resident's display name, if the signed-in person may know it and it is loaded. */
export function residentName(id) {
  return id ? names.get(id) || "" : "";
}

export function forgetNames() {
  names = new Map();
  loaded = null;
}
