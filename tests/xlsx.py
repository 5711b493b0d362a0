"""Excel workbooks for the registry's import tests: sheets of rows as a person types them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from openpyxl import Workbook


def workbook(**sheets: list[list[Any]]) -> bytes:
    """A workbook of these sheets (name → rows), as the bytes of an .xlsx file."""
    wb = Workbook()
    wb.remove(wb.active)  # type: ignore[arg-type]
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def save_workbook(path: Path, **sheets: list[list[Any]]) -> Path:
    """:func:`workbook` written to ``path`` (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(workbook(**sheets))
    return path
