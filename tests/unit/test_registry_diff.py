"""The registry diff: what an operator reads before an import applies, and what the audit keeps.

Properties over arbitrary registries: a registry against itself has no changes; applying a
diff to the old registry gives the new one's records exactly (so the diff names every
difference and nothing else); the diff survives JSON unchanged.
"""

from __future__ import annotations

from datetime import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from registry import Building, Device, Registry, Resident, Shift, Staff
from registry.diff import WITHHELD, RegistryDiff, diff, digest, patch

ids = st.sampled_from(["a", "b", "c", "B01", "x-1"])
short = st.text(alphabet="ab 王奶奶-,;", max_size=6)
opt_ids = st.none() | ids
times = st.times() | st.sampled_from([time(8), time(20), time(23, 59, 59)])

buildings = st.builds(Building, building=ids, compound=ids, name=short, floors=st.integers(1, 30))
devices = st.builds(
    Device,
    device_id=ids,
    kind=st.sampled_from(["gate", "smoke", "wearable"]),
    compound=ids,
    building=opt_ids,
    unit=st.none() | short,
    floor=st.none() | st.integers(-2, 30),
    room=st.none() | short,
    resident_id=opt_ids,
    name=short,
)
residents = st.builds(
    Resident,
    resident_id=ids,
    display_name=short,
    building=ids,
    unit=short,
    floor=st.none() | st.integers(1, 30),
    caretakers=st.lists(ids, max_size=3).map(tuple),
    thresholds=st.dictionaries(ids, st.floats(-1e6, 1e6, allow_nan=False), max_size=2),
    allowed_area=st.none()
    | st.tuples(st.floats(-90, 90), st.floats(-180, 180), st.floats(1, 5000)),
)
shifts = st.builds(
    Shift,
    days=st.lists(st.integers(0, 6), max_size=7).map(tuple),
    start=times,
    end=times,
    building=opt_ids,
)
staff = st.builds(
    Staff,
    staff_id=ids,
    name=short,
    role=st.sampled_from(["admin", "security", "caretaker", "manager", "operator"]),
    channels=st.lists(st.sampled_from(["json://127.0.0.1/x", "mailto://a@b"]), max_size=2).map(
        tuple
    ),
    shifts=st.lists(shifts, max_size=3).map(tuple),
    buildings=st.lists(ids, max_size=2).map(tuple),
    compounds=st.lists(ids, max_size=2).map(tuple),
)
registries = st.builds(
    lambda b, d, r, s: Registry("y", buildings=b, devices=d, residents=r, staff=s),
    st.lists(buildings, max_size=4),
    st.lists(devices, max_size=4),
    st.lists(residents, max_size=4),
    st.lists(staff, max_size=4),
)


def records(r: Registry) -> dict[str, dict[str, Any]]:
    return {
        "buildings": r.buildings,
        "devices": r.devices,
        "residents": r.residents,
        "staff": r.staff,
    }


@settings(max_examples=200, deadline=None)
@given(registries)
def test_a_registry_against_itself_has_no_changes(a: Registry) -> None:
    d = diff(a, a)
    assert d.empty
    assert d.text() == "no changes"
    assert d.summary() == "no changes"


@settings(max_examples=300, deadline=None)
@given(registries, registries)
def test_the_diff_explains_every_difference_and_nothing_else(a: Registry, b: Registry) -> None:
    d = diff(a, b)
    assert records(patch(a, d)) == records(b)
    assert d.empty == (records(a) == records(b))
    assert (digest(a) == digest(b)) == (records(a) == records(b))
    for section, old in records(a).items():
        s = d.section(section)
        new = records(b)[section]
        assert set(s.added) == new.keys() - old.keys()
        assert set(s.removed) == old.keys() - new.keys()
        assert {c.id for c in s.changed} == {k for k in old.keys() & new.keys() if old[k] != new[k]}
        assert all(c.fields for c in s.changed)
    assert RegistryDiff.model_validate_json(d.model_dump_json()) == d


OLD = Registry(
    "y",
    buildings=[Building(building="B01", compound="C01")],
    devices=[
        Device(device_id="smk-1", kind="smoke", compound="C01", building="B01", unit="1-1-502"),
        Device(device_id="gate-old", kind="gate", compound="C01"),
    ],
    staff=[
        Staff(
            staff_id="care-1",
            name="Caretaker 1",
            role="caretaker",
            shifts=(Shift(days=(0, 1, 2, 3, 4), start=time(8), end=time(17)),),
        )
    ],
)
NEW = Registry(
    "y",
    buildings=[Building(building="B01", compound="C01")],
    devices=[
        Device(device_id="smk-1", kind="smoke", compound="C01", building="B01", unit="1-1-601"),
        Device(device_id="wr-9", kind="wearable", compound="C01", building="B01", unit="1-1-601"),
    ],
    staff=[
        Staff(
            staff_id="care-1",
            name="Caretaker 1",
            role="caretaker",
            shifts=(Shift(days=(5, 6), start=time(20), end=time(8), building="B01"),),
        )
    ],
)


def test_the_text_an_operator_reads() -> None:
    assert diff(OLD, NEW).text().splitlines() == [
        "devices: 1 added, 1 removed, 1 changed",
        "  + device wr-9 (kind=wearable, compound=C01, building=B01, unit=1-1-601)",
        "  - device gate-old",
        "  ~ device smk-1",
        "      unit: 1-1-502 -> 1-1-601",
        "staff: 0 added, 0 removed, 1 changed",
        "  ~ staff care-1",
        '      shifts: ["Mon-Fri 08:00-17:00"] -> ["Sat-Sun 20:00-08:00@B01"]',
    ]
    assert diff(OLD, NEW).summary() == "devices +1 -1 ~1; staff +0 -0 ~1"


def test_the_json_form_names_each_field_before_and_after() -> None:
    data = diff(OLD, NEW).model_dump(mode="json")
    assert data["devices"]["changed"] == [
        {"id": "smk-1", "fields": [{"field": "unit", "before": "1-1-502", "after": "1-1-601"}]}
    ]
    assert data["devices"]["added"] == ["wr-9"]
    assert data["devices"]["removed"] == ["gate-old"]
    assert data["buildings"] == {"added": [], "removed": [], "changed": [], "added_records": {}}


def test_the_redacted_diff_names_a_residents_fields_but_not_their_values() -> None:
    old = Registry("y", residents=[Resident(resident_id="r-1", building="B01", unit="1-1-101",
                                            display_name="王奶奶")])  # fmt: skip
    new = Registry(
        "y",
        residents=[
            Resident(resident_id="r-1", building="B01", unit="1-1-102", display_name="王秀英",
                     thresholds={"heart_rate_high": 110}),
            Resident(resident_id="r-2", building="B01", unit="1-1-103", display_name="李爷爷",
                     allowed_area=(36.05, 103.84, 500)),
        ],
    )  # fmt: skip
    d = diff(old, new)
    assert "王秀英" in d.model_dump_json()  # the preview shows it to those who may see it
    kept = d.redacted()
    text = kept.model_dump_json() + kept.text()
    for secret in ("王", "李", "110", "36.05"):
        assert secret not in text
    fields = {f.field: (f.before, f.after) for f in kept.residents.changed[0].fields}
    assert fields == {
        "unit": ("1-1-101", "1-1-102"),
        "display_name": (WITHHELD, WITHHELD),
        "thresholds": (WITHHELD, WITHHELD),
    }
    assert kept.residents.added_records["r-2"]["display_name"] == WITHHELD
    assert kept.summary() == d.summary() == "residents +1 -0 ~1"

    # a staff member's name and channels (an apprise URL may carry a token) likewise
    secret = "mailto://duty:hunter2@mail.example.org"
    s1 = Staff(staff_id="care-1", name="张护理员", role="caretaker")
    s2 = Staff(staff_id="care-1", name="张护理员", role="manager", channels=(secret,))
    kept = diff(Registry("y", staff=[s1]), Registry("y", staff=[s2])).redacted()
    assert "hunter2" not in kept.model_dump_json() and "张" not in kept.model_dump_json()
    assert [f.field for f in kept.staff.changed[0].fields] == ["role", "channels"]
