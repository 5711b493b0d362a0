"""The devices, residents and staff of a simulated community — Y community, Lanzhou, by default.

Y: 10 gated compounds, 43 residential buildings, 3,109 households with one smoke detector each,
1,221 elderly residents with a wearable each, an entrance gate per compound and a door gate
per building (53 gates), and the part of its 236 staff that alerts go to.

Ids, readable on a duty sheet:

- buildings ``B17`` (numbered across the community), compounds ``C03``
- households (``unit``) ``17-2-502``: building 17, entrance 2, floor 5, room 02
- smoke detectors ``smk-C03-B17-2-0502``; wearables ``wr-00042``, worn by ``r-00042``
  (residents are pseudonymous; each has a made-up ``display_name`` such as ``王秀英`` for their
  caretakers, and the two of a couple sharing a home always differ)
- gates ``gate-C03-main`` (the compound's entrance) and ``gate-C03-B17`` (the building door)
- staff ``sec-C03-1`` … (guards), ``sec-ctl-1`` (control room), ``care-C03-01`` (caretakers),
  ``care-night-1``, ``mgr-1``, ``mgr-2``, ``ops-1``, ``adm-1``

The community's layout (who lives where, who cares for whom) depends only on the community
and its size, so the registry the service loads and the fleet the simulator plays always agree;
``seed`` drives behaviour: baselines, rhythms, traffic. ``scale`` below 1 (or ``devices``
below the community's 4,383) plays an evenly spread subset of the same devices; above it,
synthetic compounds ``C11``… are added in the same style.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from registry.loader import write_registry
from registry.models import Building, Device, Registry, Resident
from simulators.behaviour import DeviceSim, GateSim, SmokeSim, WearableSim
from simulators.staffing import build_staff

CENTRE: Final = (36.0570, 103.8420)  # Chengguan district, Lanzhou
_SURNAMES: Final = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
_GIVEN: Final = {
    "f": ("秀英", "桂英", "秀兰", "玉兰", "桂兰", "淑珍", "凤英", "玉珍", "素芳", "兰英"),
    "m": ("建国", "国华", "德明", "志强", "文斌", "永福", "振华", "宝山", "国庆", "学文"),
}
NOTIFY: Final = "json://127.0.0.1:8025/notify"


@dataclass(frozen=True, slots=True)
class Size:
    compounds: int
    buildings: int
    households: int
    elderly: int

    @property
    def devices(self) -> int:
        return self.households + self.elderly + self.compounds + self.buildings

    def scaled(self, f: float) -> Size:
        n = [max(1, math.ceil(v * f)) for v in (self.compounds, self.buildings)]
        return Size(n[0], max(n), math.ceil(self.households * f), math.ceil(self.elderly * f))


Y: Final = Size(compounds=10, buildings=43, households=3109, elderly=1221)


@dataclass(frozen=True, slots=True)
class Household:
    compound: str
    building: str
    number: int
    entrance: int
    floor: int
    room: int

    @property
    def unit(self) -> str:
        return f"{self.number}-{self.entrance}-{self.floor}{self.room:02d}"

    @property
    def smoke_id(self) -> str:
        return (
            f"smk-{self.compound}-{self.building}-{self.entrance}-{self.floor:02d}{self.room:02d}"
        )


@dataclass
class Layout:
    buildings: list[Building] = field(default_factory=list)
    position: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Building and compound ids to (lat, lon)."""
    households: list[Household] = field(default_factory=list)
    elderly: list[Household] = field(default_factory=list)
    """The home of each elderly resident, in resident order (couples share one)."""
    thresholds: list[dict[str, float]] = field(default_factory=list)
    zoned: list[bool] = field(default_factory=list)


def _split(total: int, parts: int, rng: random.Random, low: float, high: float) -> list[int]:
    """``total`` split into ``parts`` positive shares of random weight (largest remainder)."""
    weights = [rng.uniform(low, high) for _ in range(parts)]
    raw = [1 + (total - parts) * w / sum(weights) for w in weights]
    shares = [int(x) for x in raw]
    by_rest = sorted(range(parts), key=lambda i: raw[i] - shares[i], reverse=True)
    for i in by_rest[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _shape(households: int) -> tuple[int, int, int]:
    """(floors, entrances, flats per floor and entrance) of a building this size."""
    if households <= 36:
        return 6, math.ceil(households / 12), 2  # walk-up of the 1990s
    if households <= 88:
        return 11, math.ceil(households / 22), 2
    if households <= 216:
        return 18, math.ceil(households / 36), 2
    return 26, math.ceil(households / 104), 4  # tower


def make_layout(
    size: Size, first_compound: int = 1, first_building: int = 1, salt: str = "y"
) -> Layout:
    """Compounds, buildings and households of a community this size, and where its elderly
    residents live; the same for the same size and ``salt``."""
    rng = random.Random(f"layout:{salt}:{size}")
    out = Layout()
    per_compound = _split(size.buildings, size.compounds, rng, 0.6, 1.4)
    per_building = _split(size.households, size.buildings, rng, 0.4, 1.8)
    number = first_building
    for c, n_buildings in enumerate(per_compound):
        compound = f"C{first_compound + c:02d}"
        row, col = divmod(first_compound + c - 1, 4)
        centre = (CENTRE[0] + (row - 1) * 0.006, CENTRE[1] + (col - 1.5) * 0.007)
        out.position[compound] = centre
        for _ in range(n_buildings):
            bid, h = f"B{number:02d}", per_building[number - first_building]
            floors, entrances, flats = _shape(h)
            pos = (
                centre[0] + rng.uniform(-0.0012, 0.0012),
                centre[1] + rng.uniform(-0.0015, 0.0015),
            )
            out.position[bid] = (round(pos[0], 6), round(pos[1], 6))
            out.buildings.append(
                Building(building=bid, compound=compound, floors=floors, name=f"Building {number}")
            )
            flats_all = [
                (e, f, r)
                for e in range(1, entrances + 1)
                for f in range(1, floors + 1)
                for r in range(1, flats + 1)
            ]
            for e, f, r in sorted(rng.sample(flats_all, h)):  # the rest: vacant or unsold
                out.households.append(Household(compound, bid, number, e, f, r))
            number += 1
    homes = rng.sample(out.households, min(len(out.households), math.ceil(size.elderly * 0.8)))
    couples = rng.sample(homes, size.elderly - len(homes)) if len(homes) < size.elderly else []
    order = {h: i for i, h in enumerate(out.households)}
    out.elderly = sorted(homes + couples, key=order.__getitem__)
    for _ in out.elderly:
        t: dict[str, float] = {}
        if rng.random() < 0.12:
            t["heart_rate_high"] = rng.choice((105.0, 110.0, 115.0))
        if rng.random() < 0.05:
            t["spo2_low"] = 88.0  # COPD: a lower SpO2 is this person's normal
        if rng.random() < 0.03:
            t["heart_rate_low"] = 45.0
        out.thresholds.append(t)
        out.zoned.append(rng.random() < 0.06)
    return out


@dataclass
class Fleet:
    """A community's registry and the simulator state of each of its devices."""

    community: str
    seed: int
    registry: Registry
    sims: dict[str, DeviceSim]

    def of_kind(self, kind: str) -> list[DeviceSim]:
        return [s for s in self.sims.values() if kind == s.KIND]

    @property
    def wearables(self) -> list[WearableSim]:
        return [s for s in self.sims.values() if isinstance(s, WearableSim)]

    @property
    def smoke(self) -> list[SmokeSim]:
        return [s for s in self.sims.values() if isinstance(s, SmokeSim)]

    @property
    def gates(self) -> list[GateSim]:
        return [s for s in self.sims.values() if isinstance(s, GateSim)]

    def write(self, directory: Path) -> list[Path]:
        """Write the registry the service should load for this fleet (YAML)."""
        return write_registry(self.registry, directory)

    def natural_rate(self) -> float:
        """Messages per second the fleet sends at speed 1, averaged over a day."""
        periodic = sum(1 / s.INTERVAL for s in self.sims.values())
        return periodic + sum(g.daily_passages for g in self.gates) / 86400


def build_fleet(
    seed: int = 1,
    scale: float = 1.0,
    devices: int | None = None,
    community: str = "y",
    notify: str = NOTIFY,
) -> Fleet:
    """The fleet of Y community, a subset of it, or Y with synthetic compounds added.

    ``devices`` (at least 3) sets the exact number of devices and overrides ``scale``.
    ``notify`` is the base of each staff member's apprise URL (``<notify>/<staff_id>``).
    """
    if devices is not None:
        if devices < 3:
            raise ValueError("a fleet needs at least 3 devices (a gate, a detector, a wearable)")
        scale = devices / Y.devices
    if scale <= 0:
        raise ValueError("scale must be positive")
    layout = make_layout(Y, salt=community)
    if scale > 1:
        more = make_layout(Y.scaled(scale - 1), Y.compounds + 1, Y.buildings + 1, community + "+")
        layout.buildings += more.buildings
        layout.position.update(more.position)
        layout.households += more.households
        layout.elderly += more.elderly
        layout.thresholds += more.thresholds
        layout.zoned += more.zoned
    records = _records(layout)
    residents = records.residents
    staff, caretakers = build_staff(layout.buildings, residents, notify)
    residents = [r.model_copy(update={"caretakers": caretakers[r.resident_id]}) for r in residents]
    devices_all = records.gates + records.smoke + records.wearables
    total = len(devices_all) if devices is None else devices
    if scale < 1 or total != len(devices_all):
        devices_all = _subset(records, total if devices is not None else None, scale)
    worn = {d.resident_id for d in devices_all if d.resident_id}
    registry = Registry(
        community,
        buildings=layout.buildings,
        devices=devices_all,
        residents=[r for r in residents if r.resident_id in worn],
        staff=staff,
    )
    return Fleet(community, seed, registry, _sims(registry, layout, seed))


@dataclass
class _Records:
    gates: list[Device] = field(default_factory=list)
    smoke: list[Device] = field(default_factory=list)
    wearables: list[Device] = field(default_factory=list)
    residents: list[Resident] = field(default_factory=list)


def _records(layout: Layout) -> _Records:
    out = _Records()
    by_compound: dict[str, list[Building]] = defaultdict(list)
    for b in layout.buildings:
        by_compound[b.compound].append(b)
    for compound, buildings in by_compound.items():
        out.gates.append(
            Device(
                device_id=f"gate-{compound}-main",
                kind="gate",
                compound=compound,
                name=f"{compound} main gate",
            )
        )
        out.gates += [
            Device(
                device_id=f"gate-{compound}-{b.building}",
                kind="gate",
                compound=compound,
                building=b.building,
                name=f"{b.name} door",
            )
            for b in buildings
        ]
    for h in layout.households:
        out.smoke.append(
            Device(
                device_id=h.smoke_id,
                kind="smoke",
                compound=h.compound,
                building=h.building,
                unit=h.unit,
                floor=h.floor,
                room=h.unit.rsplit("-", 1)[1],
            )
        )
    homes = zip(layout.elderly, layout.thresholds, layout.zoned, strict=True)
    named: dict[Household, str] = {}
    for i, (h, t, zoned) in enumerate(homes, start=1):
        rid, room = f"r-{i:05d}", h.unit.rsplit("-", 1)[1]
        area = (*layout.position[h.compound], 500.0) if zoned else None
        out.residents.append(
            Resident(
                resident_id=rid,
                display_name=_display_name(h, named),
                building=h.building,
                unit=h.unit,
                floor=h.floor,
                room=room,
                thresholds=t,
                allowed_area=area,
            )
        )
        out.wearables.append(
            Device(
                device_id=f"wr-{i:05d}",
                kind="wearable",
                compound=h.compound,
                building=h.building,
                unit=h.unit,
                floor=h.floor,
                room=room,
                resident_id=rid,
            )
        )
    return out


def _display_name(home: Household, named: dict[Household, str]) -> str:
    """A made-up name for a resident of ``home`` (the same for the same home); the second
    resident of a home (a couple) gets the other sex's name, so the two always differ."""
    rng = random.Random(f"name:{home.building}:{home.unit}")
    first = rng.choice("fm")
    surname = rng.choice(_SURNAMES)
    sex = first
    if home in named:
        sex = "m" if first == "f" else "f"
        surname = rng.choice(_SURNAMES)  # married couples keep their own surnames
    name = surname + rng.choice(_GIVEN[sex])
    named[home] = name
    return name


def _subset(records: _Records, exact: int | None, scale: float) -> list[Device]:
    """An evenly spread choice of each kind, keeping the community's proportions."""
    kinds = [records.gates, records.smoke, records.wearables]
    full = sum(len(k) for k in kinds)
    want = exact if exact is not None else max(3, round(full * scale))
    counts = [max(1, round(len(k) * want / full)) for k in kinds]
    counts[1] = want - counts[0] - counts[2]  # smoke detectors absorb the rounding
    out: list[Device] = []
    for kind, n in zip(kinds, counts, strict=True):
        n = max(0, min(n, len(kind)))
        out += [kind[int(i * len(kind) / n)] for i in range(n)]
    return out


def _sims(registry: Registry, layout: Layout, seed: int) -> dict[str, DeviceSim]:
    households = Counter(h.building for h in layout.households)
    households.update(h.compound for h in layout.households)
    buildings_of: dict[str, list[str]] = defaultdict(list)
    for b in layout.buildings:
        buildings_of[b.compound].append(b.building)
    sims: dict[str, DeviceSim] = {}
    for d in registry.devices.values():
        rng = random.Random(f"{seed}:{d.device_id}")
        c, sid = registry.community, d.device_id
        if d.kind == "wearable" and d.resident_id is not None:
            sims[sid] = _wearable(c, sid, registry.residents[d.resident_id], layout, rng)
        elif d.kind == "smoke":
            epoch = rng.random() < 0.3
            sims[sid] = SmokeSim(
                c,
                sid,
                rng,
                "SD-1.7.5" if epoch else "SD-1.8.2",
                "epoch_ms" if epoch else "rfc3339",
                unit=d.unit or "",
                obscuration_base=rng.uniform(0.01, 0.05),
                temp_offset=rng.gauss(0, 1),
                gas_stove=rng.random() < 0.7,
                battery=rng.uniform(15, 19.9) if rng.random() < 0.005 else rng.uniform(55, 100),
            )
        elif d.kind == "gate":
            scope = buildings_of[d.compound] if d.building is None else [d.building]
            n = households[d.building or d.compound]
            epoch = rng.random() < 0.2
            sims[sid] = GateSim(
                c,
                sid,
                rng,
                "GT-5.0.3" if epoch else "GT-5.1.0",
                "epoch_ms" if epoch else "rfc3339",
                daily_passages=n * (4.0 if d.building else 4.3),
                credential_scope=tuple(scope),
                people_per_building=max(1, int(2.7 * n / len(scope))),
            )
    return sims


def _wearable(
    community: str, sid: str, r: Resident, layout: Layout, rng: random.Random
) -> WearableSim:
    t = r.thresholds
    base = min(max(64.0, rng.gauss(72, 5)), 84.0, t.get("heart_rate_high", 120.0) - 35)
    base = max(base, t.get("heart_rate_low", 0.0) + 25)
    copd = "spo2_low" in t
    epoch = rng.random() < 0.6
    lat, lon = layout.position[r.building]
    return WearableSim(
        community,
        sid,
        rng,
        "WR-2.3.1" if epoch else "WR-2.4.0",
        "epoch_ms" if epoch else "rfc3339",
        resident_id=r.resident_id,
        home=(lat + rng.uniform(-1e-4, 1e-4), lon + rng.uniform(-1e-4, 1e-4)),
        hr_base=base,
        hr_sd=rng.uniform(1.5, 3.0),
        night_dip=rng.uniform(6, 10),
        spo2_base=rng.uniform(91, 93.5) if copd else rng.uniform(95, 98),
        spo2_floor=89 if copd else 92,
        skin_base=rng.uniform(32.5, 34.5),
        steps=rng.randrange(200_000),
        battery=rng.uniform(35, 100),
    )
