"""The staff alerts go to, with their weekly shifts — the part of a community's 236 staff and
volunteers who are on a duty roster.

- guards: four per compound (day 08-16, evening 16-24, night 00-08, weekend relief), and a
  control room around the clock (``sec-ctl-1`` day, ``sec-ctl-2`` night)
- caretakers: one per 10-15 elderly residents of a compound, alternating Mon-Fri and Wed-Sun
  day shifts; each resident has a primary, a backup (the next caretaker) and the night
  caretaker on call for three compounds (17:00-08:00)
- two duty managers (office hours; nights and weekends), an operator and an administrator

Names are role labels: the registry needs no personal data to route an alert.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from registry.cells import parse_shift
from registry.models import Building, Resident, Role, Staff

_GUARD_SHIFTS = (
    ("day", "daily 08:00-16:00"),
    ("evening", "daily 16:00-24:00"),
    ("night", "daily 00:00-08:00"),
    ("relief", "Sat-Sun 08:00-20:00"),
)
_DAY_PATTERNS = ("Mon-Fri 08:00-17:00", "Wed-Sun 08:00-17:00")
PER_CARETAKER = 12.5


def build_staff(
    buildings: list[Building], residents: list[Resident], notify: str
) -> tuple[list[Staff], dict[str, tuple[str, ...]]]:
    """The roster, and each resident's caretakers (primary first)."""
    staff: list[Staff] = []

    def person(
        sid: str,
        name: str,
        role: Role,
        shifts: list[str],
        places: Sequence[str] = (),
        compounds: Sequence[str] = (),
    ) -> None:
        staff.append(
            Staff(
                staff_id=sid,
                name=name,
                role=role,
                channels=(f"{notify}/{sid}",),
                shifts=tuple(parse_shift(s) for s in shifts),
                buildings=tuple(places),
                compounds=tuple(compounds),
            )
        )

    compounds: dict[str, list[str]] = defaultdict(list)
    for b in buildings:
        compounds[b.compound].append(b.building)
    person("mgr-1", "Duty manager (office hours)", "manager", ["Mon-Fri 08:30-17:30"])
    person(
        "mgr-2",
        "Duty manager (nights, weekends)",
        "manager",
        ["Mon-Fri 17:30-08:30", "Sat-Sun 00:00-24:00"],
    )
    person("ops-1", "Operator", "operator", ["Mon-Fri 09:00-18:00"])
    person("adm-1", "Administrator", "admin", ["Mon-Fri 09:00-18:00"])
    person("sec-ctl-1", "Control room (day)", "security", ["daily 08:00-20:00"])
    person("sec-ctl-2", "Control room (night)", "security", ["daily 20:00-08:00"])
    for c, places in compounds.items():
        for i, (label, shift) in enumerate(_GUARD_SHIFTS, start=1):
            person(f"sec-{c}-{i}", f"Guard {c} {label}", "security", [shift], places, [c])

    names = list(compounds)
    night_of: dict[str, str] = {}
    for k in range(0, len(names), 3):
        group, sid = names[k : k + 3], f"care-night-{k // 3 + 1}"
        places = [b for c in group for b in compounds[c]]
        person(
            sid, f"Night caretaker {k // 3 + 1}", "caretaker", ["daily 17:00-08:00"], places, group
        )
        night_of.update(dict.fromkeys(group, sid))

    compound_of = {b.building: b.compound for b in buildings}
    by_compound: dict[str, list[Resident]] = defaultdict(list)
    for r in residents:
        by_compound[compound_of[r.building]].append(r)
    assigned: dict[str, tuple[str, ...]] = {}
    for c, cared in by_compound.items():
        k = max(1, round(len(cared) / PER_CARETAKER))
        ids = [f"care-{c}-{j + 1:02d}" for j in range(k)]
        for j, sid in enumerate(ids):
            mine = cared[j * len(cared) // k : (j + 1) * len(cared) // k]
            places = sorted({r.building for r in mine})
            person(
                sid, f"Caretaker {c}-{j + 1:02d}", "caretaker", [_DAY_PATTERNS[j % 2]], places, [c]
            )
            backup = ids[(j + 1) % k] if k > 1 else None
            for r in mine:
                assigned[r.resident_id] = tuple(x for x in (sid, backup, night_of[c]) if x)
    return staff, assigned
