"""Load the community's registry from YAML, CSV and .xlsx files; write it back as YAML.

A registry directory holds any of ``buildings``, ``devices``, ``residents`` and ``staff`` as
``.yaml`` / ``.yml`` (a list of records) or ``.csv`` (a header row of field names, as a
spreadsheet exports it: UTF-8 with or without BOM, GBK from Chinese Excel, UTF-16 "Unicode
text"; empty cells are absent fields), or one ``registry.yaml`` with those four keys; or an
``.xlsx`` workbook with a sheet per section, read like the CSV files (:mod:`registry.sheets`).
Cell formats (lists, thresholds, shifts) are in :mod:`registry.cells`. With ``base`` (an
import), the sections the files give replace the base's and the others are kept.

Every problem in every file is collected before :class:`RegistryError` is raised, each naming
the file (and sheet), the row (a spreadsheet's row number, the header being row 1; for YAML
the line) and the field. Then the files are checked against each other: duplicate ids, unknown
buildings and compounds (when buildings are given), unknown caretakers, unknown wearers.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError

from base.files import mode_of, write_file
from base.yamlload import Yaml12Loader
from registry.cells import IGNORED_COLUMNS, CellError, column_name, format_shift, normalise
from registry.models import Building, Device, Registry, Resident, Staff
from registry.sheets import SheetProblem, read_workbook
from registry.staging import Unfinished, settled

try:  # libyaml when present: the registry of a district is tens of thousands of records
    from yaml import CSafeDumper as _Dumper
except ImportError:  # pragma: no cover
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]

SECTIONS: Final = ("buildings", "devices", "residents", "staff")
_NAMES: Final = "/".join(SECTIONS)
_NO_FILES: Final = f"no registry files: expected {_NAMES} .yaml, .csv or .xlsx, or registry.yaml"
_EMPTY: Final = (
    "an empty file (0 bytes): not read as an empty section; restore it from a backup or"
    " superseded/, or write its header line"
)
MAX_LISTED: Final = 50
_MODELS: Final[dict[str, type[BaseModel]]] = {
    "buildings": Building,
    "devices": Device,
    "residents": Resident,
    "staff": Staff,
}
_KEYS: Final = {
    "buildings": "building",
    "devices": "device_id",
    "residents": "resident_id",
    "staff": "staff_id",
}
_FILE = re.compile(r"(registry|buildings|devices|residents|staff)\.(ya?ml|csv|xlsx)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in the registry files."""

    file: str
    row: int | None
    field: str | None
    message: str
    unit: str = "row"
    """``row`` for CSV (a spreadsheet's row number), ``line`` for YAML."""

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file} {self.unit} {self.row}"
        if self.field:
            where += f", field {self.field!r}"
        return f"{where}: {self.message}"


class RegistryError(ValueError):
    """The registry files are not usable; ``problems`` lists everything found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"registry: {n} problem{'' if n == 1 else 's'}"]
        lines += [f"  {p}" for p in self.problems[:MAX_LISTED]]
        if n > MAX_LISTED:
            lines.append(f"  and {n - MAX_LISTED} more")
        super().__init__("\n".join(lines))


@dataclass(slots=True)
class _Source:
    file: str
    row: int | None
    unit: str
    rows: dict[str, int] = field(default_factory=dict)
    """The line of each field, for YAML, where a record spans lines."""

    def at(self, name: str) -> int | None:
        return self.rows.get(name, self.row)

    def problem(self, name: str | None, message: str) -> Problem:
        return Problem(self.file, self.at(name or ""), name, message, self.unit)


_Raw = tuple[str, list[tuple[Any, _Source]]]  # section, records before validation


def load_registry(
    path: Path | str | Sequence[Path | str], community: str = "y", base: Registry | None = None
) -> Registry:
    """Load a registry directory, one file, or a list of files; raise :class:`RegistryError`.

    With ``base``, the sections the files give replace the base's, the others are kept, and
    the whole is cross-checked (problems in kept records name ``current <section> <id>``).

    A directory is read under its lock, after finishing a change a killed writer committed
    (:mod:`registry.staging`)."""
    if isinstance(path, str | os.PathLike) and Path(path).is_dir():
        directory = Path(path)
        try:
            with settled(directory):
                return _load(directory, community, base)
        except Unfinished as e:
            msg = f"a registry change was left unfinished and cannot be finished here: {e}"
            raise RegistryError([Problem(str(directory), None, None, msg)]) from e
    return _load(path, community, base)


def _load(
    path: Path | str | Sequence[Path | str], community: str, base: Registry | None
) -> Registry:
    problems: list[Problem] = []
    records: dict[str, list[tuple[Any, _Source]]] = {s: [] for s in SECTIONS}
    given: set[str] = set()
    for f in _files(path):
        for section, raw in _read(f, community, problems):
            given.add(section)
            for data, src in raw:
                record = _validate(section, data, src, problems)
                if record is not None:
                    records[section].append((record, src))
    if base is not None:
        for section in SECTIONS:
            kept: dict[str, BaseModel] = getattr(base, section)
            if section in given or not kept:
                continue
            given.add(section)
            records[section] = [
                (r, _Source(f"current {section} {rid}", None, "row")) for rid, r in kept.items()
            ]
    problems += _cross_check(records, given)
    if problems:
        raise RegistryError(problems)
    return Registry(
        community,
        buildings=[r for r, _ in records["buildings"]],
        devices=[r for r, _ in records["devices"]],
        residents=[r for r, _ in records["residents"]],
        staff=[r for r, _ in records["staff"]],
    )


def _files(path: Path | str | Sequence[Path | str]) -> list[Path]:
    if isinstance(path, str | os.PathLike):
        p = Path(path)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and _FILE.fullmatch(f.name))
            if not found:
                raise RegistryError([Problem(str(p), None, None, _NO_FILES)])
            return found
        paths = [p]
    else:
        paths = [Path(p) for p in path]
    missing = [Problem(str(p), None, None, "no such file") for p in paths if not p.is_file()]
    if missing:
        raise RegistryError(missing)
    return paths


def _text(path: Path, problems: list[Problem]) -> str | None:
    raw = path.read_bytes()
    if not raw:
        # jiayuan writes a header line in every file: an empty one is a write cut short (a
        # power cut before the data reached the disk), not a section with nothing in it
        problems.append(Problem(str(path), None, None, _EMPTY))
        return None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", errors="replace")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("gb18030")  # a superset of GBK, what Chinese Excel writes
    except UnicodeDecodeError as e:
        problems.append(Problem(str(path), None, None, f"not UTF-8 or GBK text (byte {e.start})"))
        return None


def _read(path: Path, community: str, problems: list[Problem]) -> list[_Raw]:
    if path.suffix.lower() == ".xlsx":
        return _read_xlsx(path, problems)
    text = _text(path, problems)
    if text is None:
        return []
    section = path.stem.lower()
    if path.suffix.lower() == ".csv":
        if section not in SECTIONS:
            problems.append(Problem(str(path), None, None, f"name it one of {_NAMES}.csv"))
            return []
        return [(section, list(_read_csv(path, text, section, problems)))]
    return _read_yaml(path, text, section, community, problems)


# --- CSV -------------------------------------------------------------------------------------


def _read_csv(
    path: Path, text: str, section: str, problems: list[Problem]
) -> Iterator[tuple[dict[str, str], _Source]]:
    first = text.split("\n", 1)[0]
    delimiter = ","
    if "," not in first:
        delimiter = "\t" if "\t" in first else ";" if ";" in first else ","
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    return _table(str(path), section, rows, problems)


def _table(
    name: str,
    section: str,
    rows: list[list[str]],
    problems: list[Problem],
    skip: Set[int] = frozenset(),
) -> Iterator[tuple[dict[str, str], _Source]]:
    """Records of a table whose first row names the columns (a CSV file, a sheet); rows in
    ``skip`` (a cell already refused) are left out."""
    if not rows:
        return
    known = _MODELS[section].model_fields
    columns: list[str | None] = []
    for header in rows[0]:
        col = column_name(_KEYS[section], header)
        if col in IGNORED_COLUMNS:
            columns.append(None)
            continue
        if col not in known:
            problems.append(
                Problem(name, 1, header.strip(), f"unknown column; use {', '.join(known)}")
            )
        elif col in columns:
            problems.append(Problem(name, 1, header.strip(), f"column {col!r} given twice"))
        columns.append(col if col in known and col not in columns else None)
    for number, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells) or number in skip:
            continue
        if any(c.strip() for c in cells[len(columns) :]):
            filled = max(i for i, c in enumerate(cells) if c.strip()) + 1
            msg = f"{filled} cells, the header has {len(columns)}"  # up to the last filled
            problems.append(Problem(name, number, None, msg))
        data = {c: v.strip() for c, v in zip(columns, cells, strict=False) if c and v.strip()}
        yield data, _Source(name, number, "row")


def _read_xlsx(path: Path, problems: list[Problem]) -> list[_Raw]:
    found: list[SheetProblem] = []
    sheets = read_workbook(path, found)
    for p in found:
        where = str(path) if p.sheet is None else f"{path} sheet {p.sheet}"
        problems.append(Problem(where, p.row, p.column, p.message))
    return [
        (
            s.section,
            list(_table(f"{path} sheet {s.name}", s.section, s.rows, problems, s.bad_rows)),
        )
        for s in sheets
    ]


# --- YAML ------------------------------------------------------------------------------------


def _alias_line(node: yaml.Node | None) -> int | None:
    """The line of the first node used twice (an anchor ``&name`` used by an alias), if any;
    each node is visited once, so nested aliases cost no more than the text."""
    seen: set[int] = set()
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        if id(n) in seen:
            return int(n.start_mark.line) + 1
        seen.add(id(n))
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack += (k, v)
    return None


def _read_yaml(
    path: Path, text: str, section: str, community: str, problems: list[Problem]
) -> list[_Raw]:
    name = str(path)

    def bad(line: int | None, key: str | None, message: str) -> None:
        problems.append(Problem(name, line, key, message, "line"))

    loader = Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        alias = _alias_line(node)
        if alias is not None:
            # a record is written out once per place it is: a few kilobytes of aliases would
            # otherwise be hundreds of thousands of records (and problems)
            bad(alias, None, "YAML aliases (*name) are not allowed: write each record out")
            return []
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        bad(line, None, f"not valid YAML: {e}".split("\n")[0])
        return []
    finally:
        loader.dispose()
    if data is None:
        return [(section, [])] if section in SECTIONS else []
    if isinstance(data, list) and isinstance(node, yaml.SequenceNode):
        if section not in SECTIONS:
            bad(1, None, f"a list of records must be named one of {_NAMES}.yaml")
            return []
        return [(section, _yaml_items(name, node, data, problems))]
    if not (isinstance(data, dict) and isinstance(node, yaml.MappingNode)):
        bad(1, None, f"expected a list of records or a mapping with keys {_NAMES}")
        return []
    out: list[_Raw] = []
    for key_node, value_node in node.value:
        key, value = key_node.value, data.get(key_node.value)
        line = key_node.start_mark.line + 1
        if key == "community":
            if value != community:
                bad(line, key, f"file is for community {value!r}, loading {community!r}")
        elif key not in SECTIONS:
            bad(line, key, f"unknown key; use {_NAMES}")
        elif value is None:
            out.append((key, []))
        elif isinstance(value, list) and isinstance(value_node, yaml.SequenceNode):
            out.append((key, _yaml_items(name, value_node, value, problems)))
        else:
            bad(line, key, "expected a list of records")
    return out


def _yaml_items(
    name: str, node: yaml.SequenceNode, items: list[Any], problems: list[Problem]
) -> list[tuple[Any, _Source]]:
    out: list[tuple[Any, _Source]] = []
    for item_node, item in zip(node.value, items, strict=True):
        line = item_node.start_mark.line + 1
        if not (isinstance(item, dict) and isinstance(item_node, yaml.MappingNode)):
            problems.append(Problem(name, line, None, "expected a record (field: value)", "line"))
            continue
        rows = {str(k.value): k.start_mark.line + 1 for k, _ in item_node.value}
        out.append((item, _Source(name, line, "line", rows)))
    return out


# --- validation and cross-checks ---------------------------------------------------------------


def _validate(section: str, data: Any, src: _Source, problems: list[Problem]) -> BaseModel | None:
    try:
        return _MODELS[section].model_validate(normalise(data))
    except CellError as e:
        problems.append(src.problem(e.field, str(e)))
    except ValidationError as e:
        for err in e.errors(include_url=False):
            loc = [str(p) for p in err["loc"]]
            label = loc[0] if loc else None
            if len(loc) > 1:
                label = loc[0] + "".join(
                    f"[{int(p) + 1}]" if p.isdigit() else f".{p}" for p in loc[1:]
                )
            msg = err["msg"]
            if err["type"] != "missing" and isinstance(err.get("input"), str | int | float):
                msg += f" (got {str(err['input'])[:40]!r})"
            problems.append(Problem(src.file, src.at(loc[0] if loc else ""), label, msg, src.unit))
    return None


def _cross_check(records: dict[str, list[tuple[Any, _Source]]], given: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    ids: dict[str, dict[str, _Source]] = {}
    for section in SECTIONS:
        key, seen = _KEYS[section], ids.setdefault(section, {})
        for record, src in records[section]:
            rid = getattr(record, key)
            if rid in seen:
                first = seen[rid]
                problems.append(
                    src.problem(
                        key,
                        f"duplicate id {rid!r} (first at {first.file} {first.unit} {first.row})",
                    )
                )
            else:
                seen[rid] = src
    buildings: dict[str, Building] = {b.building: b for b, _ in records["buildings"]}
    compounds = {b.compound for b in buildings.values()}
    # buildings listed (an empty buildings file, as write_registry leaves, checks nothing)
    check_places = "buildings" in given and bool(buildings)
    for d, src in records["devices"]:
        if check_places and d.building is not None and d.building not in buildings:
            problems.append(src.problem("building", f"unknown building {d.building!r}"))
        elif (
            check_places
            and d.building is not None
            and buildings[d.building].compound != (d.compound)
        ):
            problems.append(
                src.problem(
                    "compound",
                    f"building {d.building!r} is in compound "
                    f"{buildings[d.building].compound!r}, not {d.compound!r}",
                )
            )
        elif check_places and d.compound not in compounds:
            problems.append(src.problem("compound", f"unknown compound {d.compound!r}"))
        if d.resident_id is not None and d.kind != "wearable":
            problems.append(src.problem("resident_id", f"a {d.kind} has no wearer"))
        elif d.resident_id is not None and d.resident_id not in ids["residents"]:
            problems.append(src.problem("resident_id", f"unknown resident {d.resident_id!r}"))
    for r, src in records["residents"]:
        if check_places and r.building not in buildings:
            problems.append(src.problem("building", f"unknown building {r.building!r}"))
        for c in r.caretakers:
            if c not in ids["staff"]:
                problems.append(src.problem("caretakers", f"unknown staff id {c!r}"))
    for s, src in records["staff"] if check_places else ():
        for b in (*s.buildings, *(sh.building for sh in s.shifts if sh.building)):
            if b not in buildings:
                problems.append(src.problem("buildings", f"unknown building {b!r}"))
        for c in s.compounds:
            if c not in compounds:
                problems.append(src.problem("compounds", f"unknown compound {c!r}"))
    return problems


def check_registry(registry: Registry) -> None:
    """The loader's cross-checks over records built in memory (an API change, an import), as
    :func:`load_registry` makes them when the written files are read back; raise
    :class:`RegistryError` whose problems name the section, the record's id and the field."""
    records: dict[str, list[tuple[Any, _Source]]] = {}
    for section in SECTIONS:
        items: dict[str, BaseModel] = getattr(registry, section)
        records[section] = [
            (r, _Source(f"{section}[{rid}]", 0, "record")) for rid, r in items.items()
        ]
    problems = _cross_check(records, set(SECTIONS))
    if problems:
        raise RegistryError([Problem(p.file, None, p.field, p.message) for p in problems])


# --- writing -----------------------------------------------------------------------------------


def _dump(record: BaseModel) -> dict[str, Any]:
    data = record.model_dump(mode="json", exclude_defaults=True)
    if isinstance(record, Staff) and record.shifts:
        data["shifts"] = [format_shift(s) or s.model_dump(mode="json") for s in record.shifts]
    return data


def write_registry(registry: Registry, directory: Path, modes_of: Path | None = None) -> list[Path]:
    """Write ``buildings/devices/residents/staff.yaml`` into ``directory`` (each replaced
    atomically and durably: a power cut leaves the old file or the new) so that
    :func:`load_registry` reads back the same records. A file is written with the mode of the
    one it replaces in ``modes_of`` (default: ``directory``), or 0600: it holds names, home
    coordinates and notification URLs with their tokens."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    like = directory if modes_of is None else modes_of
    sections: dict[str, list[BaseModel]] = {
        "buildings": list(registry.buildings.values()),
        "devices": list(registry.devices.values()),
        "residents": list(registry.residents.values()),
        "staff": list(registry.staff.values()),
    }
    written = []
    for section, records in sections.items():
        body = yaml.dump(
            [_dump(r) for r in records],
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=None,
            width=100,
        )
        head = f"# {section} of community {registry.community} ({len(records)}), by jiayuan\n"
        path = directory / f"{section}.yaml"
        write_file(path, head + body, mode_of(like / path.name))
        written.append(path)
    return written
