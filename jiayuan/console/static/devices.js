// Devices: health by building (online, offline, silent, battery, last seen, never heard),
// the devices of a building, unregistered devices, and one device with its readings.

import { alertCard } from "./board.js";
import { bucketSeries, lineChart } from "./chart.js";
import { fact } from "./alert.js";
import { getLang, t, UNITS } from "./i18n.js";
import { api, buildingName, compoundName, deviceLink, h, loading, num, place, qs, saved, unitName, when, who } from "./util.js";

export const METRICS = {
  wearable: ["heart_rate", "spo2", "skin_temp_c", "steps", "battery"],
  smoke: ["obscuration_pct_m", "temperature_c", "co_ppm", "battery"],
  gate: [],
};
const RANGES = [[1, "1h"], [6, "6h"], [24, "24h"]];

function counter(n, label, cls) {
  return h("span", { class: ["count", n > 0 && cls] }, h("b", { text: num(n) }), " ", label);
}

/** Only what is wrong, so a building with trouble stands out among forty fine ones. */
function troubles(p) {
  const shown = [["offline", "bad"], ["silent", "bad"], ["low_battery", "warn"], ["never_seen", "warn"]]
    .filter(([k]) => p[k] > 0).map(([k, cls]) => counter(p[k], t(k), cls));
  return shown.length ? shown : h("span", { class: "count good", text: `✓ ${t("all_fine")}` });
}

export function stateDot(d) {
  const state = d.online === true ? "online" : d.online === false ? "offline" : d.last_seen ? "no_status" : "never_seen";
  return h("span", { class: ["dot", `dot-${state}`], title: t(state) }, t(state));
}

function deviceRow(d) {
  return h("li", { class: "device-row" },
    deviceLink(d.device_id),
    h("span", { class: "muted nobr", text: `${t(`kinds.${d.kind}`)}${d.unit ? ` · ${unitName(d.unit)}` : d.name ? ` · ${d.name}` : ""}` }),
    stateDot(d),
    h("span", { text: d.battery == null ? "" : `${t("battery")} ${num(d.battery)}%`, class: d.battery != null && d.battery < 20 ? "warn-text" : "" }),
    h("span", { class: "muted" }, t("last_seen"), " ", when(d.last_seen, false)));
}

async function devicesOf(p) {
  if (p.building) {
    return (await api(`/api/devices${qs({ building: p.building, limit: 500 })}`)).items;
  }
  const gates = (await api(`/api/devices${qs({ kind: "gate", limit: 500 })}`)).items;
  return gates.filter((d) => !d.building && d.compound === p.compound && d.registered);
}

function hasTrouble(p) { return p.offline + p.silent + p.low_battery + p.never_seen > 0; }

function placeCard(p) {
  const list = h("ul", { class: "device-list", hidden: true });
  const own = p.name && /[\u3400-\u9fff]/.test(p.name) === (getLang() === "zh") && !/^Building \d+$/.test(p.name) ? ` ${p.name}` : "";
  const title = p.building ? `${p.compound ? `${compoundName(p.compound)} · ` : ""}${buildingName(p.building)}${own}`
    : t("entrance", { c: compoundName(p.compound || "") });
  const toggle = h("button", { type: "button", class: "link", "aria-expanded": "false", text: title });
  toggle.addEventListener("click", async () => {
    const open = list.hidden;
    list.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open && !list.childElementCount) {
      list.append(h("li", { class: "muted loading", text: t("loading") }));
      try {
        list.replaceChildren(...(await devicesOf(p)).map(deviceRow));
      } catch (e) {
        list.replaceChildren(h("li", { class: "error", text: e.message }));
      }
    }
  });
  return h("article", { class: ["card", "place", hasTrouble(p) ? "has-trouble" : "all-good"] },
    h("h3", {}, toggle),
    h("p", { class: "muted" }, Object.entries(p.kinds).map(([k, n]) => `${t(`kinds.${k}`)} ${n}`).join(" · ")),
    h("p", { class: "counts" }, counter(p.online, t("online"), "good"), troubles(p)),
    h("p", { class: "muted" }, t("last_seen"), " ", when(p.last_seen, false)),
    list);
}

export function render(root) {
  const fail = loading(root);
  let onlyTrouble = saved.get("only_trouble") === "1";
  async function load() {
    let summary;
    let unregistered;
    try {
      [summary, unregistered] = await Promise.all([
        api("/api/fleet/summary"), api(`/api/devices${qs({ registered: false, limit: 100 })}`),
      ]);
    } catch (e) {
      fail(e, load);
      return;
    }
    const sum = (k) => summary.places.reduce((n, p) => n + p[k], 0);
    root.replaceChildren(h("div", { class: "stack" },
      h("section", { class: "card" },
        h("h2", { text: t("devices_title") }),
        h("p", { class: "counts big" },
          counter(summary.registered, t("registered")), counter(sum("online"), t("online"), "good"),
          counter(sum("offline"), t("offline"), "bad"), counter(sum("silent"), t("silent"), "bad"),
          counter(sum("low_battery"), t("low_battery"), "warn"), counter(sum("never_seen"), t("never_seen"), "warn"),
          counter(summary.unregistered, t("unregistered"), "warn"))),
      h("label", { class: "check" }, h("input", {
        type: "checkbox", checked: onlyTrouble,
        onchange: (e) => { onlyTrouble = e.target.checked; saved.set("only_trouble", onlyTrouble ? "1" : null); load(); },
      }), ` ${t("only_trouble")}`),
      h("div", { class: "grid places" }, summary.places.filter((p) => !onlyTrouble || hasTrouble(p)).map(placeCard)),
      h("section", { class: "card", id: "unregistered" },
        h("h3", {}, `${t("unregistered")} (${summary.unregistered})`,
          summary.unregistered && who.me && ["admin", "manager", "operator", "district_manager"].includes(who.me.role)
            ? [" · ", h("a", { href: "#/commission", "data-act": "to-commission", text: t("commission.register") })] : null),
        unregistered.items.length ? h("ul", { class: "device-list" }, unregistered.items.map(deviceRow)) : h("p", { class: "muted", text: t("none") }))));
  }
  load();
}

// ------------------------------------------------------------------ one device

export function readingsBlock(deviceId, kind, { hours = 6, metric = null } = {}) {
  const metrics = METRICS[kind] || [];
  const box = h("div", { class: "readings" });
  let chosen = metric || metrics[0];
  let range = hours;
  const chartBox = h("div");
  const buttons = h("div", { class: "seg" });

  async function draw() {
    buttons.replaceChildren(
      ...metrics.map((m) => h("button", { type: "button", "aria-pressed": String(m === chosen), onclick: () => { chosen = m; draw(); }, text: t(`metrics.${m}`) })),
      h("span", { class: "sep" }),
      ...RANGES.map(([hrs, label]) => h("button", { type: "button", "aria-pressed": String(hrs === range), onclick: () => { range = hrs; draw(); }, text: label })));
    if (!chosen) { chartBox.replaceChildren(); return; }
    const to = Date.now();
    const from = to - range * 3600e3;
    chartBox.replaceChildren(h("p", { class: "muted loading", text: t("loading") }));
    try {
      const r = await api(`/api/devices/${deviceId}/readings${qs({ metric: chosen, step: "1m", since: new Date(from).toISOString(), limit: 10000 })}`);
      const label = t(`metrics.${chosen}`);
      chartBox.replaceChildren(r.items.length
        ? lineChart({ series: [bucketSeries(r.items, label, "s0")], from, to, unit: UNITS[chosen], label })
        : h("p", { class: "muted", text: t("no_readings") }));
    } catch (e) {
      chartBox.replaceChildren(h("p", { class: "error", text: e.message }));
    }
  }
  box.append(buttons, chartBox);
  draw();
  return box;
}

export function renderDevice(root, [id]) {
  const fail = loading(root);
  async function load() {
    let d;
    let events;
    try {
      [d, events] = await Promise.all([
        api(`/api/devices/${id}`),
        api(`/api/devices/${id}/readings${qs({ since: new Date(Date.now() - 864e5).toISOString(), limit: 10000 })}`)
          .catch((e) => { if (e.status === 403) return null; throw e; }), // health data: not theirs
      ]);
    } catch (e) {
      fail(e, load);
      return;
    }
    const hidden = events === null;
    const evs = hidden ? [] : events.items.filter((r) => r.stream !== "telemetry").slice(-20).reverse();
    root.replaceChildren(h("div", { class: "stack" },
      h("section", { class: "card" },
        h("h2", {}, h("span", { class: "mono nobr", text: d.device_id }), " ", h("small", { class: "muted nobr", text: t(`kinds.${d.kind}`) })),
        h("dl", { class: "facts" },
          fact(t("where"), place(d), d.floor != null ? ` · ${t("floor_n", { n: d.floor })}` : "", d.name ? ` · ${d.name}` : ""),
          d.resident_id ? fact(t("resident"), h("a", { href: `#/residents/${d.resident_id}`, class: "mono", text: d.resident_id })) : null,
          fact(t("registered"), d.registered ? "✓" : "✗"),
          fact(t("state_since"), stateDot(d), " ", when(d.state_since, false)),
          fact(t("last_seen"), when(d.last_seen)),
          fact(t("first_seen"), when(d.first_seen)),
          d.battery != null ? fact(t("battery"), `${num(d.battery)}%`) : null,
          d.fw ? fact(t("fw"), d.fw) : null)),
      d.open_alerts.length ? h("section", {}, h("h3", { text: t("open_alerts") }), h("div", { class: "grid alerts" }, d.open_alerts.map((a) => alertCard(a)))) : null,
      hidden ? h("p", { class: "notice", text: t("health_hidden") }) : null,
      METRICS[d.kind].length && !hidden ? h("section", { class: "card" }, readingsBlock(d.device_id, d.kind)) : null,
      hidden ? null : h("section", { class: "card" }, h("h3", { text: t("recent_events") }),
        evs.length ? h("ul", { class: "events" }, evs.map((r) => h("li", {}, when(r.ts), " · ", h("strong", { text: t(`ev.${r.event || r.stream}`) }))))
          : h("p", { class: "muted", text: t("none") }))));
  }
  load();
}
