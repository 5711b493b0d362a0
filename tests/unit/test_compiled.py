"""The modules compiled with mypyc (devtools/compile.py) are the compiled ones when the tests run,
built from their current source, and answer exactly as their Python source does: both are run
on the same generated inputs (PUBLISH packets cut anywhere, garbage, payloads of every kind)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import struct
import sys
from types import ModuleType
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.compile import MODULES, ROOT, stale
from ingest import rowcodec, wire
from ingest.payloads import Reading, decode
from tests.unit.test_decode_equivalence import SETTINGS
from tests.unit.test_journal_rows import messages


def _source(name: str, path: str) -> ModuleType:
    """The module's ``.py`` run as Python, under a name of its own."""
    spec = importlib.util.spec_from_file_location(f"_pure_{name}", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


PURE_WIRE = _source("wire", "ingest/wire.py")
PURE_ROWCODEC = _source("rowcodec", "ingest/rowcodec.py")


@pytest.mark.parametrize("source", MODULES)
def test_each_listed_module_is_imported_compiled_from_its_current_source(source: str) -> None:
    name = source.removesuffix(".py").replace("/", ".")
    module = sys.modules.get(name) or importlib.import_module(name)
    assert module.__file__ is not None
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
        f"{name} runs as Python ({module.__file__}): `make venv` compiles it"
    )
    assert not stale(source), f"{name} was compiled from an older source: `make venv`"


def test_the_python_source_is_not_the_compiled_module() -> None:
    """(So that the comparisons below compare two things.)"""
    assert PURE_WIRE.publishes is not wire.publishes
    assert str(PURE_WIRE.__file__).endswith(".py")
    assert not str(wire.__file__).endswith(".py")


def _publish(topic: bytes, payload: bytes, mid: int, qos: int, retain: bool, props: bytes) -> bytes:
    body = struct.pack(">H", len(topic)) + topic
    if qos:
        body += struct.pack(">H", mid)
    body += bytes([len(props)]) + props + payload
    length, n = b"", len(body)
    while True:
        byte, n = n & 127, n >> 7
        length += bytes([byte | (128 if n else 0)])
        if not n:
            break
    return bytes([0x30 | qos << 1 | int(retain)]) + length + body


packets = st.one_of(
    st.builds(
        _publish,
        st.binary(max_size=40),
        st.binary(max_size=300),
        st.integers(0, 65_535),
        st.integers(0, 2),
        st.booleans(),
        st.sampled_from([b"", b"", b"", b"\x01\x01"]),
    ),
    st.binary(max_size=8),  # another packet, or garbage
)


@SETTINGS
@given(st.lists(packets, max_size=12), st.integers(0, 4000), st.integers(0, 3))
def test_compiled_publish_parsing_answers_as_its_source(
    stream: list[bytes], cut: int, start: int
) -> None:
    buf = b"".join(stream)
    buf = buf[: min(cut, len(buf))]
    pos = min(start, len(buf))
    got_c: list[wire.Publish] = []
    got_p: list[wire.Publish] = []
    assert wire.publishes(buf, pos, got_c) == PURE_WIRE.publishes(buf, pos, got_p)
    assert got_c == got_p


def test_publish_parsing_reads_what_was_written() -> None:
    a = _publish(b"community/y/wearable/w-1/telemetry", b'{"x":1}', 7, 1, False, b"")
    b = _publish(b"t", b"", 0, 0, True, b"")
    with_props = _publish(b"t", b"p", 9, 1, False, b"\x01\x01")
    got: list[wire.Publish] = []
    end = wire.publishes(a + b + with_props + a, 0, got)
    assert got == [
        (b"community/y/wearable/w-1/telemetry", b'{"x":1}', 7, 1, False),
        (b"t", b"", 0, 0, True),
    ]
    assert end == len(a + b), "a PUBLISH with properties is left to paho"
    half: list[wire.Publish] = []
    assert wire.publishes(a[:-1], 0, half) == 0 and half == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
objects = st.dictionaries(
    st.sampled_from([*rowcodec.NAMES, "note", "x"]) | st.text(max_size=6), json_values, max_size=8
)


@SETTINGS
@given(
    objects,
    st.floats(1.6e9, 2e9),
    st.sampled_from([None, "estimated"]),
    st.none() | st.integers(-5, 2**40),
    st.booleans(),
)
def test_compiled_row_payloads_answer_as_their_source(
    obj: dict[str, Any], ts: float, flag: str | None, seq: int | None, as_columns: bool
) -> None:
    if as_columns:  # ts and seq as the row's columns hold them, as a device nearly always sends
        obj = {**obj, "ts": round(ts * 1000), "seq": seq}
        ts = obj["ts"] / 1000.0
    body = json.dumps(obj).encode()
    stored = rowcodec.dump(body, ts, flag, seq)
    assert stored == PURE_ROWCODEC.dump(body, ts, flag, seq)
    if isinstance(stored, bytes):
        loaded = rowcodec.load(stored, ts, seq)
        assert json.dumps(loaded) == json.dumps(PURE_ROWCODEC.load(stored, ts, seq))
        assert json.dumps(msgspec.to_builtins(loaded)) == json.dumps(json.loads(body))
        assert rowcodec.fields(stored) == PURE_ROWCODEC.fields(stored)
    assert rowcodec.as_json(stored, ts, seq) == PURE_ROWCODEC.as_json(stored, ts, seq)


@SETTINGS
@given(messages())
def test_compiled_row_payloads_of_decoded_messages_answer_as_their_source(
    message: tuple[str, bytes],
) -> None:
    topic, payload = message
    r = decode(topic, payload, 1_795_777_822.0)
    if not isinstance(r, Reading):
        return
    stored = rowcodec.dump(r.payload, r.ts, r.ts_flag, r.seq)
    assert stored == PURE_ROWCODEC.dump(r.payload, r.ts, r.ts_flag, r.seq)
    assert rowcodec.as_json(stored, r.ts, r.seq) == PURE_ROWCODEC.as_json(stored, r.ts, r.seq)
