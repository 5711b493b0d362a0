"""Property: whatever arrives, ``decode`` answers and the journal keeps the answer.

Arbitrary bytes, arbitrary JSON (deep nesting, integers of any size, NaN and infinities,
Unicode with lone surrogates, repeated keys written as raw text) on the real topic shapes:
decode never raises, and every message is either a reading the journal stores and gives back
through its history query, or a dead letter with a known reason that the journal stores too.
"""

from __future__ import annotations

import itertools
import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ingest.journal import Journal
from ingest.payloads import MODELS, REASONS, DeadLetter, Reading, decode

NOW = 1_795_777_822.0
SHAPES = sorted(MODELS)
_ids = itertools.count()

# Every code point, lone surrogates included (hypothesis leaves them out by default).
any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.one_of(
    st.text(max_size=12), st.text(any_char, max_size=12), st.text(surrogate, max_size=2)
)
numbers = st.one_of(
    st.integers(),  # of any size: past 2**63, 400 digits
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)
known_fields = st.sampled_from(
    [
        "ts",
        "seq",
        "heart_rate",
        "spo2",
        "steps",
        "battery",
        "worn",
        "lat",
        "co_ppm",
        "temperature_c",
        "event",
        "state",
        "fw",
        "credential",
        "direction",
    ]
)
plausible = st.one_of(
    st.sampled_from(["fall", "sos", "alarm", "granted", "online", "in", "card"]),
    st.integers(min_value=0, max_value=300),
    st.floats(min_value=-50, max_value=300),
    st.just("2026-11-27T10:00:00+08:00"),
    st.integers(min_value=1_795_700_000_000, max_value=1_795_777_822_000),
)
pairs = st.lists(
    st.tuples(st.one_of(known_fields, texts), st.one_of(plausible, values)), max_size=8
)


def _raw_object(items: list[tuple[str, Any]], ascii_only: bool) -> bytes:
    """An object written pair by pair, so that a key may come twice."""
    body = ",".join(
        f"{json.dumps(k, ensure_ascii=ascii_only)}:{json.dumps(v, ensure_ascii=ascii_only)}"
        for k, v in items
    )
    return ("{" + body + "}").encode("utf-8", "surrogatepass")


def _nested(depth: int, inner: bytes) -> bytes:
    return b'{"x": ' + b"[" * depth + inner + b"]" * depth + b"}"


def _fields(kind: str, stream: str) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly what the shape's model takes (its required names with a value it knows), some
    of its other fields with plausible values, and an unknown field of any value."""
    fields = MODELS[(kind, stream)].model_fields
    required = {
        n: st.sampled_from(typing.get_args(f.annotation))
        for n, f in fields.items()
        if f.is_required()
    }
    return st.builds(
        lambda req, opt, extra: {**opt, **req, **extra},
        st.fixed_dictionaries(required),
        st.dictionaries(st.sampled_from(sorted(fields)), plausible, max_size=4),
        st.dictionaries(texts, values, max_size=1),
    )


payloads = st.one_of(
    st.binary(max_size=200),
    st.builds(_raw_object, pairs, st.booleans()),
    values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    st.builds(_nested, st.integers(min_value=1, max_value=1600), st.sampled_from([b"", b"1"])),
    st.integers(min_value=1, max_value=1600).map(lambda n: b"[" * n + b"]" * n),
    st.builds(lambda b: b"\xef\xbb\xbf" + b, st.builds(_raw_object, pairs, st.booleans())),
)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journal]:
    j = Journal(Path(tmp_path_factory.mktemp("prop")) / "journal.db", synchronous="NORMAL")
    yield j
    j.close()


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shape=st.sampled_from(SHAPES),
    data=st.data(),
    odd=st.integers(min_value=0, max_value=7),
)
def test_any_message_is_a_stored_reading_or_a_stored_dead_letter(
    journal: Journal, shape: tuple[str, str], data: st.DataObject, odd: int
) -> None:
    device = f"p{next(_ids)}"
    kind, stream = shape
    topic = data.draw(texts) if odd == 0 else f"community/y/{kind}/{device}/{stream}"
    payload = data.draw(
        st.one_of(
            payloads,
            st.builds(
                lambda d, a: json.dumps(d, ensure_ascii=a).encode("utf-8", "surrogatepass"),
                _fields(kind, stream),
                st.booleans(),
            ),
        )
    )
    out = decode(topic, payload, NOW)  # never raises
    event(out.reason if isinstance(out, DeadLetter) else "reading")
    dead_before = journal.dead_letters(limit=1)[1]
    if isinstance(out, DeadLetter):
        assert out.reason in REASONS, out
        journal.write_batch([], [out])  # never refused
        items, total = journal.dead_letters(limit=1)
        assert total == dead_before + 1 and items[0]["reason"] == out.reason
        json.dumps(items, allow_nan=False)  # what the API answers with
        return
    assert isinstance(out, Reading)
    result = journal.write_batch([out], [])  # never refused
    assert [r.device_id for r in result.new] == [device]
    rows = journal.readings(device)
    assert len(rows) == 1
    assert rows[0]["values"] == json.loads(out.payload)  # as it came, and readable
    assert rows[0]["stream"] == stream and rows[0]["event"] == out.event
    json.dumps(rows, allow_nan=False)  # what the API answers with
