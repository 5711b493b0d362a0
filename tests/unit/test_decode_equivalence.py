"""The msgspec decoder on the hot path (:func:`decode`) answers exactly as the pydantic one it
replaced (:func:`decode_reference`): the same reading, field by field and type by type (72.0 is
not 72, -0.0 is not 0.0), or the same dead letter (reason and detail).

Run on the corpus of messages that once went wrong, on the benchmark's mixes, and on generated
payloads: valid ones for each topic kind (as the simulators write them and otherwise), mutations
of those (wrong types, bounds crossed by a hair, repeated keys, unknown fields of any value,
numbers written every way JSON allows, other time forms, cut or spliced bytes), and hostile JSON
(deep nesting, 400-digit numbers, lone surrogates, strings past the size limit).
"""

from __future__ import annotations

import json
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel

from bench.decode import POISON, TYPICAL
from ingest import payloads
from ingest.payloads import MAX_NUMBER, MODELS, DeadLetter, Reading, decode, decode_reference
from ingest.strictjson import may_repeat_keys
from tests.unit.test_decode_corpus import CORPUS

NOW = 1_795_777_822.0
SHAPES = sorted(MODELS)
SETTINGS = settings(
    max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _typed(v: Any) -> Any:
    """``v`` with every scalar's type beside its repr, so that equal-but-different values
    (1 and 1.0 and True, 0.0 and -0.0) do not pass for one another."""
    if isinstance(v, dict):
        return [(_typed(k), _typed(x)) for k, x in v.items()]  # in order
    if isinstance(v, list | tuple):
        return [type(v).__name__, *(_typed(x) for x in v)]
    return (type(v).__name__, repr(v))


def assert_same(
    topic: str, payload: bytes, communities: frozenset[str] | None = None
) -> Reading | DeadLetter:
    fast = decode(topic, payload, NOW, communities)
    ref = decode_reference(topic, payload, NOW, communities)
    assert type(fast) is type(ref), (fast, ref)
    if isinstance(ref, DeadLetter):
        assert fast == ref
    else:
        assert isinstance(fast, Reading)
        assert _typed(msgspec.structs.asdict(fast)) == _typed(msgspec.structs.asdict(ref))
    return fast


def _took_fast_path(topic: str, payload: bytes) -> bool:
    return payloads._fast(topic, payload, NOW) is not None


@pytest.mark.parametrize(
    ("topic", "payload"),
    [(t, p) for _, t, p, _ in CORPUS] + TYPICAL + POISON,
    ids=[c[0] for c in CORPUS]
    + [f"typical {i}" for i in range(len(TYPICAL))]
    + [f"poison {i}" for i in range(len(POISON))],
)
def test_the_corpus_and_the_benchmark_mixes_decode_alike(topic: str, payload: bytes) -> None:
    assert_same(topic, payload)


def test_the_common_payloads_take_the_fast_path() -> None:
    """Not a vacuous proof: what devices send is read by msgspec, not handed back."""
    for topic, payload in TYPICAL:
        assert _took_fast_path(topic, payload), payload


# --- valid payloads per topic kind, derived from the models -----------------------------------

OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda m: timezone(timedelta(minutes=m))
)
times = st.datetimes(
    min_value=datetime(2026, 11, 25), max_value=datetime(2026, 11, 28), timezones=st.just(UTC)
)


def _rfc3339(when: datetime, tz: timezone, spec: str, zulu: bool) -> str:
    text = when.astimezone(tz).isoformat(timespec=spec)
    return text.replace("+00:00", "Z") if zulu else text


device_times = st.one_of(
    st.builds(
        _rfc3339,
        times,
        OFFSETS,
        st.sampled_from(["seconds", "milliseconds", "microseconds"]),
        st.booleans(),
    ),
    times.map(lambda t: int(t.timestamp() * 1000)),
    st.integers(min_value=-MAX_NUMBER - 1, max_value=MAX_NUMBER + 1),
    st.sampled_from(
        [  # forms pydantic reads too: the fast path hands them over
            "2026-11-27 10:00:00+08:00",
            "2026-11-27t10:00:00z",
            "2026-11-27T10:00:00+0800",
            "2026-11-27T10:00Z",
            "2026-11-27T10:00:00.1234567+08:00",
            "2026-11-27T10:00:00-00:00",
            "1795777822",
            # and forms it refuses
            "2026-11-27T10:00:00",
            "2026-02-30T10:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T10:00:60Z",
            "2026-11-27T10:00:00+08:60",
            "2026-11-27T10:00:00+24:00",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+23:59",
            "２０２６-11-27T10:00:00Z",
            "",
        ]
    ),
    st.none(),
)


def _bounds(info: Any) -> tuple[Any, Any, Any]:
    ge = le = max_length = None
    for m in info.metadata:
        ge = getattr(m, "ge", ge)
        le = getattr(m, "le", le)
        max_length = getattr(m, "max_length", max_length)
    return ge, le, max_length


def _field_values(name: str, info: Any) -> st.SearchStrategy[Any]:
    """Values the model takes for one field, its bounds included, and a few just past them."""
    if name == "ts":
        return device_times
    ge, le, max_length = _bounds(info)
    union = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(info.annotation) if union else (info.annotation,)
    out: list[st.SearchStrategy[Any]] = []
    for t in members:
        if t is type(None) or t is AwareDatetime:
            continue
        if typing.get_origin(t) is typing.Literal:
            out.append(st.sampled_from(typing.get_args(t)))
        elif t is bool:
            out.append(st.booleans())
        elif t is int:
            out.append(st.integers(min_value=ge - 1, max_value=le + 1))
            out.append(st.sampled_from([ge, le, ge - 1, le + 1]))
        elif t is float:
            out.append(st.floats(min_value=ge, max_value=le))
            out.append(st.integers(min_value=ge, max_value=le))
            out.append(
                st.sampled_from([ge, le, float(ge), float(le), ge - 1e-9, le + 1e-9, -0.0, 0])
            )
        elif t is str:
            any_text = st.text(st.characters(codec="utf-8"), max_size=max_length + 2)
            out.append(st.one_of(st.text(max_size=max_length + 2), any_text))
        else:
            raise AssertionError(f"no values for {name}: {t!r}")
    return st.one_of(*out, st.none())


def _valid(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    fields = model.model_fields
    return st.builds(
        lambda req, opt: {**opt, **req},
        st.fixed_dictionaries(
            {n: _field_values(n, f) for n, f in fields.items() if f.is_required()}
        ),
        st.fixed_dictionaries(
            {},
            optional={n: _field_values(n, f) for n, f in fields.items() if not f.is_required()},
        ),
    )


# --- JSON written every way: blanks, escapes, numbers as text ---------------------------------


class RawJSON(typing.NamedTuple):
    """A value written as this JSON text as it is (``NUMBER``: a number drawn as text)."""

    text: str


NUMBER = "<number>"
json_numbers = st.from_regex(
    r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?", fullmatch=True
)
HOSTILE = [
    "NaN",
    "-Infinity",
    "1e400",
    "-1e400",
    "1e-400",
    "9" * 400,
    "-" + "9" * 400,
    str(2**63),
    str(2**64),
    str(MAX_NUMBER),
    str(MAX_NUMBER + 1),
    str(-MAX_NUMBER - 1),
    "true",
    "false",
    "null",
    "[]",
    "{}",
    '{"a": {"a": 1, "a": 2}}',
    "[" * 40 + "]" * 40,
    "[" * 31 + "1" + "]" * 31,
    "[1, [2, 1e400]]",
    '"72"',
    '"\\ud800"',
    '"\\udc00x"',
    '"\\ud83d\\ude00"',
    '"\\u0078"',
    '" :x"',
    '":"',
    '"{"',
    '"' + "[" * 40 + '"',
    '"]}{["',
    '"a\\u0000b"',
    '"\x01"',
    '"\t"',
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
    '"' + "x" * 5000 + '"',
]
hostile = st.sampled_from([*HOSTILE, NUMBER]).map(RawJSON)
blank = st.sampled_from(["", " ", "\t", "\n", "\r\n ", "  "])
any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
texts = st.one_of(st.text(max_size=8), st.text(any_char, max_size=8))


def _dump(v: Any, ascii_only: bool) -> str:
    return json.dumps(v, ensure_ascii=ascii_only)


@st.composite
def written(draw: st.DrawFn, items: list[tuple[str, Any]]) -> bytes:
    """``items`` as an object written by hand: keys may repeat, blanks go anywhere, a value may
    be raw JSON text (a number written another way, a hostile value)."""
    ascii_only = draw(st.booleans())
    compact = draw(st.booleans())  # as the simulators write: no blanks at all
    parts = []
    for k, v in items:
        if isinstance(v, RawJSON):
            value = draw(json_numbers) if v.text == NUMBER else v.text
        else:
            value = _dump(v, ascii_only)
        pad = ("", "", "") if compact else (draw(blank), draw(blank), draw(blank))
        parts.append(f"{pad[0]}{_dump(k, ascii_only)}{pad[1]}:{pad[2]}{value}")
    text = "{" + ",".join(parts) + ("" if compact else draw(blank)) + "}"
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, model: type[Any]) -> bytes:
    """A valid payload of ``model``, then some of: a value replaced (another field's value, a
    number written another way, a hostile value), a key repeated, an unknown field added, a
    field dropped; and sometimes its bytes cut or spliced, a BOM before it, bytes after it."""
    items: list[tuple[str, Any]] = list(draw(_valid(model)).items())
    fields = model.model_fields
    names = sorted(fields)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        how = draw(st.sampled_from(["replace", "repeat", "unknown", "drop", "number"]))
        if how == "replace" and items:
            i = draw(st.integers(min_value=0, max_value=len(items) - 1))
            other = draw(st.sampled_from(names))
            items[i] = (items[i][0], draw(_field_values(other, fields[other]) | hostile))
        elif how == "repeat" and items:
            items.append(draw(st.sampled_from(items)))
        elif how == "unknown":
            value = draw(st.one_of(texts, st.integers(), st.floats(), st.booleans(), hostile))
            items.append((draw(texts), value))
        elif how == "drop" and items:
            items.pop(draw(st.integers(min_value=0, max_value=len(items) - 1)))
        elif how == "number":
            items.append((draw(st.sampled_from(names)), RawJSON(NUMBER)))
    raw = draw(written(items))
    edit = draw(st.sampled_from(["none"] * 6 + ["cut", "splice", "bom", "trail"]))
    if edit == "cut":
        raw = raw[: draw(st.integers(min_value=0, max_value=len(raw)))]
    elif edit == "splice":
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:]
    elif edit == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif edit == "trail":
        raw += draw(st.sampled_from([b" ", b"\n", b"x", b"{}", b"\x00", b"\xc2\xa0"]))
    return raw


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts)
any_json = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=10,
)
hostile_payloads = st.one_of(
    st.binary(max_size=120),
    any_json.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    st.integers(min_value=1, max_value=1600).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=1, max_value=1600).map(lambda n: b'{"x": ' + b"[" * n + b"]" * n + b"}"),
    st.integers(min_value=0, max_value=6000).map(lambda n: b'{"note": "' + b"x" * n + b'"}'),
    st.lists(st.tuples(texts, any_json | hostile), max_size=6).flatmap(written),
)


def _tally(topic: str, payload: bytes) -> None:
    """Both decoders agree; the statistics (``--hypothesis-show-statistics``) tell the answers
    and which path gave them."""
    out = assert_same(topic, payload)
    event(out.reason if isinstance(out, DeadLetter) else "reading")
    event("path", "msgspec" if _took_fast_path(topic, payload) else "reference")


def _topic(shape: tuple[str, str]) -> str:
    return f"community/y/{shape[0]}/dev-1/{shape[1]}"


@SETTINGS
@given(shape=st.sampled_from(SHAPES), data=st.data())
def test_valid_payloads_of_every_kind_decode_alike(shape: tuple[str, str], data: Any) -> None:
    raw = data.draw(_valid(MODELS[shape]).flatmap(lambda d: written(list(d.items()))))
    _tally(_topic(shape), raw)


@SETTINGS
@given(shape=st.sampled_from(SHAPES), data=st.data())
def test_mutated_payloads_decode_alike(shape: tuple[str, str], data: Any) -> None:
    _tally(_topic(shape), data.draw(mutated(MODELS[shape])))


@SETTINGS
@given(
    shape=st.sampled_from(SHAPES),
    payload=hostile_payloads,
    topic=st.sampled_from([None] * 7 + [""]).flatmap(lambda t: st.just(t) if t is None else texts),
)
def test_hostile_payloads_and_topics_decode_alike(
    shape: tuple[str, str], payload: bytes, topic: str | None
) -> None:
    _tally(_topic(shape) if topic is None else topic, payload)


@settings(max_examples=120, deadline=None, database=None)
@given(shape=st.sampled_from(SHAPES), data=st.data())
def test_what_the_simulators_write_takes_the_fast_path(shape: tuple[str, str], data: Any) -> None:
    """Compact JSON, raw UTF-8, times in the simulators' two forms: msgspec reads all of it
    (when it is valid), so the figures of bench/decode.py are what devices get."""
    body = data.draw(_valid(MODELS[shape]))
    if "ts" in body:
        body["ts"] = data.draw(
            st.one_of(
                st.builds(_rfc3339, times, OFFSETS, st.just("milliseconds"), st.just(False)),
                times.map(lambda t: int(t.timestamp() * 1000)),
            )
        )
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    # A text value that starts with a colon after blanks (a credential of " :", say) counts as
    # one more key in the fast path's count of keys, so the reference decoder reads it: the
    # same answer (the tests above), but not the fast path. No simulator writes one.
    assume(not may_repeat_keys(raw, len(body)))
    if b"\\" not in raw and isinstance(decode_reference(_topic(shape), raw, NOW), Reading):
        assert _took_fast_path(_topic(shape), raw)  # escapes (a control character) take the slow


COMMUNITIES = frozenset({"y", "h"})


@SETTINGS
@given(
    shape=st.sampled_from(SHAPES),
    community=st.sampled_from(["y", "h", "x", "Y", "y2"])
    | st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True),
    data=st.data(),
)
def test_a_topic_of_another_community_is_unknown_community_on_both_paths(
    shape: tuple[str, str], community: str, data: Any
) -> None:
    """An installation of several communities: any payload on a topic of one of them decodes
    as it would anywhere; on any other community's, both decoders say ``unknown_community``
    (before what is wrong with the payload), and without the list every community is taken."""
    raw = data.draw(
        _valid(MODELS[shape]).flatmap(lambda d: written(list(d.items()))) | mutated(MODELS[shape])
    )
    topic = f"community/{community}/{shape[0]}/dev-1/{shape[1]}"
    out = assert_same(topic, raw, COMMUNITIES)
    anywhere = assert_same(topic, raw)
    if community in COMMUNITIES:
        assert type(out) is type(anywhere) and getattr(out, "reason", None) == getattr(
            anywhere, "reason", None
        )
    else:
        assert isinstance(out, DeadLetter) and out.reason == "unknown_community", out
        assert community in out.detail and out.payload == raw[: payloads.MAX_PAYLOAD]


@pytest.mark.parametrize("edge_s", [-payloads.MAX_AGE_S, payloads.MAX_FUTURE_S])
@pytest.mark.parametrize("off_ms", [-1, 0, 1])
@pytest.mark.parametrize("received", [NOW, NOW + 0.0005, 1_795_777_822.123456])
def test_epoch_milliseconds_at_the_edges_of_belief_decode_alike(
    edge_s: float, off_ms: int, received: float
) -> None:
    """The fast path's own check of an epoch-millisecond ``ts`` (believed, or the receive time
    and a flag) answers as the reference's, at the edges to the millisecond."""
    ts = round((received + edge_s) * 1000) + off_ms
    payload = json.dumps({"seq": 1, "ts": ts, "heart_rate": 72}).encode()
    topic = "community/y/wearable/wr-1/telemetry"
    assert payloads._fast(topic, payload, received) is not None
    fast, ref = decode(topic, payload, received), decode_reference(topic, payload, received)
    assert isinstance(fast, Reading) and isinstance(ref, Reading)
    assert (repr(fast.ts), fast.ts_flag) == (repr(ref.ts), ref.ts_flag)
    assert _typed(msgspec.structs.asdict(fast)) == _typed(msgspec.structs.asdict(ref))
