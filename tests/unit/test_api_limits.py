"""The API's bounds, each with the concrete input that gave a 500 (or was wrongly accepted)
before: integers past 2^63 in ids, offsets and ``Last-Event-ID``, times as bare numbers and
at the calendar's ends, stored payloads no decoder can parse, and request bodies past their
cap (refused before they are read). The connection limits are in
tests/integration/test_http_limits.py, against the real server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from jiayuan.api import create_app
from jiayuan.api.bodylimit import BodyLimitMiddleware
from jiayuan.api.connections import Throttled
from jiayuan.context import AppContext
from tests.staff import ADMIN, bearer
from tests.unit.api_world import running, world

BIG = str(2**63)  # one past SQLite's INTEGER


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    with ExitStack() as stack, running(world(tmp_path, stack)) as c:
        yield c


@pytest.fixture
def client(ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), headers=ADMIN) as c:
        yield c


@pytest.fixture
def carer(ctx: AppContext) -> dict[str, str]:
    """care-1 looks after r-1, who wears wr-1."""
    return bearer(ctx, "care-1")


def refused(r: Any, status: int, *where: str) -> str:
    assert r.status_code == status, r.text
    text = json.dumps(r.json()["detail"])
    for w in where:
        assert w in text, text
    return text


# ------------------------------------------------------------------ integers


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("DELETE", f"/api/auth/tokens/{BIG}", "token_id"),  # was OverflowError: 500
        ("GET", f"/api/alerts/{BIG}", "alert_id"),
        ("POST", f"/api/alerts/{BIG}/ack", "alert_id"),
        ("GET", f"/api/alerts/{BIG}/deliveries", "alert_id"),
        ("GET", f"/api/silences/{BIG}", "silence_id"),
        ("DELETE", f"/api/silences/{BIG}", "silence_id"),
        ("GET", f"/api/alerts?offset={BIG}", "offset"),
        ("GET", f"/api/dead-letters?offset={BIG}", "offset"),
        ("GET", f"/api/devices?limit={BIG}", "limit"),
        ("GET", "/api/alerts?offset=" + "9" * 400, "offset"),
    ],
)
def test_integers_past_64_bits_are_refused_by_name(
    client: TestClient, method: str, path: str, field: str
) -> None:
    refused(client.request(method, path, json={}), 422, field)


def test_the_largest_id_is_simply_not_found(client: TestClient) -> None:
    assert client.get(f"/api/alerts/{2**63 - 1}").status_code == 404
    assert client.get(f"/api/alerts?offset={2**63 - 1}").json()["items"] == []


@pytest.mark.parametrize(
    "value", [BIG, "9" * 400, "²", "-1", "12a", "1" * 41], ids=lambda v: v[:12]
)
def test_a_last_event_id_the_stream_never_gave_is_refused(client: TestClient, value: str) -> None:
    # "²" passed str.isdigit() and then int(): a 500
    with client.stream("GET", "/api/stream", headers={"Last-Event-ID": value.encode()}) as r:
        status = r.status_code  # a stream that opens never ends: read only a refusal
        detail = r.read().decode() if status != 200 else ""
    assert status == 422 and "last-event-id" in detail


# ------------------------------------------------------------------ times


@pytest.mark.parametrize("path", ["/api/alerts", "/api/dead-letters", "/api/audit"])
def test_a_bare_number_is_not_a_time(client: TestClient, path: str) -> None:
    # until=0.5 was read as 0.5 s after the epoch
    refused(client.get(path, params={"until": "0.5"}), 422, "until", "RFC 3339")


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"),
        ("1900-01-01T00:00:00Z", "1969-12-31T23:59:59Z"),
        ("9999-12-31T00:00:00Z", "9999-12-31T23:59:59.999999-23:59"),
    ],
)
def test_times_at_the_calendars_ends_are_clamped(
    client: TestClient, carer: dict[str, str], since: str, until: str
) -> None:
    for path in ("/api/alerts", "/api/dead-letters", "/api/audit"):
        r = client.get(path, params={"since": since, "until": until})
        assert r.status_code in (200, 422), r.text  # clamped to one instant: "until > since"
    r = client.get(
        "/api/devices/wr-1/readings", params={"since": since, "until": until}, headers=carer
    )
    assert r.status_code in (200, 422), r.text
    r = client.get("/api/residents/r-1", params={"day_start": since}, headers=carer)
    assert r.status_code == 200, r.text


def test_a_reversed_range_names_until(client: TestClient) -> None:
    r = client.get(
        "/api/alerts", params={"since": "2024-01-01T00:00:00Z", "until": "2023-01-01T00:00:00Z"}
    )
    refused(r, 422, "until", "later than since")


# ------------------------------------------------------------------ stored values


def test_readings_with_unparsable_stored_payloads_keep_the_others(
    client: TestClient, carer: dict[str, str]
) -> None:
    # a 5,000-digit steps and arrays nested 2,000 deep made json.loads raise: a 500
    r = client.get("/api/devices/wr-1/readings", headers=carer)
    assert r.status_code == 200, r.text
    values = [item["values"] for item in r.json()["items"]]
    assert any(v.get("heart_rate") == 70 for v in values)
    assert any(v.get("steps") == int("9" * 400) for v in values)  # JSON carries it whole
    r = client.get("/api/devices/wr-1/readings", params={"metric": "steps"}, headers=carer)
    assert r.status_code == 200
    for step in ("1m", "1h"):
        r = client.get(
            "/api/devices/wr-1/readings", params={"metric": "steps", "step": step}, headers=carer
        )
        assert r.status_code == 200, r.text


def test_a_resident_with_a_400_digit_steps_reading_is_shown(
    client: TestClient, carer: dict[str, str]
) -> None:
    # Latest(value=10**400) failed validation: a 500
    r = client.get(
        "/api/residents/r-1", params={"day_start": "2000-01-01T00:00:00Z"}, headers=carer
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["latest"]["heart_rate"]["value"] == 80
    assert body["activity"]["steps"] == 10  # 10 → 20; the 400-digit count is left out
    assert client.get("/api/residents", headers=carer).status_code == 200


# ------------------------------------------------------------------ bodies


def test_a_sign_in_body_past_4_kib_is_refused_before_it_is_read(client: TestClient) -> None:
    r = client.post(
        "/api/auth/login",
        content=json.dumps({"staff_id": "care-1", "password": "x" * 5000}),
        headers={"Content-Type": "application/json", "Authorization": ""},
    )
    refused(r, 413, "at most 4096 bytes")
    assert r.headers["connection"] == "close"


def test_every_route_caps_its_body(client: TestClient) -> None:
    big = b"{" + b" " * (1 << 20) + b"}"
    r = client.post("/api/silences", content=big, headers={"Content-Type": "application/json"})
    refused(r, 413, "at most 1048576 bytes")
    # before any authentication, and the connection is not kept to be fed the rest
    anonymous = TestClient(client.app)
    r = anonymous.post("/api/alerts/1/ack", content=big)
    refused(r, 413, "at most 1048576 bytes")
    assert r.headers["connection"] == "close"


def test_a_chunked_body_is_counted_as_it_streams(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"staff_id": "care-1", "password": "'
        for _ in range(100):
            yield b"x" * 100

    r = client.post("/api/auth/login", content=chunks(), headers={"Authorization": ""})
    refused(r, 413, "at most 4096 bytes")


def test_a_refusal_before_the_body_is_read_closes_the_connection(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    r = anonymous.post("/api/alerts/1/ack", json={"note": "x"})
    assert r.status_code == 401 and r.headers["connection"] == "close"


def test_a_body_that_never_arrives_in_full_times_out() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Message] = []
    first = True

    async def receive() -> Message:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"a", "more_body": True}
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError

    async def send(m: Message) -> None:
        sent.append(m)

    scope = {"type": "http", "path": "/x", "headers": [(b"content-length", b"10")]}
    mw = BodyLimitMiddleware(app, max_bytes=100, body_timeout_s=0.05)
    asyncio.run(mw(scope, receive, send))
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert "request body took longer" in json.loads(sent[1]["body"])["detail"]


# ------------------------------------------------------------------ logging


def test_shed_connections_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    shed = Throttled(every_s=3600)
    with caplog.at_level(logging.WARNING, "jiayuan.api.connections"):
        for _ in range(1000):
            shed.add("closed sending headers too slowly")
    assert len(caplog.records) == 1
    assert shed.totals == {"closed sending headers too slowly": 1000}


# ------------------------------------------------------------------ query names


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/alerts?statuss=firing", "statuss"),  # answered every alert, unfiltered
        ("/api/residents/r-1?=false", ""),
        ("/api/silences/1?x-schemathesis-unknown-property=42", "x-schemathesis-unknown"),
    ],
)
def test_an_unknown_query_parameter_is_named(client: TestClient, path: str, name: str) -> None:
    text = refused(client.get(path), 422, "unknown query parameter")
    assert f'["query", "{name}' in text


# ------------------------------------------------------------------ silences


@pytest.mark.parametrize(
    "when",
    [
        {"ends_at": "9999-12-31T23:59:59-14:00"},  # stored past year 9999: every listing 500
        {"duration": "999999999999d"},
        {"duration": "99999999999999999999999999999h"},
    ],
)
def test_a_silence_to_the_end_of_time_ends_at_the_calendars_end(
    client: TestClient, when: dict[str, str]
) -> None:
    body = {"device_id": "smk-101", "rule_id": "smoke_low_battery", "reason": "x", **when}
    r = client.post("/api/silences", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["ends_at"] == "9999-12-30T00:00:00Z"
    assert client.get("/api/silences").status_code == 200


def test_a_400_digit_duration_is_refused_by_name(client: TestClient) -> None:
    body = {"device_id": "smk-101", "reason": "x", "duration": "9" * 400 + "h"}
    refused(client.post("/api/silences", json=body), 422, "duration")


def test_a_week_that_does_not_exist_is_refused_by_name() -> None:
    """Found by the fuzzing: year 0 and a week 53 of a year without one gave 500s."""
    from jiayuan.api.review import _real_week

    assert _real_week("2026-W48") == "2026-W48" and _real_week("2026-W53") == "2026-W53"
    for bad in ("0000-W01", "2025-W53", "9999-W52"):
        try:
            _real_week(bad)
        except ValueError as e:
            assert bad in str(e)
        else:
            raise AssertionError(f"{bad} accepted")


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
def test_a_non_json_number_in_a_body_is_refused_by_name(client: TestClient, literal: str) -> None:
    """Python's JSON parser takes these literals; the refusal names the field, not a 500."""
    body = f'{{"starts_at": "2026-11-25T00:00:00Z", "ends_at": {literal}, "matchers": []}}'
    r = client.post("/api/silences", content=body, headers={"Content-Type": "application/json"})
    refused(r, 422, "ends_at")
