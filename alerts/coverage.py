"""The duty coverage check: for every escalation chain and every place it can page for (each
building; each compound's entrance for the chains of gate alerts), who would be paged first
at each half hour of a week, and the hours where nobody would be — before an alert finds out.

It asks the same planner as the paging stage (:func:`alerts.planning.plan`) with the same
router, so what it says is what would happen. Alerts of a resident are checked for every
group of residents of the building with the same caretakers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, cast
from zoneinfo import ZoneInfo

from alerts.escalation import Chain, Chains
from alerts.messages import SYSTEM_ALERTS
from alerts.model import Alert
from alerts.planning import plan, urgent
from alerts.routing import Router, Target, on_duty
from registry.models import Registry
from rules.transitions import Route, Severity, Signal

SLOT_S: Final = 1800
SLOTS: Final = 7 * 24 * 3600 // SLOT_S
DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_FIRST: Final = 6


@dataclass(frozen=True, slots=True)
class Sample:
    rule_id: str
    kind: str
    severity: str
    signal: str
    route: str


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    """Half hours since Monday 00:00 (local time)."""
    end: int
    first: tuple[str, ...]
    """Who would be paged first (at most :data:`MAX_FIRST`); empty: nobody."""
    step: int
    """The chain step (1-based) that pages them; 0 when nobody."""
    fallback: bool = False
    residents: int = 0
    """For a hole of a resident's alert: how many residents of the place it leaves alone."""

    @property
    def label(self) -> str:
        return f"{slot_label(self.start)}–{slot_label(self.end, end=True)}"


@dataclass(slots=True)
class Line:
    chain_id: str
    route: str
    rule_id: str
    place: str
    """A building, or ``entrance:<compound>``."""
    spans: list[Span] = field(default_factory=list)
    holes: list[Span] = field(default_factory=list)


def slot_label(slot: int, *, end: bool = False) -> str:
    if end and slot % (SLOTS) == 0:
        return "Mon 00:00" if slot == 0 else "Sun 24:00"
    day, rest = divmod(slot % SLOTS, 48)
    return f"{DAYS[day]} {rest // 2:02d}:{30 * (rest % 2):02d}"


def samples(rules: Iterable[Sample], chains: Chains) -> list[tuple[str, Sample]]:
    """One alert kind per chain it would use (the first rule of the pack that selects it), and
    one more for a compound's entrance when gates use it."""
    out: dict[tuple[str, bool], Sample] = {}
    for s in rules:
        for severity in (s.severity, "critical") if s.route == "caretaker" else (s.severity,):
            variant = Sample(s.rule_id, s.kind, severity, s.signal, s.route)
            chain = chains.select(_alert(variant, {}))
            out.setdefault((chain.id, s.kind == "gate"), variant)
    return [(chain_id, sample) for (chain_id, _), sample in out.items()]


def rule_samples(rules: Iterable[object]) -> list[Sample]:
    """The rule pack's rules and the alerts jiayuan raises itself, as samples."""
    out = [
        Sample(r.id, r.kind, r.severity, r.signal, r.route)  # type: ignore[attr-defined]
        for r in rules
    ]
    out += [Sample(rid, *spec) for rid, spec in SYSTEM_ALERTS.items()]
    return out


def check(
    registry: Registry,
    chains: Chains,
    tz: ZoneInfo,
    rules: Iterable[object],
    *,
    week_of: datetime | None = None,
) -> list[Line]:
    """The coverage of every chain and place across the week of ``week_of`` (default: this
    week)."""
    router = Router(registry, tz)
    ref = (week_of or datetime.now(tz)).astimezone(tz)
    monday = (ref - timedelta(days=ref.weekday())).replace(hour=0, minute=0, second=0)
    monday = monday.replace(microsecond=0)
    starts = [(monday + timedelta(seconds=i * SLOT_S)).timestamp() for i in range(SLOTS)]
    staff = list(registry.staff.values())
    signatures = [
        frozenset(s.staff_id for s in staff if on_duty(s, datetime.fromtimestamp(t, tz)))
        for t in starts
    ]
    groups = _resident_groups(registry)
    lines: list[Line] = []
    for chain_id, sample in samples(rule_samples(rules), chains):
        chain = chains.by_id[chain_id]
        per_resident = any(sel.startswith("own_caretaker") for st in chain.steps for sel in st.to)
        for place, labels in _places(registry, sample):
            options = (
                [labels | {"resident_id": rid} for rid, _ in groups.get(place, ())]
                if per_resident
                else [labels]
            )
            weights = [n for _, n in groups.get(place, ())] if per_resident else [0]
            if not options:
                continue
            line = Line(chain_id, sample.route, sample.rule_id, place)
            cache: dict[frozenset[str], tuple[tuple[str, ...], int, bool, int, bool]] = {}
            for slot, (t, sig) in enumerate(zip(starts, signatures, strict=True)):
                if sig not in cache:
                    cache[sig] = _first(chain, sample, options, weights, router, t)
                first, step, fallback, left, hole = cache[sig]
                _extend(line.spans, slot, first, step, fallback, 0)
                if hole:
                    _extend(line.holes, slot, (), 0, False, left)
            lines.append(line)
    return lines


def holes(lines: Sequence[Line]) -> list[tuple[Line, Span]]:
    return [(line, h) for line in lines for h in line.holes]


def grouped(lines: Sequence[Line]) -> list[tuple[list[str], Line]]:
    """Lines of one chain that read the same at several places, once with those places."""
    out: dict[tuple[object, ...], tuple[list[str], Line]] = {}
    for line in lines:
        key = (line.chain_id, line.rule_id, tuple(line.spans), tuple(line.holes))
        if key in out:
            out[key][0].append(line.place)
        else:
            out[key] = ([line.place], line)
    return list(out.values())


def places_label(places: Sequence[str], most: int = 8) -> str:
    more = f" and {len(places) - most} more" if len(places) > most else ""
    return ", ".join(places[:most]) + more


def _first(
    chain: Chain,
    sample: Sample,
    options: list[dict[str, str]],
    weights: list[int],
    router: Router,
    at: float,
) -> tuple[tuple[str, ...], int, bool, int, bool]:
    """(first paged, step, fallback used, residents left alone, a hole)."""
    firsts: list[str] = []
    step, fallback, left, hole = 0, False, 0, False
    for labels, weight in zip(options, weights, strict=True):
        a = _alert(sample, labels)
        p = plan(chain, 0, _resolver(router, a, at), (), urgent=urgent(a))
        if p.unreached:
            left += weight
            hole = True
            continue
        step = max(step, p.step + 1)
        fallback = fallback or p.fallback
        firsts += [t.staff_id for t in p.targets if t.staff_id not in firsts]
    if not firsts:
        return (), 0, False, left, True
    return tuple(firsts[:MAX_FIRST]), step, fallback, left, hole


def _resolver(router: Router, a: Alert, at: float) -> Callable[[Sequence[str]], list[Target]]:
    return lambda sels: router.resolve(sels, a, at)


def _extend(
    spans: list[Span],
    slot: int,
    first: tuple[str, ...],
    step: int,
    fallback: bool,
    residents: int,
) -> None:
    last = spans[-1] if spans else None
    if (
        last is not None
        and last.end == slot
        and (last.first, last.step, last.fallback, last.residents)
        == (first, step, fallback, residents)
    ):
        spans[-1] = Span(last.start, slot + 1, first, step, fallback, residents)
    else:
        spans.append(Span(slot, slot + 1, first, step, fallback, residents))


def _places(registry: Registry, s: Sample) -> list[tuple[str, dict[str, str]]]:
    """Each building; for a gate alert, the buildings with a gate and each compound's
    entrance."""
    buildings = sorted(registry.buildings.values(), key=lambda b: b.building)
    if s.kind == "gate":
        gated = {d.building for d in registry.devices.values() if d.kind == "gate"}
        buildings = [b for b in buildings if b.building in gated]
    out = [
        (b.building, {"community": registry.community, "compound": b.compound,
                      "building": b.building})
        for b in buildings
    ]  # fmt: skip
    if s.kind == "gate":
        compounds = sorted({b.compound for b in registry.buildings.values()})
        out += [(f"entrance:{c}", {"community": registry.community, "compound": c})
                for c in compounds]  # fmt: skip
    return out


def _resident_groups(registry: Registry) -> dict[str, list[tuple[str, int]]]:
    """Per building: one resident of each group sharing the same caretakers, and its size."""
    seen: dict[tuple[str, tuple[str, ...]], list[str]] = defaultdict(list)
    for r in sorted(registry.residents.values(), key=lambda r: r.resident_id):
        seen[(r.building, r.caretakers)].append(r.resident_id)
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for (building, _), ids in seen.items():
        out[building].append((ids[0], len(ids)))
    return dict(out)


def _alert(s: Sample, labels: dict[str, str]) -> Alert:
    return Alert(
        id=0,
        fingerprint=f"{s.rule_id}:coverage",
        rule_id=s.rule_id,
        device_id="coverage",
        kind=s.kind,
        severity=cast(Severity, s.severity),
        signal=cast(Signal, s.signal),
        route=cast(Route, s.route),
        summary="",
        status="firing",
        labels=labels,
        started_at=0.0,
        last_match_at=0.0,
        raised_at=0.0,
        updated_at=0.0,
    )


def report(lines: Sequence[Line]) -> str:
    """Plain text for the command: each chain and place, who is paged first when, and holes."""
    out: list[str] = []
    for places, line in grouped(lines):
        where = places_label(places, 12)
        out.append(f"{line.chain_id} ({line.route}, e.g. {line.rule_id}) at {where}:")
        for s in line.spans:
            who = ", ".join(s.first) if s.first else "NOBODY"
            how = f" (step {s.step}{', fallback' if s.fallback else ''})" if s.first else ""
            out.append(f"  {s.label:<22} {who}{how}")
        for h in line.holes:
            whom = f" for {h.residents} residents" if h.residents else ""
            out.append(f"  HOLE {h.label}: nobody would be paged{whom}")
    return "\n".join(out)
