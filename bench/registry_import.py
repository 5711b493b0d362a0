"""A community's whole registry as one workbook: how long an import's preview takes to read it
(openpyxl, read-only, every cell checked) and to diff it, and that it reads back unchanged.

``python -m bench.registry_import [--runs 3]`` writes the simulated community's registry (the
demo's: 4,383 devices, 1,221 residents, 147 staff, 43 buildings), exports it as ``registry.xlsx``
(one sheet per section, cells as a person types them) and prints
``xlsx_bytes=N read_s=X load_s=Y diff_s=Z changes=...``: the medians of ``--runs`` reads of the
sheets alone, whole loads over the registry (validation and cross-checks included) and diffs
against it. ``changes=no changes`` is the round trip's check.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from openpyxl import Workbook

from registry import Registry, load_registry, write_registry
from registry.diff import diff, record_values
from registry.loader import SECTIONS
from registry.sheets import SheetProblem, read_workbook
from simulators.fleet import build_fleet


def _cell(field: str, value: Any) -> Any:
    """A record's value as a person would type it into the sheet."""
    if value is None or value == [] or value == {}:
        return None
    if field == "channels":
        return " ".join(value)
    if field in ("caretakers", "buildings", "compounds"):
        return ";".join(value)
    if field == "shifts":
        return "; ".join(s for s in value if isinstance(s, str)) or None
    if field == "thresholds":
        return ";".join(f"{k}={v}" for k, v in value.items())
    if field == "allowed_area":
        return ",".join(str(v) for v in value)
    return value


def export(registry: Registry, path: Path) -> None:
    wb = Workbook(write_only=True)
    for section in SECTIONS:
        records = list(getattr(registry, section).values())
        if not records:
            continue
        ws = wb.create_sheet(section)
        columns = list(type(records[0]).model_fields)
        ws.append(columns)
        for r in records:
            values = record_values(r)
            ws.append([_cell(c, values[c]) for c in columns])
    wb.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="jiayuan-bench-import-") as d:
        write_registry(build_fleet().registry, Path(d) / "registry")
        current = load_registry(Path(d) / "registry")
        book = Path(d) / "registry.xlsx"
        export(current, book)
        reads, loads, diffs = [], [], []
        changes = ""
        for _ in range(args.runs):
            t0 = time.perf_counter()
            problems: list[SheetProblem] = []
            read_workbook(book, problems)
            t1 = time.perf_counter()
            new = load_registry(book, base=current)
            t2 = time.perf_counter()
            changes = diff(current, new).summary()
            t3 = time.perf_counter()
            assert not problems, problems
            reads.append(t1 - t0)
            loads.append(t2 - t1)
            diffs.append(t3 - t2)
        print(
            f"xlsx_bytes={book.stat().st_size} read_s={statistics.median(reads):.2f}"
            f" load_s={statistics.median(loads):.2f} diff_s={statistics.median(diffs):.3f}"
            f" changes={changes}"
        )


if __name__ == "__main__":
    main()
