"""Spreadsheet cell formats: shifts, days, lists, thresholds."""

from __future__ import annotations

from datetime import time

import pytest

from registry.cells import (
    CellError,
    format_shift,
    normalise,
    parse_days,
    parse_shift,
    parse_thresholds,
    split_ids,
)
from registry.models import Shift


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("Mon-Fri", (0, 1, 2, 3, 4)),
        ("sat,sun", (5, 6)),
        ("Mon,Wed-Fri", (0, 2, 3, 4)),
        ("Fri-Mon", (0, 4, 5, 6)),
        ("daily", (0, 1, 2, 3, 4, 5, 6)),
        ("Tuesday", (1,)),
    ],
)
def test_days(text: str, days: tuple[int, ...]) -> None:
    assert parse_days(text) == days


@pytest.mark.parametrize(
    ("text", "shift", "canonical"),
    [
        (
            "Mon-Fri 08:00-20:00@B03",
            Shift(days=(0, 1, 2, 3, 4), start=time(8), end=time(20), building="B03"),
            "Mon-Fri 08:00-20:00@B03",
        ),
        ("20:00-08:00", Shift(start=time(20), end=time(8)), "daily 20:00-08:00"),
        (
            "Sat, Sun 8:00 – 24:00",
            Shift(days=(5, 6), start=time(8), end=time(23, 59, 59)),
            "Sat-Sun 08:00-24:00",
        ),
        (
            "Mon 07:00:30-08:00",
            Shift(days=(0,), start=time(7, 0, 30), end=time(8)),
            "Mon 07:00:30-08:00",
        ),
    ],
)
def test_shift_text_round_trip(text: str, shift: Shift, canonical: str) -> None:
    assert parse_shift(text) == shift
    assert format_shift(shift) == canonical
    assert parse_shift(canonical) == shift


@pytest.mark.parametrize("text", ["Mon-Fri", "Funday 08:00-09:00", "Mon 25:00-26:00", "8-9"])
def test_bad_shifts_say_what_is_wrong(text: str) -> None:
    with pytest.raises(ValueError):
        parse_shift(text)


def test_a_shift_without_a_text_form_is_left_to_the_mapping_form() -> None:
    assert format_shift(Shift(days=(4, 0))) is None  # order would change
    assert format_shift(Shift(start=time(8, 0, 0, 5))) is None


def test_lists_and_thresholds() -> None:
    assert split_ids("care-1；care-2; care-3、care-4,care-5") == [f"care-{i}" for i in range(1, 6)]
    assert parse_thresholds("heart_rate_high=110;spo2_low＝88") == {
        "heart_rate_high": "110",
        "spo2_low": "88",
    }
    with pytest.raises(CellError) as exc:
        parse_thresholds("heart_rate_high:110")
    assert exc.value.field == "thresholds"


def test_normalise_maps_chinese_values_and_leaves_yaml_values_alone() -> None:
    data = normalise({"kind": "烟感", "role": "护理员", "caretakers": ["a", "b"], "floor": "5.0"})
    assert data == {"kind": "smoke", "role": "caretaker", "caretakers": ["a", "b"], "floor": "5"}
