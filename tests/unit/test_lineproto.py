"""Line protocol: escaping by the rules of InfluxDB's line protocol, and the schema's lines."""

from __future__ import annotations

import json
import math

import pytest

from ingest import lineproto
from ingest.lineproto import LineFormatter


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain", "plain"),
        ("a b", "a\\ b"),
        ("a,b", "a\\,b"),
        ("a=b", "a\\=b"),
        ("ends\\", "ends\\\\"),
        ("line\nbreak", "line\\ break"),
        ("1号楼 东", "1号楼\\ 东"),
    ],
)
def test_tag_keys_values_and_field_keys(text: str, escaped: str) -> None:
    assert lineproto.key(text) == escaped


def test_measurements_escape_commas_and_spaces_but_not_equals() -> None:
    assert lineproto.measurement("my meas,x=1") == "my\\ meas\\,x=1"


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("fall", '"fall"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("two\nlines", '"two\\nlines"'),
        ("a, b=c d", '"a, b=c d"'),  # commas, equals and spaces need nothing inside quotes
    ],
)
def test_string_field_values(text: str, quoted: str) -> None:
    assert lineproto.string(text) == quoted


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (72, "float", "72"),  # no suffix: a float in line protocol
        (36.55, "float", "36.55"),
        (1e-05, "float", "1e-05"),
        (math.inf, "float", None),
        (math.nan, "float", None),
        (True, "float", None),
        (12, "int", "12i"),
        (12.5, "int", None),
        (True, "bool", "true"),
        (False, "bool", "false"),
        (1, "bool", None),
        ("72", "float", None),
    ],
)
def test_numbers_keep_their_declared_type(value: object, kind: str, text: str | None) -> None:
    assert lineproto.number(value, kind) == text  # type: ignore[arg-type]


def test_tag_sets_are_sorted_and_leave_out_empty_values() -> None:
    assert lineproto.tag_set([("device_id", "w 1"), ("building", ""), ("community", "y")]) == (
        ",community=y,device_id=w\\ 1"
    )


def row(kind: str, stream: str, name: str | None = None, **body: object) -> lineproto.Row:
    return (1, "w-1", kind, stream, 1_700_000_000_123, name, json.dumps(body))


@pytest.fixture
def fmt() -> LineFormatter:
    f = LineFormatter("y")
    f.set_devices([("w-1", "y", "North, gate", "3号楼"), ("g-1", None, None, None)])
    return f


def test_telemetry_line(fmt: LineFormatter) -> None:
    line = fmt.line(
        row(
            "wearable",
            "telemetry",
            seq=4,
            ts=1_700_000_000_123,
            heart_rate=72,
            skin_temp_c=36.5,
            steps=1200,
            worn=True,
            lat=36.06,
            mood="ok",
            extra={},
        )
    )
    assert line == (
        "wearable,building=3号楼,community=y,compound=North\\,\\ gate,device_id=w-1"
        " heart_rate=72,skin_temp_c=36.5,steps=1200i,worn=true,lat=36.06 1700000000123"
    )


def test_non_finite_values_and_unknown_fields_are_not_written(fmt: LineFormatter) -> None:
    payload = '{"co_ppm": Infinity, "battery": 1e400, "temperature_c": 21.5, "note": 3}'
    line = fmt.line((1, "w-1", "smoke", "telemetry", 1000, None, payload))
    assert line is not None and line.endswith("device_id=w-1 temperature_c=21.5 1000")


def test_telemetry_with_nothing_to_write_gives_no_line(fmt: LineFormatter) -> None:
    assert fmt.line(row("gate", "telemetry", seq=1)) is None
    assert fmt.line(row("smoke", "telemetry", co_ppm=math.inf)) is None


def test_event_and_status_lines(fmt: LineFormatter) -> None:
    gate = (
        2,
        "g-1",
        "gate",
        "event",
        1_700_000_000_500,
        "granted",
        json.dumps(
            {"event": "granted", "direction": "in", "method": "card", "credential": "C-123"}
        ),
    )
    assert fmt.line(gate) == (
        'gate_event,community=y,device_id=g-1 event="granted",count=1i,direction="in",'
        'method="card" 1700000000500'
    )
    fall = fmt.line(row("wearable", "event", "fall", event="fall"))
    assert fall is not None and fall.endswith(' event="fall",count=1i 1700000000123')
    status = fmt.line(row("wearable", "status", "offline", state="offline", fw='2.1 "b"'))
    assert status is not None and status.startswith("wearable_status,")
    assert status.endswith(' online=false,fw="2.1 \\"b\\"" 1700000000123')


def test_a_device_not_in_the_devices_table_gets_community_and_id(fmt: LineFormatter) -> None:
    line = fmt.line((1, "new-1", "wearable", "telemetry", 2000, None, '{"spo2": 97}'))
    assert line == "wearable,community=y,device_id=new-1 spo2=97 2000"
