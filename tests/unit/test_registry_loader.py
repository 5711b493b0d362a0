"""Loading the registry from YAML and from spreadsheet CSV exports, and writing it back."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from registry import (
    Building,
    Device,
    Registry,
    RegistryError,
    Resident,
    Shift,
    Staff,
    load_registry,
    write_registry,
)

BUILDINGS_YAML = """\
- building: B01
  compound: C01
  floors: 18
- {building: B02, compound: C01, name: Building 2}
- {building: B03, compound: C02}
"""
DEVICES_YAML = """\
- {device_id: gate-C01-main, kind: gate, compound: C01, name: C01 main gate}
- {device_id: smk-C01-B01-1-0502, kind: smoke, compound: C01, building: B01,
   unit: 1-1-502, floor: 5, room: 0502}
- device_id: wr-00001
  kind: wearable
  compound: C01
  building: B01
  unit: 1-1-502
  resident_id: r-00001
"""
RESIDENTS_YAML = """\
- resident_id: r-00001
  building: B01
  unit: 1-1-502
  caretakers: [care-1, care-2]
  thresholds: {heart_rate_high: 110}
  allowed_area: [36.05, 103.84, 500]
"""
STAFF_YAML = """\
- staff_id: care-1
  name: Caretaker 1
  role: caretaker
  channels: [json://127.0.0.1:8025/notify/care-1]
  shifts: [Mon-Fri 08:00-17:00@B01, {days: [5, 6], start: "09:00", end: 12:00}]
  buildings: [B01]
- staff_id: care-2
  name: Caretaker 2
  role: caretaker
  shifts: [Fri-Mon 20:00-08:00]
"""


def write(directory: Path, **files: str | bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name.replace("_", ".", 1)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return directory


def yaml_dir(tmp_path: Path) -> Path:
    return write(
        tmp_path / "reg",
        buildings_yaml=BUILDINGS_YAML,
        devices_yaml=DEVICES_YAML,
        residents_yaml=RESIDENTS_YAML,
        staff_yaml=STAFF_YAML,
    )


def problems(exc: pytest.ExceptionInfo[RegistryError]) -> set[tuple[str, int | None, str | None]]:
    return {(Path(p.file).name, p.row, p.field) for p in exc.value.problems}


def test_yaml_directory_loads_every_record(tmp_path: Path) -> None:
    reg = load_registry(yaml_dir(tmp_path), community="y")
    assert reg.community == "y"
    assert set(reg.buildings) == {"B01", "B02", "B03"}
    assert reg.buildings["B01"].floors == 18 and reg.buildings["B02"].floors == 6
    smoke = reg.devices["smk-C01-B01-1-0502"]
    assert (smoke.unit, smoke.floor, smoke.room) == ("1-1-502", 5, "0502")  # 0502 stays text
    assert reg.resident_of("wr-00001") == reg.residents["r-00001"]
    r = reg.residents["r-00001"]
    assert r.caretakers == ("care-1", "care-2")
    assert r.thresholds == {"heart_rate_high": 110.0}
    assert r.allowed_area == (36.05, 103.84, 500.0)
    assert reg.threshold("wr-00001", "heart_rate_high", 120) == 110
    care = reg.staff["care-1"]
    assert care.shifts == (
        Shift(days=(0, 1, 2, 3, 4), start=time(8), end=time(17), building="B01"),
        Shift(days=(5, 6), start=time(9), end=time(12)),  # unquoted 12:00 is not 720
    )
    assert reg.staff["care-2"].shifts[0].days == (0, 4, 5, 6)


def test_one_registry_yaml_with_four_keys(tmp_path: Path) -> None:
    def indent(text: str) -> str:
        return "".join(f"  {line}\n" for line in text.splitlines())

    text = "community: y\n" + "".join(
        f"{key}:\n{indent(body)}"
        for key, body in (
            ("buildings", BUILDINGS_YAML),
            ("devices", DEVICES_YAML),
            ("residents", RESIDENTS_YAML),
            ("staff", STAFF_YAML),
        )
    )
    path = write(tmp_path, registry_yaml=text) / "registry.yaml"
    reg = load_registry(path)
    assert len(reg.devices) == 3 and len(reg.staff) == 2
    with pytest.raises(RegistryError, match="file is for community 'y', loading 'z'"):
        load_registry(path, community="z")


DEVICES_CSV = (
    "\ufeffdevice_id,kind,compound,building,unit,floor,room,resident_id,name,备注\n"
    "gate-C01-main,gate,C01,,,,,,C01 main gate,east side\n"
    "smk-C01-B01-1-0502,smoke,C01,B01,1-1-502,5.0,0502,,,\n"
    ",,,,,,,,,\n"
    "wr-00001,wearable,C01,B01,1-1-502,,,r-00001,,\n"
)
RESIDENTS_CSV = (
    "resident_id,building,unit,caretakers,thresholds,allowed_area\n"
    'r-00001,B01,1-1-502,care-1；care-2,heart_rate_high=110;spo2_low=88,"36.05,103.84,500"\n'
)
STAFF_CSV = (
    "staff_id,name,role,channels,shifts,buildings\n"
    "care-1,Caretaker 1,caretaker,json://127.0.0.1:8025/notify  mailto://c1@example.org,"
    "Mon-Fri 08:00-20:00@B01; Sat 08:00-24:00,B01;B02\n"
    "care-2,Caretaker 2,caretaker,,,\n"
)
BUILDINGS_CSV = "building,compound,name,floors\nB01,C01,Building 1,18\nB02,C01,,\n"


def test_csv_export_with_bom_lists_thresholds_and_shifts(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        devices_csv=DEVICES_CSV,
        residents_csv=RESIDENTS_CSV,
        staff_csv=STAFF_CSV,
        buildings_csv=BUILDINGS_CSV,
    )
    reg = load_registry(d)
    assert set(reg.devices) == {"gate-C01-main", "smk-C01-B01-1-0502", "wr-00001"}
    gate = reg.devices["gate-C01-main"]
    assert gate.building is None and gate.unit is None  # empty cells are absent
    assert reg.devices["smk-C01-B01-1-0502"].floor == 5  # Excel's 5.0
    r = reg.residents["r-00001"]
    assert r.caretakers == ("care-1", "care-2")
    assert r.thresholds == {"heart_rate_high": 110.0, "spo2_low": 88.0}
    assert r.allowed_area == (36.05, 103.84, 500.0)
    care = reg.staff["care-1"]
    assert care.channels == ("json://127.0.0.1:8025/notify", "mailto://c1@example.org")
    assert care.shifts == (
        Shift(days=(0, 1, 2, 3, 4), start=time(8), end=time(20), building="B01"),
        Shift(days=(5,), start=time(8), end=time(23, 59, 59)),
    )
    assert care.buildings == ("B01", "B02")
    assert reg.staff["care-2"].channels == () and reg.buildings["B02"].floors == 6


def test_gbk_csv_from_chinese_excel(tmp_path: Path) -> None:
    text = "设备编号,类型,小区,楼栋,户号,位置\nsmk-1,烟感,C01,B01,1-1-101,一号楼厨房\n"
    d = write(tmp_path, devices_csv=text.encode("gbk"))
    device = load_registry(d).devices["smk-1"]
    assert (device.kind, device.building, device.name) == ("smoke", "B01", "一号楼厨房")


def test_utf16_tab_separated_unicode_text_export(tmp_path: Path) -> None:
    text = "staff_id\tname\trole\nsec-1\t保安 1\t保安\n"
    d = write(tmp_path, staff_csv=text.encode("utf-16"))
    assert load_registry(d).staff["sec-1"].role == "security"


def test_errors_name_file_row_and_field_and_are_all_collected(tmp_path: Path) -> None:
    devices = (
        "device_id,kind,compound,building,floor,colour\n"  # row 1: unknown column
        "smk-1,smoke,C01,B01,5,red\n"
        "smk-2,toaster,C01,B01,x,\n"  # row 3: two bad fields
        "smk 3,smoke,C01,B01,2,\n"  # row 4: bad id
    )
    staff = "staff_id,name,role,shifts\ns-1,Guard,security,Funday 08:00-09:00\n"
    residents = "- resident_id: r-1\n  building: B01\n  unit: 1-1-101\n  floor: high\n"
    d = write(tmp_path, devices_csv=devices, staff_csv=staff, residents_yaml=residents)
    with pytest.raises(RegistryError) as exc:
        load_registry(d)
    assert problems(exc) == {
        ("devices.csv", 1, "colour"),
        ("devices.csv", 3, "kind"),
        ("devices.csv", 3, "floor"),
        ("devices.csv", 4, "device_id"),
        ("staff.csv", 2, "shifts[1]"),
        ("residents.yaml", 4, "floor"),  # YAML: the line of the field
    }
    text = str(exc.value)
    assert "devices.csv row 3, field 'floor': Input should be a valid integer" in text
    assert "residents.yaml line 4, field 'floor'" in text
    assert "unknown day 'Funday'" in text


def test_error_list_is_capped_with_a_count_of_the_rest(tmp_path: Path) -> None:
    rows = "".join(f"smk-{i},smoke,C01,,x\n" for i in range(70))
    d = write(tmp_path, devices_csv="device_id,kind,compound,building,floor\n" + rows)
    with pytest.raises(RegistryError) as exc:
        load_registry(d)
    assert len(exc.value.problems) == 70
    lines = str(exc.value).splitlines()
    assert lines[0] == "registry: 70 problems"
    assert len(lines) == 1 + 50 + 1 and lines[-1].strip() == "and 20 more"
    assert "devices.csv row 71, field 'floor'" in str(exc.value.problems[-1])


def test_cross_checks(tmp_path: Path) -> None:
    d = yaml_dir(tmp_path)
    (d / "devices.yaml").write_text(
        DEVICES_YAML
        + "- {device_id: smk-9, kind: smoke, compound: C01, building: B99}\n"  # line 10
        + "- {device_id: smk-8, kind: smoke, compound: C01, building: B03}\n"  # line 11
        + "- {device_id: gate-9, kind: gate, compound: C77}\n"  # line 12
        + "- {device_id: wr-9, kind: wearable, compound: C01, resident_id: r-404}\n"  # 13
        + "- {device_id: smk-7, kind: smoke, compound: C01, resident_id: r-00001}\n"  # 14
    )
    (d / "residents.csv").write_text(
        "resident_id,building,unit,caretakers\n"
        "r-00001,B01,1-1-502,care-1\n"
        "r-2,B01,1-1-501,care-1;care-404\n"
    )
    with pytest.raises(RegistryError) as exc:
        load_registry(d)
    assert problems(exc) == {
        ("devices.yaml", 10, "building"),  # unknown building
        ("devices.yaml", 11, "compound"),  # B03 is in C02
        ("devices.yaml", 12, "compound"),  # unknown compound
        ("devices.yaml", 13, "resident_id"),  # unknown wearer
        ("devices.yaml", 14, "resident_id"),  # a smoke detector has no wearer
        ("residents.yaml", 1, "resident_id"),  # also in residents.csv, read first
        ("residents.csv", 3, "caretakers"),  # not in staff
    }
    assert "duplicate id 'r-00001' (first at " in str(exc.value)
    assert "residents.csv row 2)" in str(exc.value)


def test_buildings_are_checked_only_when_given(tmp_path: Path) -> None:
    d = write(tmp_path, devices_yaml="- {device_id: s-1, kind: smoke, compound: C9, building: B9}")
    assert load_registry(d).devices["s-1"].building == "B9"


def test_missing_and_unnamed_files(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no registry files"):
        load_registry(tmp_path)
    with pytest.raises(RegistryError, match="no such file"):
        load_registry(tmp_path / "devices.yaml")
    other = write(tmp_path, other_csv="device_id\nx\n") / "other.csv"
    with pytest.raises(RegistryError, match="name it one of"):
        load_registry(other)
    bad = write(tmp_path / "b", devices_yaml="- {device_id: [unclosed\n")
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(bad)


def test_write_then_load_gives_the_same_records(tmp_path: Path) -> None:
    reg = Registry(
        "y",
        buildings=[Building(building="B01", compound="C01", name="一号楼", floors=18)],
        devices=[
            Device(device_id="gate-1", kind="gate", compound="C01", name="no"),
            Device(
                device_id="smk-1",
                kind="smoke",
                compound="C01",
                building="B01",
                unit="1-1-502",
                floor=5,
                room="0502",
            ),
            Device(device_id="wr-1", kind="wearable", compound="C01", resident_id="r-1"),
        ],
        residents=[
            Resident(
                resident_id="r-1",
                building="B01",
                unit="1-1-502",
                caretakers=("s-1",),
                thresholds={"spo2_low": 88.0},
                allowed_area=(36.05, 103.84, 500.0),
            )
        ],
        staff=[
            Staff(
                staff_id="s-1",
                name="Caretaker",
                role="caretaker",
                compounds=("C01",),
                shifts=(
                    Shift(days=(4, 0), start=time(20), end=time(8)),
                    Shift(start=time(8, 0, 0, 5)),
                    Shift(building="B01"),
                    Shift(days=(5, 6), start=time(9), end=time(12, 30)),
                ),
            )
        ],
    )
    paths = write_registry(reg, tmp_path / "out")
    assert sorted(p.name for p in paths) == [
        "buildings.yaml",
        "devices.yaml",
        "residents.yaml",
        "staff.yaml",
    ]
    back = load_registry(tmp_path / "out")
    for name in ("buildings", "devices", "residents", "staff"):
        assert getattr(back, name) == getattr(reg, name)
    staff_text = (tmp_path / "out" / "staff.yaml").read_text()
    assert "Sat-Sun 09:00-12:30" in staff_text and "daily 00:00-24:00@B01" in staff_text
