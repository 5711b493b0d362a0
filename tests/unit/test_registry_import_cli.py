"""``jiayuan registry import``: the diff a person reads before anything is written, and
``--apply`` writing the registry files (the spreadsheets they replace moved aside)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jiayuan.cli import main
from registry import load_registry
from tests.unit.test_registry_loader import BUILDINGS_CSV, DEVICES_CSV, RESIDENTS_CSV, STAFF_CSV
from tests.unit.test_registry_loader import write as write_files
from tests.xlsx import save_workbook


def test_import_prints_the_diff_then_applies_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = write_files(
        tmp_path / "reg",
        buildings_csv=BUILDINGS_CSV,
        devices_csv=DEVICES_CSV,
        residents_csv=RESIDENTS_CSV,
        staff_csv=STAFF_CSV,
    )
    book = save_workbook(
        tmp_path / "new.xlsx",
        设备=[
            ["设备编号", "类型", "小区", "楼栋", "户号", "楼层", "房号"],
            ["gate-C01-main", "门禁", "C01", None, None, None, None],
            ["smk-C01-B01-1-0502", "烟感", "C01", "B01", "1-1-502", 5, "0502"],
            ["smk-C01-B02-1-0101", "烟感", "C01", "B02", "2-1-101", 1, None],
        ],
    )
    before = (reg / "devices.csv").read_bytes()

    assert main(["registry", "import", str(book), "--registry", str(reg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "devices: 1 added, 1 removed, 1 changed",
        "  + device smk-C01-B02-1-0101 (kind=smoke, compound=C01, building=B02, unit=2-1-101,"
        " floor=1)",
        "  - device wr-00001",
        "  ~ device gate-C01-main",
        "      name: C01 main gate -> (none)",
        "(not applied: run again with --apply)",
    ]
    assert (reg / "devices.csv").read_bytes() == before  # nothing written

    assert main(["registry", "import", str(book), "--registry", str(reg), "--apply"]) == 0
    applied = capsys.readouterr().out
    assert "moved aside to" in applied and "devices.csv" in applied
    now = load_registry(reg)
    assert set(now.devices) == {"gate-C01-main", "smk-C01-B01-1-0502", "smk-C01-B02-1-0101"}
    assert set(now.residents) == {"r-00001"}  # kept
    assert not (reg / "devices.csv").exists() and (reg / "devices.yaml").exists()

    assert main(["registry", "import", str(book), "--registry", str(reg)]) == 0
    assert capsys.readouterr().out.strip() == "no changes"


def test_import_with_problems_names_them_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = write_files(tmp_path / "reg", devices_csv=DEVICES_CSV, residents_csv=RESIDENTS_CSV,
                      staff_csv=STAFF_CSV)  # fmt: skip
    bad = write_files(tmp_path / "in", devices_csv="device_id,kind,compound\nx-1,toaster,C01\n")
    code = main(["registry", "import", str(bad / "devices.csv"), "--registry", str(reg), "--apply"])
    assert code == 1
    err = capsys.readouterr().err
    assert "devices.csv row 2, field 'kind'" in err
    assert not (reg / "devices.yaml").exists()
