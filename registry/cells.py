"""Cell values as people type them into a community's spreadsheet, turned into record fields.

Used for CSV cells (always text) and for the same fields in YAML, where a list may also be
written as one string. Every parser raises :class:`CellError` naming what is wrong; the loader
adds the file, row and field.

- lists of ids (``caretakers``, ``buildings``, ``compounds``): separated by ``;``, ``；``, ``,``,
  ``，``, ``、`` or spaces
- ``channels``: separated by whitespace or ``;`` / ``；`` (a URL may hold a comma)
- ``thresholds``: ``heart_rate_high=110;spo2_low=88``
- ``allowed_area``: ``lat,lon,radius_m``
- ``via`` (how a device reports): a profile's or an integration's id; empty or ``native``
  for native MQTT under the device's own broker account
- ``shifts``: ``Mon-Fri 08:00-20:00@B03; Sat,Sun 08:00-12:00``; without days, every day;
  ``24:00`` as an end is the end of the day; an end before the start wraps past midnight.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Any, Final

from registry.models import Shift

DAY_NAMES: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
END_OF_DAY: Final = time(23, 59, 59)
_FULL_DAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_IDS = re.compile(r"[;；,，、\s]+")
_CHANNELS = re.compile(r"[;；\s]+")
_PAIRS = re.compile(r"[;；,，\s]+")
_AREA = re.compile(r"[;；,，\s]+")
_SHIFTS = re.compile(r"[;；\n]+")
_SHIFT = re.compile(
    r"(?:(?P<days>[A-Za-z*][A-Za-z*,，/ -]*?)\s+)?"
    r"(?P<start>\d{1,2}:\d{2}(?::\d{2})?)\s*[-–~]\s*(?P<end>\d{1,2}:\d{2}(?::\d{2})?)"
    r"(?:\s*@\s*(?P<building>[A-Za-z0-9_-]+))?"
)
_ALL_DAYS = frozenset({"daily", "*", "all", "everyday", "every day"})
_INT_FIELDS = frozenset({"floor", "floors"})
_NATIVE = frozenset({"", "native", "mqtt", "原生"})
_FLOAT_TEXT = re.compile(r"[-+]?\d+\.0*")

VALUE_ALIASES: Final[dict[str, dict[str, str]]] = {
    "kind": {
        "烟感": "smoke", "烟感探测器": "smoke", "烟雾报警器": "smoke",
        "手环": "wearable", "智能手环": "wearable", "手表": "wearable",
        "门禁": "gate", "道闸": "gate",
    },
    "role": {
        "保安": "security", "安保": "security", "护理员": "caretaker", "照护员": "caretaker",
        "值班经理": "manager", "经理": "manager", "管理员": "admin", "操作员": "operator",
        "值班员": "operator", "区域主管": "district_manager", "区域经理": "district_manager",
    },
}  # fmt: skip


IGNORED_COLUMNS: Final = frozenset({"", "notes", "note", "comment", "comments", "remarks", "备注"})
COLUMN_ALIASES: Final = {
    "设备编号": "device_id", "设备id": "device_id", "device": "device_id",
    "类型": "kind", "设备类型": "kind", "小区": "compound", "院落": "compound",
    "楼栋": "building", "楼号": "building", "户号": "unit", "房号": "room", "楼层": "floor",
    "层数": "floors", "名称": "name", "姓名": "name", "位置": "name",
    "称呼": "display_name", "显示名": "display_name",
    "居民编号": "resident_id", "老人编号": "resident_id", "resident": "resident_id",
    "护理员": "caretakers", "caretaker": "caretakers", "阈值": "thresholds",
    "活动范围": "allowed_area", "员工编号": "staff_id", "工号": "staff_id", "staff": "staff_id",
    "角色": "role", "岗位": "role", "通知方式": "channels", "channel": "channels",
    "班次": "shifts", "shift": "shifts", "负责楼栋": "buildings", "负责小区": "compounds",
    "接入方式": "via", "接入": "via",
}  # fmt: skip
"""Column headers a spreadsheet may use instead of the field name (Chinese, singular)."""


def column_name(key: str, header: str) -> str:
    """The field a column header names; ``id`` is the record's ``key`` field."""
    name = header.strip().strip("\ufeff").lower().replace(" ", "_").replace("-", "_")
    if name == "id":
        return key
    field = COLUMN_ALIASES.get(name, name)
    if key == "resident_id" and field == "name":  # a resident's "姓名": what staff call them
        return "display_name"
    return field


class CellError(ValueError):
    """A cell that cannot be read; ``field`` names it (``shifts[2]`` for a part of a list)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def split_ids(text: str) -> list[str]:
    return [p for p in _IDS.split(text) if p]


def split_channels(text: str) -> list[str]:
    return [p for p in _CHANNELS.split(text) if p]


def parse_thresholds(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in _PAIRS.split(text):
        if not pair:
            continue
        name, sep, value = pair.replace("＝", "=").partition("=")
        if not sep or not name or not value:
            raise CellError("thresholds", f"expected name=value, got {pair!r}")
        out[name.strip()] = value.strip()
    return out


def parse_area(text: str) -> list[str]:
    parts = [p for p in _AREA.split(text) if p]
    if len(parts) != 3:
        raise CellError("allowed_area", f"expected lat,lon,radius_m, got {text!r}")
    return parts


def parse_days(text: str) -> tuple[int, ...]:
    """``Mon-Fri``, ``Sat,Sun``, ``Mon,Wed-Fri``, ``Fri-Mon`` (wraps), ``daily``."""
    text = text.strip()
    if text.lower() in _ALL_DAYS:
        return tuple(range(7))
    days: set[int] = set()
    for token in re.split(r"[,，/]+", text):
        first, sep, last = (t.strip() for t in token.partition("-"))
        a = _day(first)
        if not sep:
            days.add(a)
            continue
        b = _day(last)
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return tuple(sorted(days))


def _day(name: str) -> int:
    key = name.strip().lower()
    for i, full in enumerate(_FULL_DAYS):
        if len(key) >= 2 and full.startswith(key):
            return i
    raise ValueError(f"unknown day {name!r} (use Mon, Tue, … Sun)")


def parse_time(text: str) -> time:
    parts = [int(p) for p in text.split(":")]
    h, m, s = [*parts, 0, 0][:3]
    if (h, m, s) == (24, 0, 0):
        return END_OF_DAY
    if not (0 <= h <= 23 and 0 <= m <= 59 and 0 <= s <= 59):
        raise ValueError(f"no such time {text!r}")
    return time(h, m, s)


def parse_shift(text: str) -> Shift:
    """One shift, e.g. ``Mon-Fri 08:00-20:00@B03``; raises ValueError saying what is wrong."""
    m = _SHIFT.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"expected e.g. 'Mon-Fri 08:00-20:00@B03', got {text.strip()!r}")
    days = parse_days(m["days"]) if m["days"] else tuple(range(7))
    return Shift(
        days=days, start=parse_time(m["start"]), end=parse_time(m["end"]), building=m["building"]
    )


def format_shift(shift: Shift) -> str | None:
    """The one-line form of a shift, or None when it has none that reads back the same."""
    if shift.start.microsecond or shift.end.microsecond or not shift.days:
        return None
    text = f"{_format_days(shift.days)} {_hm(shift.start)}-"
    text += "24:00" if shift.end == END_OF_DAY else _hm(shift.end)
    if shift.building:
        text += f"@{shift.building}"
    try:
        same = parse_shift(text) == shift
    except ValueError:
        same = False
    return text if same else None


def _hm(t: time) -> str:
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


def _format_days(days: tuple[int, ...]) -> str:
    if tuple(days) == tuple(range(7)):
        return "daily"
    runs: list[list[int]] = []
    for d in days:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ",".join(
        DAY_NAMES[r[0]] if len(r) == 1 else f"{DAY_NAMES[r[0]]}-{DAY_NAMES[r[-1]]}" for r in runs
    )


def _shift_item(item: Any, i: int) -> Any:
    try:
        if isinstance(item, str):
            return parse_shift(item)
        if isinstance(item, dict) and isinstance(item.get("days"), str):
            return {**item, "days": parse_days(item["days"])}
        if isinstance(item, dict) and isinstance(item.get("days"), list):
            days = [_day(d) if isinstance(d, str) else d for d in item["days"]]
            return {**item, "days": days}
    except ValueError as e:
        raise CellError(f"shifts[{i + 1}]", str(e)) from None
    return item


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Turn the text forms above into what the record models take; leave the rest to them."""
    out = dict(data)
    for name, value in data.items():
        if name in VALUE_ALIASES and isinstance(value, str):
            out[name] = VALUE_ALIASES[name].get(value.strip(), value.strip().lower())
        elif name in ("caretakers", "buildings", "compounds") and isinstance(value, str):
            out[name] = split_ids(value)
        elif name == "channels" and isinstance(value, str):
            out[name] = split_channels(value)
        elif name == "thresholds" and isinstance(value, str):
            out[name] = parse_thresholds(value)
        elif name == "allowed_area" and isinstance(value, str):
            out[name] = parse_area(value)
        elif name == "shifts":
            items = (
                [s for s in _SHIFTS.split(value) if s.strip()] if isinstance(value, str) else value
            )
            if isinstance(items, list):
                out[name] = [_shift_item(s, i) for i, s in enumerate(items)]
        elif name == "via" and isinstance(value, str) and value.strip().lower() in _NATIVE:
            out[name] = None  # a device's own broker account: what an empty cell says too
        elif name in _INT_FIELDS and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value):
            out[name] = value.split(".")[0]  # Excel writes whole numbers as 5.0
    return out
