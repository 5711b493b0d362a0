"""A community's ``.xlsx`` workbook read as tables of text, the way its CSV export would read.

One sheet per section, named like the CSV files (``buildings``, ``devices``, ``residents``,
``staff``; singular and Chinese names too), or a workbook named for one section with a single
sheet. Sheets of notes (``notes``, ``说明`` …) are left out; any other sheet is a problem, so a
misspelt sheet is never skipped without a word.

Nothing in the file is trusted: the zip is measured before it is opened, every XML part is
streamed (defusedxml) and counted before openpyxl, which builds a row or a part whole, sees it
(a 34 KB workbook of one 1M-cell row took it 500 MB); then XML is parsed by openpyxl in
read-only mode (through defusedxml), rows and columns are bounded, formulas are not
evaluated (a formula cell is refused: paste values), and each cell's type is checked — numbers
become the text a person typed (``5.0`` → ``5``), a date or time where text belongs (Excel turns
``3-2`` into the 2nd of March) and error values (``#N/A``) are refused, naming the cell.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

MAX_FILE_BYTES: Final = 16 << 20
MAX_UNPACKED_BYTES: Final = 32 << 20
"""The workbook's parts, unzipped: past this it is refused unread (a zip bomb). The demo's
whole registry (4,383 devices and their residents and staff) unpacks to 2.4 MB."""
MAX_ROWS: Final = 100_000
"""Per sheet, the header included."""
MAX_COLUMNS: Final = 64
MAX_PART_ELEMENTS: Final = 100_000
"""XML elements in a part other than a sheet's rows and the shared strings (styles, the
workbook, relationships ...): openpyxl builds those whole, some 600 bytes an element (Excel
itself allows 64,000 cell formats)."""
MAX_SHARED_ELEMENTS: Final = 1_000_000
"""In the shared strings (``<si><t>`` per string, some 500,000 strings): openpyxl keeps each
string (1.5 million take 200 MB)."""
MAX_DEPTH: Final = 64
MAX_CELL_CHARS: Final = 4000

SECTIONS: Final = ("buildings", "devices", "residents", "staff")
SHEET_NAMES: Final = {
    "buildings": "buildings", "building": "buildings", "楼栋": "buildings",
    "devices": "devices", "device": "devices", "设备": "devices",
    "residents": "residents", "resident": "residents", "居民": "residents", "老人": "residents",
    "staff": "staff", "员工": "staff", "人员": "staff",
}  # fmt: skip
IGNORED_SHEETS: Final = frozenset({"notes", "readme", "help", "说明", "备注", "填写说明"})


@dataclass(frozen=True, slots=True)
class SheetProblem:
    sheet: str | None
    row: int | None
    column: str | None
    """The header of the cell's column (or its letter when the header is blank)."""
    message: str


@dataclass(slots=True)
class Sheet:
    name: str
    section: str
    rows: list[list[str]] = field(default_factory=list)
    """Row ``i`` (0-based) is the spreadsheet's row ``i + 1``; the header is row 1."""
    bad_rows: set[int] = field(default_factory=set)
    """Spreadsheet row numbers with a cell that was refused (the record is left out)."""


def read_workbook(path: Path, problems: list[SheetProblem]) -> list[Sheet]:
    """The workbook's section sheets; every problem found is appended to ``problems``."""
    if not _sound_zip(path, problems):
        return []
    from openpyxl import load_workbook  # imported when a workbook is read: it is not small

    try:
        wb = load_workbook(path, read_only=True, data_only=False, keep_links=False)
    except Exception as e:  # a malformed part: openpyxl raises many kinds
        problems.append(SheetProblem(None, None, None, f"cannot read the workbook ({e!r:.120})"))
        return []
    try:
        return _sheets(path, wb, problems)
    except Exception as e:
        problems.append(SheetProblem(None, None, None, f"cannot read the workbook ({e!r:.120})"))
        return []
    finally:
        wb.close()


def _sound_zip(path: Path, problems: list[SheetProblem]) -> bool:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        problems.append(
            SheetProblem(None, None, None, f"{size} bytes: at most {MAX_FILE_BYTES} bytes")
        )
        return False
    try:
        with zipfile.ZipFile(path) as z:
            unpacked = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        problems.append(
            SheetProblem(None, None, None, "not an .xlsx workbook (save it as .xlsx or .csv)")
        )
        return False
    if unpacked > MAX_UNPACKED_BYTES:
        msg = f"unpacks to {unpacked} bytes: at most {MAX_UNPACKED_BYTES}"
        problems.append(SheetProblem(None, None, None, msg))
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return _sound_parts(z, problems)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        problems.append(SheetProblem(None, None, None, f"cannot read the workbook ({e!r:.120})"))
        return False


def _sound_parts(z: zipfile.ZipFile, problems: list[SheetProblem]) -> bool:
    """Stream every XML part before openpyxl sees it: openpyxl builds a sheet's whole row
    (1M cells of 15 bytes each take 500 MB) and other parts whole, so a row of more than
    ``MAX_COLUMNS + 1`` cells, more than ``MAX_ROWS * MAX_COLUMNS`` cells in a sheet, or more
    than ``MAX_PART_ELEMENTS`` elements elsewhere are refused unread."""
    names = _sheet_names(z)
    for info in z.infolist():
        if not info.filename.lower().endswith((".xml", ".rels", ".vml")):
            continue
        problem = _scan(z, info.filename)
        if problem is not None:
            row, message = problem
            sheet = names.get(info.filename)
            if sheet is None:
                message = f"{info.filename}: {message}"
            problems.append(SheetProblem(sheet, row, None, message))
            return False
    return True


def _scan(z: zipfile.ZipFile, part: str) -> tuple[int | None, str] | None:
    """Why ``part`` is refused (the row, the reason), or None; memory stays bounded."""
    from defusedxml.ElementTree import ParseError, iterparse

    stack: list[Any] = []
    elements = cells = in_row = row = 0
    most = MAX_SHARED_ELEMENTS if part.endswith("sharedStrings.xml") else MAX_PART_ELEMENTS
    with z.open(part) as f:
        try:
            for event, elem in iterparse(f, events=("start", "end")):
                tag = elem.tag.rpartition("}")[2]
                if event == "start":
                    stack.append(elem)
                    if len(stack) > MAX_DEPTH:
                        return None, f"XML nested more than {MAX_DEPTH} deep"
                    if tag == "row":
                        in_row = 0
                        r = elem.get("r")
                        row = int(r) if r is not None and r.isdigit() else row + 1
                    continue
                stack.pop()
                if stack:
                    stack[-1].remove(elem)  # each parent holds one child at a time
                elem.clear()
                if tag == "c":
                    in_row += 1
                    cells += 1
                    if in_row > MAX_COLUMNS + 1:
                        return row, f"more than {MAX_COLUMNS} columns: the workbook is not read"
                    if cells > MAX_ROWS * MAX_COLUMNS:
                        return row, f"more than {MAX_ROWS * MAX_COLUMNS} cells: split the sheet"
                elif not in_row or tag not in ("v", "f", "is", "t", "r", "rPr"):
                    elements += 1  # a sheet's cell contents are bounded with its cells
                    if elements > most:
                        return None, f"more than {most} XML elements"
        except ParseError as e:
            return None, f"not well-formed XML ({e})"
    return None


def _sheet_names(z: zipfile.ZipFile) -> dict[str, str]:
    """Worksheet part → sheet name, for problems that name the sheet (parsed once the two
    small parts that say it were streamed and found sound)."""
    import posixpath

    from defusedxml.ElementTree import fromstring

    try:
        for part in ("xl/workbook.xml", "xl/_rels/workbook.xml.rels"):
            if _scan(z, part) is not None or z.getinfo(part).file_size > 1 << 20:
                return {}
        rels = fromstring(z.read("xl/_rels/workbook.xml.rels"))
        target = {
            r.get("Id"): posixpath.normpath(
                t[1:] if (t := r.get("Target", "")).startswith("/") else f"xl/{t}"
            )
            for r in rels
        }
        names: dict[str, str] = {}
        for el in fromstring(z.read("xl/workbook.xml")).iter():
            if el.tag.rpartition("}")[2] != "sheet":
                continue
            rid = next((v for k, v in el.attrib.items() if k.rpartition("}")[2] == "id"), None)
            name = el.get("name")
            if rid in target and name:
                names[target[rid]] = name
        return names
    except Exception:  # a malformed part: said when openpyxl opens the workbook
        return {}


def _sheets(path: Path, wb: Any, problems: list[SheetProblem]) -> list[Sheet]:
    names = [n for n in wb.sheetnames if n.strip().lower() not in IGNORED_SHEETS]
    stem = path.stem.strip().lower()
    sections: dict[str, str] = {}
    for name in names:
        section = SHEET_NAMES.get(name.strip().lower())
        if section is None and stem in SECTIONS and len(names) == 1:
            section = stem  # devices.xlsx with one sheet "Sheet1"
        if section is None:
            msg = "unknown sheet; name it one of " + "/".join(SECTIONS)
            problems.append(
                SheetProblem(name, None, None, msg + " (or 说明/notes to leave it out)")
            )
        elif section in sections.values():
            problems.append(SheetProblem(name, None, None, f"a second {section} sheet"))
        else:
            sections[name] = section
    if not names:
        problems.append(SheetProblem(None, None, None, "no sheet named " + "/".join(SECTIONS)))
    return [_read_sheet(name, section, wb[name], problems) for name, section in sections.items()]


def _read_sheet(name: str, section: str, ws: Any, problems: list[SheetProblem]) -> Sheet:
    sheet = Sheet(name, section)
    headers: list[str] = []
    for number, cells in enumerate(
        ws.iter_rows(max_row=MAX_ROWS + 1, max_col=MAX_COLUMNS + 1), start=1
    ):
        if number > MAX_ROWS:
            if any(c.value is not None for c in cells):
                msg = f"more than {MAX_ROWS} rows: split the sheet"
                problems.append(SheetProblem(name, number, None, msg))
            break
        row: list[str] = []
        for col, cell in enumerate(cells):
            if col == MAX_COLUMNS:
                if cell.value is not None:
                    msg = f"more than {MAX_COLUMNS} columns"
                    problems.append(SheetProblem(name, number, None, msg))
                break
            column = headers[col] if col < len(headers) and headers[col] else _letter(col)
            text, problem = cell_text(cell.value, cell.data_type)
            if problem is not None:
                problems.append(SheetProblem(name, number, column, problem))
                sheet.bad_rows.add(number)
                text = ""
            row.append(text)
        while row and not row[-1]:
            row.pop()
        if number == 1:
            headers = row
        sheet.rows.append(row)
    return sheet


def _letter(col: int) -> str:
    from openpyxl.utils import get_column_letter

    return f"column {get_column_letter(col + 1)}"


def cell_text(value: object, data_type: str | None = None) -> tuple[str, str | None]:
    """A cell's value as the text a person typed, or a problem saying why it is refused."""
    if value is None:
        return "", None
    if data_type == "f":
        return "", f"a formula ({str(value)[:40]}): copy the column and paste it as values"
    if data_type == "e":
        return "", f"an error value {str(value)[:20]}"
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "", "not a number"
        return (str(int(value)) if value.is_integer() else repr(value)), None
    if isinstance(value, dt.datetime | dt.date | dt.time | dt.timedelta):
        return "", (
            f"a date or time ({value}) where text belongs: Excel may have turned what was "
            "typed into a date; format the column as text and type it again"
        )
    if isinstance(value, str):
        if len(value) > MAX_CELL_CHARS:
            return "", f"{len(value)} characters: at most {MAX_CELL_CHARS}"
        return value.strip(), None
    return "", f"a cell of type {type(value).__name__}"
