"""Registry workbooks (.xlsx): the same records and the same problems as the CSV files, with
each problem naming the file, the sheet, the row and the field; cells whose type Excel chose
are not trusted; size, rows and columns are bounded. And an import over the current registry:
the sections a file gives replace the current ones, the rest are kept and checked with them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import tempfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from registry import Registry, RegistryError, load_registry, sheets
from tests.unit.test_registry_loader import (
    BUILDINGS_CSV,
    DEVICES_CSV,
    RESIDENTS_CSV,
    STAFF_CSV,
    problems,
    write,
)
from tests.xlsx import save_workbook


def rows_of(text: str) -> list[list[Any]]:
    """A CSV fixture's rows as a person types them into Excel: numbers as numbers."""
    out: list[list[Any]] = []
    for row in csv.reader(io.StringIO(text.lstrip("\ufeff"))):
        out.append([_typed(c) for c in row])
    return out


def _typed(cell: str) -> Any:
    if cell == "":
        return None
    if cell.startswith("0"):  # typed as text, or Excel drops the zero
        return cell
    if cell.isdigit():
        return int(cell)
    try:
        return float(cell)
    except ValueError:
        return cell


def records(r: Registry) -> tuple[dict[str, Any], ...]:
    return (r.buildings, r.devices, r.residents, r.staff)


def test_a_workbook_gives_the_records_its_csv_export_gives(tmp_path: Path) -> None:
    from_csv = load_registry(
        write(
            tmp_path / "csv",
            buildings_csv=BUILDINGS_CSV,
            devices_csv=DEVICES_CSV,
            residents_csv=RESIDENTS_CSV,
            staff_csv=STAFF_CSV,
        )
    )
    book = save_workbook(
        tmp_path / "registry.xlsx",
        楼栋=rows_of(BUILDINGS_CSV),  # Chinese sheet names read too
        devices=rows_of(DEVICES_CSV),
        Residents=rows_of(RESIDENTS_CSV),
        staff=rows_of(STAFF_CSV),
        说明=[["填写说明", "one sheet per section"]],  # notes are left out
    )
    from_xlsx = load_registry(book)
    assert records(from_xlsx) == records(from_csv)
    smoke = from_xlsx.devices["smk-C01-B01-1-0502"]
    assert (smoke.floor, smoke.room) == (5, "0502")  # 5.0 typed as a number; 0502 as text


def test_a_workbook_named_for_a_section_may_have_one_sheet_of_any_name(tmp_path: Path) -> None:
    book = save_workbook(
        tmp_path / "devices.xlsx", Sheet1=[["id", "类型", "小区"], [1001, "烟感", "C1"]]
    )
    reg = load_registry(book)
    assert reg.devices["1001"].kind == "smoke"  # a number id is the text typed


def test_problems_name_file_sheet_row_and_field(tmp_path: Path) -> None:
    book = save_workbook(
        tmp_path / "registry.xlsx",
        devices=[
            ["device_id", "kind", "compound", "unit", "floor"],
            ["smk-1", "smoke", "C1", dt.datetime(2026, 3, 2), 5],  # Excel made "3-2" a date
            ["smk-2", "smoke", "C1", "1-1-502", "=4+1"],  # a formula
            ["smk-3", "toaster", "C1", "1-1-502", 2.5],  # bad kind, a fraction of a floor
        ],
        devcies=[["device_id"], ["x"]],  # misspelt: not skipped without a word
    )
    with pytest.raises(RegistryError) as exc:
        load_registry(book)
    found = {(p.file, p.row, p.field) for p in exc.value.problems}
    where = f"{book} sheet devices"
    assert found == {
        (where, 2, "unit"),
        (where, 3, "floor"),
        (where, 4, "kind"),
        (where, 4, "floor"),
        (f"{book} sheet devcies", None, None),
    }
    text = str(exc.value)
    assert f"{where} row 2, field 'unit': a date or time (2026-03-02 00:00:00)" in text
    assert "format the column as text" in text
    assert f"{where} row 3, field 'floor': a formula (=4+1)" in text
    assert "sheet devcies: unknown sheet; name it one of buildings/devices/residents/staff" in text


def test_error_values_booleans_and_blank_headers(tmp_path: Path) -> None:
    book = tmp_path / "registry.xlsx"
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "devices"
    ws.append(["device_id", "kind", "compound", None, "name"])
    ws.append(["g-1", "gate", "C1", None, "#N/A"])
    ws["E2"].data_type = "e"
    ws.append(["g-2", "gate", "C1", "stray", True])
    wb.save(book)
    with pytest.raises(RegistryError) as exc:
        load_registry(book)
    assert [(p.row, p.field, p.message) for p in exc.value.problems] == [
        (2, "name", "an error value #N/A")
    ]
    ws.delete_rows(2)
    wb.save(book)
    g2 = load_registry(book).devices["g-2"]  # a column with no header is left out, as in CSV
    assert g2.name == "true"


def test_sizes_rows_and_columns_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sheets, "MAX_ROWS", 3)
    long = save_workbook(
        tmp_path / "devices.xlsx",
        devices=[["device_id", "kind", "compound"]] + [[f"g{i}", "gate", "C1"] for i in range(5)],
    )
    with pytest.raises(RegistryError, match="row 4: more than 3 rows: split the sheet"):
        load_registry(long)

    wide = save_workbook(tmp_path / "wide" / "devices.xlsx", devices=[["device_id"] + ["x"] * 70])
    with pytest.raises(RegistryError, match="row 1: more than 64 columns"):
        load_registry(wide)

    monkeypatch.setattr(sheets, "MAX_UNPACKED_BYTES", 1000)
    bomb = tmp_path / "bomb" / "registry.xlsx"
    bomb.parent.mkdir()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/worksheets/sheet1.xml", b" " * 100_000)
    with pytest.raises(RegistryError, match="unpacks to 100000 bytes: at most 1000"):
        load_registry(bomb)

    notzip = write(tmp_path / "old", registry_xlsx=b"\xd0\xcf\x11\xe0 an .xls") / "registry.xlsx"
    with pytest.raises(RegistryError, match=r"not an \.xlsx workbook \(save it as \.xlsx or \.csv"):
        load_registry(notzip)


def test_an_import_replaces_the_sections_it_gives_and_checks_the_whole(tmp_path: Path) -> None:
    current = load_registry(
        write(
            tmp_path / "now",
            buildings_csv=BUILDINGS_CSV,
            devices_csv=DEVICES_CSV,
            residents_csv=RESIDENTS_CSV,
            staff_csv=STAFF_CSV,
        )
    )
    book = save_workbook(
        tmp_path / "devices.xlsx",
        devices=[
            ["device_id", "kind", "compound", "building", "unit", "resident_id"],
            ["smk-9", "smoke", "C01", "B01", "1-1-601", None],
            ["wr-00001", "wearable", "C01", "B02", "1-1-502", "r-00001"],
        ],
    )
    new = load_registry(book, base=current)
    assert set(new.devices) == {"smk-9", "wr-00001"}  # the sheet is the whole device list
    assert new.devices["wr-00001"].building == "B02"
    assert (new.buildings, new.residents, new.staff) == (
        current.buildings,
        current.residents,
        current.staff,
    )

    # a wearer the current residents lack, a building the current buildings lack
    bad = save_workbook(
        tmp_path / "bad" / "devices.xlsx",
        devices=[
            ["device_id", "kind", "compound", "building", "resident_id"],
            ["wr-2", "wearable", "C01", "B09", "r-404"],
        ],
    )
    with pytest.raises(RegistryError) as exc:
        load_registry(bad, base=current)
    assert problems(exc) == {("devices.xlsx sheet devices", 2, "building"),
                             ("devices.xlsx sheet devices", 2, "resident_id")}  # fmt: skip

    # staff replaced without a caretaker the kept residents name
    staff = save_workbook(
        tmp_path / "s" / "staff.xlsx",
        staff=[["staff_id", "name", "role"], ["care-1", "Caretaker 1", "caretaker"]],
    )
    with pytest.raises(RegistryError) as exc:
        load_registry(staff, base=current)
    assert [str(p) for p in exc.value.problems] == [
        "current residents r-00001, field 'caretakers': unknown staff id 'care-2'"
    ]


# --- property: a workbook reads as its CSV export -------------------------------------------------

COLUMNS = ["device_id", "kind", "compound", "building", "unit", "floor", "resident_id", "设备编号",
           "colour", "备注"]  # fmt: skip
CELLS = st.one_of(
    st.sampled_from(["", "wearable", "smoke", "烟感", "C01", "B01", "r-1", "5", "5.0", "x y"]),
    st.text(alphabet="ab01-_ 王;,\"'", max_size=8),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(COLUMNS), min_size=2, max_size=5),
    st.lists(st.lists(CELLS, max_size=6), max_size=5),
)
def test_a_workbook_reads_as_its_csv_export(columns: list[str], rows: list[list[str]]) -> None:
    """The same records, or the same problems (row, field and message), from the same cells."""
    with tempfile.TemporaryDirectory() as d:
        out = io.StringIO()
        csv.writer(out).writerows([columns, *rows])
        as_csv = Path(d) / "csv" / "devices.csv"
        as_csv.parent.mkdir()
        as_csv.write_text(out.getvalue(), encoding="utf-8")
        as_xlsx = save_workbook(Path(d) / "x" / "registry.xlsx", devices=[columns, *rows])

        def read(path: Path) -> tuple[str, Any]:
            try:
                return "ok", records(load_registry(path))
            except RegistryError as e:
                return "problems", [(p.row, p.field, p.message) for p in e.problems]

        assert read(as_xlsx) == read(as_csv)


def _rigged(path: Path, part: str, rig: Callable[[bytes], bytes]) -> Path:
    """A workbook made by openpyxl with one part changed the way a hostile file would."""
    sound = save_workbook(path.parent / "sound.xlsx", devices=[["device_id"], ["a"]])
    with zipfile.ZipFile(sound) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            data = src.read(info.filename)
            z.writestr(info.filename, rig(data) if info.filename == part else data)
    return path


@pytest.mark.parametrize(
    ("part", "rig", "said"),
    [
        (  # one row of 300,000 cells: openpyxl builds the whole row before any bound applies
            "xl/worksheets/sheet1.xml",
            lambda x: x.replace(b"</sheetData>", b'<row r="3">' + b"<c><v>1</v></c>" * 300_000
                                + b"</row></sheetData>"),
            "sheet devices row 3: more than 64 columns",
        ),
        (  # 300,000 cell formats: openpyxl builds the stylesheet whole, 600 bytes each
            "xl/styles.xml",
            lambda x: re.sub(rb"<cellXfs count=\"\d+\">", b"<cellXfs>" + b"<xf/>" * 300_000, x),
            "devices.xlsx: xl/styles.xml: more than 100000 XML elements",
        ),
    ],
)  # fmt: skip
def test_a_small_hostile_workbook_is_refused_before_it_takes_memory(
    tmp_path: Path, part: str, rig: Callable[[bytes], bytes], said: str
) -> None:
    bomb = _rigged(tmp_path / "devices.xlsx", part, rig)
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(RegistryError) as e:
            load_registry(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert said in str(e.value) and str(bomb) in str(e.value)
    assert peak < 32 << 20  # openpyxl took some 150 MB for either; streaming takes a few


def test_the_cells_of_a_sheet_are_bounded_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sheets, "MAX_ROWS", 3)  # 3 x 64 cells in all
    rows = b"".join(b"<row>" + b"<c><v>1</v></c>" * 60 + b"</row>" for _ in range(4))
    many = _rigged(
        tmp_path / "devices.xlsx",
        "xl/worksheets/sheet1.xml",
        lambda x: x.replace(b"</sheetData>", rows + b"</sheetData>"),
    )
    with pytest.raises(RegistryError, match="sheet devices row 6: more than 192 cells"):
        load_registry(many)


def test_how_a_device_reports_reads_from_a_column_and_writes_back(tmp_path: Path) -> None:
    """The ``via`` column (接入方式): a profile's or integration's id; empty or ``native`` is
    native MQTT. The same records from a workbook, its CSV export and the YAML written back."""
    from registry import write_registry

    rows: list[list[Any]] = [
        ["设备编号", "类型", "小区", "接入方式"],
        ["sd-z1", "烟感", "C01", "z2m_smoke"],
        ["sd-n1", "烟感", "C01", None],
        ["sd-n2", "烟感", "C01", "native"],
        ["sd-p1", "smoke", "C01", "ctwing"],
    ]
    text = "\n".join(",".join("" if c is None else c for c in r) for r in rows) + "\n"
    from_csv = load_registry(write(tmp_path / "csv", devices_csv=text))
    from_xlsx = load_registry(save_workbook(tmp_path / "devices.xlsx", devices=rows))
    assert records(from_xlsx) == records(from_csv)
    via = {d: r.via for d, r in from_xlsx.devices.items()}
    assert via == {"sd-z1": "z2m_smoke", "sd-n1": None, "sd-n2": None, "sd-p1": "ctwing"}
    write_registry(from_xlsx, tmp_path / "yaml")
    assert records(load_registry(tmp_path / "yaml")) == records(from_xlsx)
    assert "via: z2m_smoke" in (tmp_path / "yaml" / "devices.yaml").read_text()
    bad = [["id", "kind", "compound", "via"], ["sd-x", "smoke", "C01", "z2m smoke"]]
    with pytest.raises(RegistryError) as e:
        load_registry(save_workbook(tmp_path / "bad" / "devices.xlsx", devices=bad))
    assert "row 2, field 'via'" in str(e.value)
