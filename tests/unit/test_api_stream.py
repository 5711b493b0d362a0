"""The live alert stream (server-sent events): in process with TestClient's streaming, and once
over real HTTP against uvicorn on a loopback port. Every wait is for a line of the stream;
nothing asserts on timing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from alerts import AlertStore
from ingest.journal import Journal
from jiayuan.api import create_app, make_server
from jiayuan.api.stream import DROPPED, Broadcaster
from jiayuan.context import AppContext
from registry import Registry, Staff
from rules.transitions import Transition
from tests.alerting import sse
from tests.staff import ADMIN, app_context, bearer

T0 = 1_700_000_000.0


def fire(
    device: str, rule: str = "fall", building: str = "b3", route: Any = "caretaker"
) -> Transition:
    return Transition(
        action="fire",
        rule_id=rule,
        device_id=device,
        kind="wearable",
        severity="critical",
        signal="alarm",
        route=route,
        at=T0,
        summary="Fall detected",
        value=1.0,
        labels={"building": building},
    )


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    store = AlertStore(tmp_path / "alerts.db", clock=lambda: T0 + 5)
    with app_context(tmp_path, journal, store, Registry()) as c:
        yield c


@pytest.fixture
def on_both(tmp_path: Path, alerts_at: Path | str) -> Iterator[AppContext]:
    """:func:`ctx` with the alert store on each backend (what the stream reads of the store:
    the changes in commit order, and the catch-up after a reconnect)."""
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    store = AlertStore(alerts_at, clock=lambda: T0 + 5)
    with app_context(tmp_path, journal, store, Registry()) as c:
        yield c


def until_connected(stream: Iterator[dict[str, str]]) -> None:
    for e in stream:
        if e.get("comment") == "connected":
            return
    raise AssertionError("stream ended before it connected")


def next_alert(stream: Iterator[dict[str, str]]) -> dict[str, Any]:
    for e in stream:
        if e.get("event") == "alert":
            data: dict[str, Any] = json.loads(e["data"])
            assert e["id"] == str(data["change"]["id"])
            return data
    raise AssertionError("stream ended without an alert event")


def test_stream_delivers_changes_in_order(on_both: AppContext) -> None:
    ctx = on_both
    app = create_app(ctx)
    with TestClient(app, headers=ADMIN) as client, client.stream("GET", "/api/stream") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        stream = sse(r.iter_lines())
        until_connected(stream)
        change = ctx.alerts.apply(fire("w-1"))
        assert change is not None
        ctx.alerts.acknowledge(change.alert.id, "cg-7", "coming")
        raised = next_alert(stream)
        assert raised["action"] == "raised" and raised["alert"]["id"] == change.alert.id
        assert raised["alert"]["status"] == "firing"
        assert raised["alert"]["raised_at"] == "2023-11-14T22:13:25Z"
        acked = next_alert(stream)
        assert acked["action"] == "acknowledged"
        assert acked["change"]["by"] == "cg-7" and acked["change"]["note"] == "coming"
        assert acked["alert"]["acknowledged_by"] == "cg-7"


def test_stream_filters_by_building_and_route(on_both: AppContext) -> None:
    ctx = on_both
    with (
        TestClient(create_app(ctx), headers=ADMIN) as client,
        client.stream("GET", "/api/stream", params={"building": "b3", "route": "security"}) as r,
    ):
        stream = sse(r.iter_lines())
        until_connected(stream)
        ctx.alerts.apply(fire("w-1", building="b1", route="security"))
        ctx.alerts.apply(fire("w-2", building="b3", route="caretaker"))
        ctx.alerts.apply(fire("g-1", building="b3", route="security"))
        assert next_alert(stream)["alert"]["device_id"] == "g-1"


def test_a_reconnecting_client_catches_up_from_last_event_id(on_both: AppContext) -> None:
    ctx = on_both
    first = ctx.alerts.apply(fire("w-1"))
    second = ctx.alerts.apply(fire("w-2"))
    assert first is not None and second is not None
    with (
        TestClient(create_app(ctx), headers=ADMIN) as client,
        client.stream("GET", "/api/stream", headers={"Last-Event-ID": str(first.entry.id)}) as r,
    ):
        stream = sse(r.iter_lines())
        until_connected(stream)
        missed = next_alert(stream)
        assert missed["change"]["id"] == second.entry.id and missed["alert"]["device_id"] == "w-2"
        ctx.alerts.acknowledge(second.alert.id, "cg-7")
        assert next_alert(stream)["action"] == "acknowledged"


def test_keep_alive_comments_while_idle(ctx: AppContext) -> None:
    with (
        TestClient(create_app(ctx, keepalive_s=0.01), headers=ADMIN) as client,
        client.stream("GET", "/api/stream") as r,
    ):
        stream = sse(r.iter_lines())
        until_connected(stream)
        assert next(stream) == {"comment": "keep-alive"}


def test_a_slow_client_is_disconnected_and_never_blocks_the_store(ctx: AppContext) -> None:
    app = create_app(ctx, stream_queue_size=2)
    broadcaster: Broadcaster = app.state.broadcaster
    dropped = DROPPED._value.get()
    with TestClient(app, headers=ADMIN) as client, client.stream("GET", "/api/stream") as r:
        lines = r.iter_lines()
        until_connected(sse(lines))
        # the client reads nothing more; the store goes on committing regardless
        for i in range(8):
            assert ctx.alerts.apply(fire(f"w-{i}")) is not None
        rest = list(lines)  # ends: the server closed the stream
        assert sum(1 for line in rest if line == "event: alert") <= 2
    assert DROPPED._value.get() == dropped + 1
    assert broadcaster.clients == 0
    assert ctx.alerts.counts_by_status()["firing"] == 8


def test_a_client_stuck_mid_write_is_cut_off(ctx: AppContext) -> None:
    app = create_app(ctx, stream_queue_size=2)
    broadcaster: Broadcaster = app.state.broadcaster
    with TestClient(app, headers=ADMIN) as client, client.stream("GET", "/api/stream") as r:
        lines = r.iter_lines()
        until_connected(sse(lines))
        (conn,) = broadcaster._clients
        ctx.alerts.apply(fire("w-0"))
        # the server takes the change and writes it; the client reads nothing, so the write
        # hangs, the queue fills up behind it, and the server gives up on the client
        assert client.portal is not None
        client.portal.call(asyncio.sleep, 0)  # runs after the hand-over to the loop: queued
        _wait(lambda: conn.queue.empty(), "the server to take the first change")
        for i in range(1, 5):
            ctx.alerts.apply(fire(f"w-{i}"))
        _wait(lambda: broadcaster.clients == 0, "the server to drop the client")
        assert conn.ended.is_set()
        assert [line for line in lines if line.startswith("data:")] == []


def test_close_ends_every_stream(ctx: AppContext) -> None:
    app = create_app(ctx)
    with TestClient(app, headers=ADMIN) as client, client.stream("GET", "/api/stream") as r:
        lines = r.iter_lines()
        until_connected(sse(lines))
        threading.Thread(target=app.state.broadcaster.close).start()  # from another thread
        assert [line for line in lines if line] == []
        assert client.get("/api/stream").status_code == 503


def test_stream_needs_the_lifespan(ctx: AppContext) -> None:
    r = TestClient(create_app(ctx), headers=ADMIN).get("/api/stream")  # no `with`: no lifespan ran
    assert r.status_code == 503 and r.json() == {"detail": "the live stream is not running"}


def _wait(cond: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_stream_over_http_with_uvicorn(ctx: AppContext) -> None:
    app = create_app(ctx)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server(app, "127.0.0.1", port, timeout_graceful_shutdown=30)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: server.started, "uvicorn to start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=ADMIN) as http:
            with http.stream("GET", "/api/stream") as r:
                stream = sse(r.iter_lines())
                until_connected(stream)
                change = ctx.alerts.apply(fire("w-1"))
                assert change is not None
                assert next_alert(stream)["alert"]["id"] == change.alert.id
            # the client left: the server notices and forgets it
            _wait(lambda: app.state.broadcaster.clients == 0, "the client to be dropped")
            with http.stream("GET", "/api/stream") as r:
                lines = r.iter_lines()
                until_connected(sse(lines))
                server.should_exit = True  # shutdown ends the stream; it does not wait for it
                assert [line for line in lines if line] == []
        thread.join(20)
        assert not thread.is_alive()
    finally:
        server.should_exit = True
        thread.join(10)


def test_stream_of_several_communities_shows_each_reader_theirs(tmp_path: Path) -> None:
    """A manager of one community is streamed that community's alerts only, and refused
    another's by name; a district manager filters by community."""
    y = Registry("y", staff=[Staff(staff_id="mgr-y", name="M", role="manager")])
    h = Registry("h", staff=[Staff(staff_id="dm", name="D", role="district_manager")])
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    store = AlertStore(tmp_path / "alerts.db", clock=lambda: T0 + 5)

    def of(device: str, community: str) -> Transition:
        t = fire(device)
        return dataclasses.replace(t, labels={**t.labels, "community": community})

    with (
        app_context(tmp_path, journal, store, Registry.combine({"y": y, "h": h})) as ctx,
        TestClient(create_app(ctx)) as client,
    ):
        refused = client.get("/api/stream", params={"community": "h"}, headers=bearer(ctx, "mgr-y"))
        assert refused.status_code == 403 and "'h'" in refused.json()["detail"]
        with (
            client.stream("GET", "/api/stream", headers=bearer(ctx, "mgr-y")) as mine,
            client.stream(
                "GET", "/api/stream", params={"community": "h"}, headers=bearer(ctx, "dm")
            ) as district,
        ):
            streams = [sse(mine.iter_lines()), sse(district.iter_lines())]
            for s in streams:
                until_connected(s)
            ctx.alerts.apply(of("w-h", "h"))
            ctx.alerts.apply(of("w-y", "y"))
            ctx.alerts.apply(of("w-h2", "h"))
            assert next_alert(streams[0])["alert"]["device_id"] == "w-y"
            assert next_alert(streams[1])["alert"]["device_id"] == "w-h"
            assert next_alert(streams[1])["alert"]["device_id"] == "w-h2"
