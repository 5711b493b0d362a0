// Duty coverage (managers, admins, operators): from /api/duty/coverage, the hours of the week
// where nobody would be paged — in words, at the top — then, per route (escalation chain) and
// place, who would be paged first across the week. No holes: one line saying so.

import { getLang, t } from "./i18n.js";
import { api, buildingName, compoundName, h, loading } from "./util.js";

const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const ROUTES = ["security", "caretaker", "manager", "operator"];

/** ``Mon 08:00`` → [day index, "08:00"]. */
function parse(label) {
  const [day, time] = label.split(" ");
  return [DAYS.indexOf(day), time];
}

/** A span of the week in words: "周五 18:00–次日09:00", "周一 08:00–17:00", "整周". */
export function spanWords(start, end) {
  if (start === "Mon 00:00" && end === "Sun 24:00") return t("duty_all_week");
  const [d0, t0] = parse(start);
  let [d1, t1] = parse(end);
  if (t1 === "00:00" && d1 >= 0) { d1 = (d1 + 6) % 7; t1 = "24:00"; } // ends at midnight: that day's end
  const day = (d) => t(`duty_days.${DAYS[d]}`);
  const sep = getLang() === "zh" ? "" : " ";
  if (d1 === d0) return `${day(d0)} ${t0}–${t1}`;
  if (d1 === (d0 + 1) % 7 && t1 !== "24:00") return `${day(d0)} ${t0}–${t("duty_next_day")}${sep}${t1}`;
  return `${day(d0)} ${t0}–${day(d1)} ${t1}`;
}

function placeName(p) {
  return p.startsWith("entrance:") ? t("duty_entrance", { c: compoundName(p.slice(9)) }) : buildingName(p);
}

function routeName(r) {
  return t(`duty_routes.${r}`);
}

/** The holes over all lines, one sentence per route and span of the week, with its places. */
function holeLines(items) {
  const groups = new Map();
  for (const line of items) {
    for (const hole of line.holes) {
      const key = `${line.route}|${hole.start}|${hole.end}`;
      const g = groups.get(key) || { route: line.route, start: hole.start, end: hole.end, places: new Set(), residents: 0 };
      g.places.add(line.place);
      g.residents += hole.residents;
      groups.set(key, g);
    }
  }
  const order = (g) => [ROUTES.indexOf(g.route), DAYS.indexOf(g.start.split(" ")[0]), g.start];
  return [...groups.values()].sort((a, b) => {
    const [x, y] = [order(a), order(b)];
    return x[0] - y[0] || x[1] - y[1] || x[2].localeCompare(y[2]);
  });
}

function places(set) {
  return [...set].sort((x, y) => x.localeCompare(y, undefined, { numeric: true })).map(placeName).join(getLang() === "zh" ? "、" : ", ");
}

function holesSection(items) {
  const groups = holeLines(items);
  if (!groups.length) {
    return h("p", { class: "notice duty-ok", "data-field": "duty-holes", text: t("duty_no_holes") });
  }
  return h("section", { class: "notice error duty-holes", "data-field": "duty-holes" },
    h("h3", { text: t("duty_holes_title", { n: groups.length }) }),
    h("ul", {}, groups.map((g) => h("li", {},
      h("b", { class: "nobr", text: spanWords(g.start, g.end) }), " ",
      t("duty_nobody", { route: routeName(g.route) }),
      h("span", { class: "muted" }, ` (${places(g.places)})`, g.residents ? ` · ${t("duty_residents", { n: g.residents })}` : "")))));
}

function who(span) {
  if (!span.first.length) return h("span", { class: "bad", text: t("duty_nobody_short") });
  return [span.first.map((id, i) => [i ? ", " : null, h("span", { class: "mono nobr", text: id })]),
    h("span", { class: "muted", text: ` · ${span.fallback ? t("duty_fallback") : t("duty_step", { n: span.step })}` })];
}

function routeSection(route, lines) {
  return h("section", { class: "card", "data-route": route },
    h("h3", { text: routeName(route) }),
    h("div", { class: "table-wrap" }, h("table", { class: "review-table duty-table" },
      h("thead", {}, h("tr", {}, [t("duty_place"), t("duty_chain"), t("duty_first")].map((c) => h("th", { text: c })))),
      h("tbody", {}, lines.map((line) => h("tr", { class: line.holes.length ? "hole" : "" },
        h("td", { class: "nobr", text: placeName(line.place) }),
        h("td", {}, h("span", { class: "mono", text: line.chain_id }), h("br"),
          h("small", { class: "muted", text: t(`rules.${line.rule_id}`) })),
        h("td", {}, h("ul", { class: "duty-spans" }, line.spans.map((sp) => h("li", {},
          h("span", { class: "nobr", text: spanWords(sp.start, sp.end) }), ": ", who(sp)))))))))));
}

export function render(root) {
  const out = h("div", { class: "stack" });
  root.replaceChildren(h("section", { class: "stack duty" },
    h("h2", { text: t("duty_title") }),
    h("p", { class: "muted", text: t("duty_intro") }),
    out));

  async function load() {
    const fail = loading(out);
    try {
      const data = await api("/api/duty/coverage");
      const byRoute = new Map();
      for (const line of data.items) {
        if (!byRoute.has(line.route)) byRoute.set(line.route, []);
        byRoute.get(line.route).push(line);
      }
      const routes = [...byRoute.keys()].sort((a, b) => ROUTES.indexOf(a) - ROUTES.indexOf(b));
      for (const lines of byRoute.values()) {
        lines.sort((x, y) => x.place.localeCompare(y.place, undefined, { numeric: true }) || x.chain_id.localeCompare(y.chain_id));
      }
      out.replaceChildren(holesSection(data.items),
        ...(routes.length ? routes.map((r) => routeSection(r, byRoute.get(r))) : [h("p", { class: "muted", text: t("none") })]));
    } catch (e) {
      if (e.status === 404 || e.status === 405) {
        out.replaceChildren(h("p", { class: "notice", "data-field": "duty-absent", text: t("duty_absent") }));
      } else {
        fail(e, load);
      }
    }
  }
  load();
}
