"""Messages (zh/en, nothing personal), failure classification, masked channels, and delivery
receipts, chains and timers through the API; deliveries and escalations on the live stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alerts.dispatch import Dispatcher
from alerts.messages import Context, render
from alerts.notify import retryable
from alerts.outbox import channel_label
from ingest.journal import Journal
from jiayuan.api import create_app
from jiayuan.context import AppContext
from jiayuan.settings import Settings
from tests.alerting import TZ, FakeClock, FakeSender, community, dispatcher, fire, settle, sse
from tests.staff import ADMIN, ADMIN_TOKEN


@pytest.fixture
def d(
    alerts_at: Path | str,
) -> Iterator[Dispatcher]:
    with dispatcher(alerts_at, FakeClock(), FakeSender()) as disp:
        yield disp


def test_messages_say_where_what_since_and_link_in_chinese_or_english(d: Dispatcher) -> None:
    change = d.store.apply(fire("wearable_heart_rate_high", "wr-1"))
    assert change is not None
    a = change.alert
    assert a.value == 88.0
    zh = render(a, "zh", "https://jy.example/", TZ)
    assert zh.title == "【重要】心率持续偏高10分钟"
    assert zh.body.splitlines() == [
        "位置：C01小区 B01楼 1-1-101室",
        "开始：11-25 10:00",
        f"查看/确认：https://jy.example/#/alerts/{a.id}",
    ]
    en = render(a, "en", "https://jy.example", TZ, Context("escalate", 1, 4, 360))
    assert en.title == "[ESCALATED MAJOR] Heart rate high for 10 minutes"
    assert "Where: compound C01, building B01, unit 1-1-101" in en.body
    assert "Not acknowledged for 6 min: escalated (step 2 of 4)" in en.body
    for m in (zh, en):  # no health value, no resident or staff name
        text = m.title + m.body
        assert "88" not in text and "r-1" not in text and "caretaker care" not in text
    upd = render(a, "zh", "http://x", TZ, Context("update", by="care-2", status="acknowledged"))
    assert upd.title.startswith("【已确认】") and "处理人：care-2" in upd.body


def test_failures_worth_a_retry() -> None:
    assert retryable("A Connection error occurred sending JSON notification to 127.0.0.1.")
    assert retryable("Failed to send JSON POST notification: Internal server error., error=500.")
    assert retryable("Failed to send …: error=429.")
    assert not retryable("Failed to send JSON POST notification: Not Found, error=404.")
    assert not retryable("…, error=401.")


def test_channels_are_shown_without_their_secrets() -> None:
    assert channel_label("json://127.0.0.1:8025/notify/care-1?x=1") == (
        "json://127.0.0.1:8025/notify/care-1"
    )
    label = channel_label(
        "mailto://user:s3cret@127.0.0.1:2525?from=jy@example.org&to=a@example.org"
    )
    assert "s3cret" not in label and label.startswith("mailto://user:")
    assert channel_label("nonsense://whatever") == "nonsense://…"


@pytest.fixture
def client(tmp_path: Path, d: Dispatcher) -> Iterator[TestClient]:
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    ctx = AppContext(
        settings=Settings(data_dir=tmp_path, admin_token=ADMIN_TOKEN),
        journal=journal,
        alerts=d.store,
        registry=community(),
        alerting=d,
    )
    with TestClient(create_app(ctx), headers=ADMIN) as c:
        yield c
    journal.close()


def test_receipts_chains_and_timers_in_the_api(client: TestClient, d: Dispatcher) -> None:
    change = d.store.apply(fire("wearable_fall", "wr-1"))
    assert change is not None
    settle(d)
    page = client.get(f"/api/alerts/{change.alert.id}/deliveries").json()
    (rec,) = page["items"]
    assert (rec["staff_id"], rec["status"], rec["purpose"], rec["step"]) == (
        "care-1",
        "sent",
        "notify",
        0,
    )
    assert rec["reason"] == "the resident's primary caretaker, on duty"
    assert rec["channel"] == "fake://…" and [h["outcome"] for h in rec["history"]] == ["sent"]
    assert client.get("/api/alerts/999/deliveries").status_code == 404
    assert client.get("/api/deliveries", params={"staff_id": "care-1"}).json()["total"] == 1
    chains = client.get("/api/escalation/chains").json()["items"]
    fall = next(c for c in chains if c["id"] == "fall-sos")
    assert [s["after"] for s in fall["steps"]] == [0, 180, 360, 540] and fall["repeat"] == 300
    (timer,) = client.get("/api/escalation/timers").json()["items"]
    assert (timer["alert_id"], timer["chain_id"], timer["next_step"]) == (
        change.alert.id,
        "fall-sos",
        1,
    )


def test_the_live_stream_carries_deliveries_and_escalations(
    client: TestClient, d: Dispatcher
) -> None:
    with client.stream("GET", "/api/stream") as r:
        stream = sse(r.iter_lines())
        assert next(stream) == {"comment": "connected"}
        change = d.store.apply(fire("wearable_fall", "wr-1"))
        assert change is not None
        seen: list[tuple[str, str]] = []
        for e in stream:
            if e.get("event") == "alert":
                data = json.loads(e["data"])
                seen.append((data["action"], data["change"]["note"]))
                if data["change"]["note"].startswith("delivered to care-1"):
                    break
        assert seen[0][0] == "raised"
        assert ("notified", "step 1/4 → care-1 (the resident's primary caretaker, on duty)") in seen
        d.clock.advance(180)  # type: ignore[attr-defined]
        d.poll()
        for e in stream:
            if e.get("event") == "alert":
                data = json.loads(e["data"])
                if data["action"] == "escalated":
                    assert data["change"]["note"].startswith("step 2/4 → care-1")
                    break
