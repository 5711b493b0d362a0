// A wearer's usual reading at an hour of the day, beside the reading (GET
// /api/devices/{id}/baseline: health data, the wearer's caretakers only). Asked for only by a
// caretaker of the wearer; anyone else is shown nothing (and nothing is asked).

import { t, UNITS } from "./i18n.js";
import { api, h, num, who } from "./util.js";

/** The local hour of `ms` in the time zone `tz`. */
function hourIn(ms, tz) {
  const text = new Intl.DateTimeFormat("en-GB", { timeZone: tz, hour: "2-digit", hourCycle: "h23" }).format(new Date(ms));
  return Number(text) % 24;
}

/** A caretaker reading one of their own wearers (`caretakers` given: must include them). */
export function mayAsk(caretakers = null) {
  const me = who.me;
  if (!me || me.role !== "caretaker") return false;
  return caretakers === null || caretakers.includes(me.staff_id);
}

/** "本人平时这个时段：72 ± 4 次/分" for `deviceId`'s `metric` at the hour of `atMs`, or null
 * (not asked, or refused: then nothing is shown). */
export async function usualLine(deviceId, metric, atMs = Date.now()) {
  let b;
  try {
    b = await api(`/api/devices/${deviceId}/baseline?metric=${metric}`);
  } catch {
    return null;
  }
  const hour = b.hours[hourIn(atMs, b.timezone)] || b.now;
  const unit = UNITS[metric] || "";
  const at = `${String(hour.hour).padStart(2, "0")}:00`;
  if (hour.median == null) {
    return h("p", { class: "usual muted", "data-field": "baseline" }, t("usual_unknown", { min: b.min_days, at, m: t(`metrics.${metric}`) }));
  }
  return h("p", { class: "usual", "data-field": "baseline", title: t("usual_how", { days: b.days, n: hour.days }) },
    h("span", { class: "usual-label", text: t("usual_at", { at, m: t(`metrics.${metric}`) }) }), " ",
    h("b", { class: "nobr", text: `${num(hour.median)} ± ${num(hour.spread)} ${unit}` }),
    h("small", { class: "muted", text: ` ${t("usual_days", { days: b.days })}` }));
}
