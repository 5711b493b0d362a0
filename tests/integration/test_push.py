"""HTTP push from a device platform through the real service (`jiayuan run` as a child process,
the real Mosquitto): a retried push is journaled once, a pushed fall is the same alert as one
published over MQTT, 2xx only after the commit (a full journal answers 503 and nothing pushed
is lost), the integration's token is its own, bad bodies are dead letters with reasons."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from base.datadir import DataDir
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.postgres import Postgres
from ingest.journal import Journal
from registry import write_registry
from registry.models import Registry
from tests.alerting import staff
from tests.integration.test_database_outage import own_postgres
from tests.mqtt import Publisher, publish_fast, wait_for
from tests.stores import Stores

pytestmark = pytest.mark.network
__all__ = ["own_postgres"]  # the fixture: a cluster of the test's own, stopped under the service

DATABASE_AWAY = (
    'jiayuan_log_errors_total{logger="alerts.dispatch"}',
    "jiayuan_journal_write_failures_total",
    "jiayuan_rules_commit_failures_total",
    'jiayuan_log_errors_total{logger="ingest.pipeline"}',
    'jiayuan_log_errors_total{logger="rules.worker"}',
)
"""The errors the service counts while its database is away (test_database_outage's)."""

INTEGRATIONS = """
integrations:
  - id: ctwing
    profile: native
    note: China Telecom AEP, NB-IoT wearables
    devices: ["wp-*", "wm-*"]
  - id: onenet
    profile: native
    devices: ["*"]
  - id: confined
    devices: ["wo-*", "wq-?"]
  - id: hik
    profile: hikvision_acs
    note: the gate controllers' ISAPI events, through a relay
    devices: ["gt-*"]
"""


def setup_files(tmp: Path) -> dict[str, Any]:
    """Settings for a service with the two integrations above and one operator."""
    (tmp / "integrations.yaml").write_text(INTEGRATIONS)
    write_registry(Registry("y", staff=[staff("ops-1", "operator", channels=())]), tmp / "reg")
    return {"integrations": tmp / "integrations.yaml", "registry": tmp / "reg"}


def issue_token(svc: ServiceProcess, integration: str) -> str:
    """``jiayuan push token INTEGRATION`` with the service's settings: the token, printed once."""
    out = subprocess.run(
        [sys.executable, "-m", "jiayuan.cli", "push", "token", integration],
        env=svc.env,
        check=True,
        capture_output=True,
    )
    return out.stdout.decode().strip()


def push(
    svc: ServiceProcess, body: Any, token: str, integration: str = "ctwing", timeout: float = 30
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(
        f"{svc.url}/api/push/{integration}", content=content, headers=headers, timeout=timeout
    )


def message(mid: str, device: str, stream: str, **payload: Any) -> dict[str, Any]:
    return {
        "message_id": mid,
        "topic": f"community/y/wearable/{device}/{stream}",
        "payload": payload,
    }


def rows(data: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{DataDir(data).journal}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def readings(stores: Stores, data: Path, device: str) -> int:
    """The journal's readings of ``device`` (a test's own id: no quoting needed)."""
    return stores.journal(data, f"SELECT count(*) FROM readings WHERE device_id = '{device}'")


def test_a_retried_push_is_journaled_once_and_a_pushed_fall_alerts_as_an_mqtt_one(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    data = tmp_path / "service"
    svc = ServiceProcess(data, broker, **setup_files(tmp_path), **stores.settings).start()
    pub = Publisher(broker)
    try:
        token = issue_token(svc, "ctwing")
        assert token.startswith("jyp_")
        fall = message("ctw-1", "wp-1", "event", event="fall")
        first = push(svc, fall, token)
        assert first.status_code == 200, first.text
        assert first.json() == {"accepted": 1, "dead_letters": []}
        assert readings(stores, data, "wp-1") == 1  # committed before the answer

        # the platform retries (it never saw our answer): in sequence, then 8 at once
        for _ in range(3):
            assert push(svc, fall, token).status_code == 200
        answers: list[int] = []
        threads = [
            threading.Thread(target=lambda: answers.append(push(svc, fall, token).status_code))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [200] * 8
        assert readings(stores, data, "wp-1") == 1  # journaled exactly once

        # another message id is another message; a list of them, telemetry and event
        batch = [
            message("ctw-2", "wp-1", "telemetry", heart_rate=72, worn=True),
            message("ctw-3", "wp-1", "telemetry", heart_rate=74, worn=True),
        ]
        assert push(svc, batch, token).json() == {"accepted": 2, "dead_letters": []}
        assert push(svc, batch, token).status_code == 200
        assert readings(stores, data, "wp-1") == 3
        # the same message id from another integration is its own message
        other = issue_token(svc, "onenet")
        again = message("ctw-3", "wp-1", "telemetry", heart_rate=75)
        assert push(svc, again, other, integration="onenet").is_success
        assert readings(stores, data, "wp-1") == 4

        # a vendor's body through its device profile: a Hikvision controller's forced door,
        # its event counter (serialNo) the message id
        hik = issue_token(svc, "hik")
        forced = {
            "ipAddress": "10.0.3.21",
            "dateTime": datetime.now(UTC).isoformat(timespec="seconds"),
            "eventType": "AccessControllerEvent",
            "AccessControllerEvent": {
                "deviceName": "gt-p1",
                "majorEventType": 5,
                "subEventType": 27,
                "serialNo": 4127,
            },
        }
        for _ in range(3):
            assert push(svc, forced, hik, "hik").json() == {"accepted": 1, "dead_letters": []}
        assert readings(stores, data, "gt-p1") == 1
        wait_for(lambda: svc.get("/api/alerts?device_id=gt-p1&rule_id=gate_forced")["items"])
        nonsense = {"AccessControllerEvent": {"serialNo": 1}}
        r = push(svc, nonsense, hik, "hik")
        assert r.status_code == 422 and r.json()["dead_letters"][0]["reason"] == "missing_field"

        pub.publish("community/y/wearable/wm-1/event", json.dumps({"event": "fall", "seq": 1}))
        pub.wait_acked()

        def falls() -> dict[str, dict[str, Any]]:
            items = svc.get("/api/alerts?rule_id=wearable_fall")["items"]
            return {a["device_id"]: a for a in items}

        wait_for(lambda: {"wp-1", "wm-1"} <= set(falls()), timeout=60)
        pushed, published = falls()["wp-1"], falls()["wm-1"]
        same = ("rule_id", "severity", "signal", "status", "summary", "route")
        assert {k: pushed.get(k) for k in same} == {k: published.get(k) for k in same}
        assert pushed["status"] == "firing"
        assert pushed["match_count"] == published["match_count"] == 1  # evaluated once
    finally:
        pub.close()
        svc.stop()


def test_integration_tokens_and_staff_credentials_never_open_each_others_doors(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    data = tmp_path / "service"
    svc = ServiceProcess(data, broker, **setup_files(tmp_path), **stores.settings).start()
    try:
        token = issue_token(svc, "ctwing")
        body = message("sec-1", "wp-2", "telemetry", heart_rate=70)
        staff_token = svc.token_for("ops-1")
        refusals: dict[str, Callable[[], httpx.Response]] = {
            "no token": lambda: push(svc, body, ""),
            "wrong token": lambda: push(svc, body, "jyp_" + "A" * 43),
            "admin token": lambda: push(svc, body, svc.token),
            "staff token": lambda: push(svc, body, staff_token),
            "another integration's token": lambda: push(svc, body, token, integration="onenet"),
            "undeclared integration": lambda: push(svc, body, token, integration="nosuch"),
            "staff session cookie": lambda: httpx.post(
                f"{svc.url}/api/push/ctwing",
                json=body,
                cookies={"jiayuan_session": "x" * 43},
                timeout=30,
            ),
        }
        for n, (why, refused) in enumerate(refusals.items()):
            r = refused()
            assert r.status_code == 401, (why, r.status_code, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert token not in r.text
            # the right token still works (and its success clears the failures counted)
            ok = message(f"ok-{n}", "wp-2", "telemetry", heart_rate=70)
            assert push(svc, ok, token).status_code == 200
        assert readings(stores, data, "wp-2") == len(refusals)  # the refused body never
        for path in ("/api/alerts", "/api/dead-letters", "/api/devices", "/api/auth/me"):
            assert svc.request("GET", path, token=token).status_code == 401, path
        r = svc.request("POST", "/api/auth/tokens", token=token, json={"staff_id": "ops-1"})
        assert r.status_code == 401

        log = svc.log.read_text(errors="replace")
        assert "push refused for integration 'ctwing'" in log
        assert token not in log and staff_token not in log and svc.token not in log

        # revoked: refused from the next push on, no restart
        subprocess.run(
            [sys.executable, "-m", "jiayuan.cli", "push", "revoke", "ctwing"],
            env=svc.env,
            check=True,
            capture_output=True,
        )
        assert push(svc, body, token).status_code == 401
        fresh = issue_token(svc, "ctwing")
        assert push(svc, message("sec-2", "wp-2", "telemetry", heart_rate=71), fresh).is_success
        assert readings(stores, data, "wp-2") == len(refusals) + 1

        # guessing: after the free failures this address is locked out of this integration
        codes = [push(svc, body, f"jyp_guess{i}").status_code for i in range(8)]
        assert codes[0] == 401 and codes[-1] == 429
        limited = push(svc, body, "jyp_guess-again")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        # the right token always gets through: a platform given its new token after a
        # rotation is not locked out by the old one's failures (a fall is never answered 429)
        assert push(svc, message("sec-3", "wp-2", "event", event="fall"), fresh).is_success
    finally:
        svc.stop()


def test_oversized_and_bad_bodies_are_refused_or_dead_lettered_with_their_reasons(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    data = tmp_path / "service"
    svc = ServiceProcess(
        data, broker, push_max_body_bytes=65_536, **setup_files(tmp_path), **stores.settings
    ).start()
    try:
        token = issue_token(svc, "ctwing")
        big = [message(f"big-{i}", "wp-3", "telemetry", note="n" * 2000) for i in range(40)]
        r = push(svc, big, token)
        assert r.status_code == 413 and "65536" in r.json()["detail"]
        assert readings(stores, data, "wp-3") == 0

        bad: dict[str, bytes | Any] = {
            "not_json": b"{not json",
            "bad_utf8": b'{"message_id": "\xff"}',
            "missing_field": {"topic": "community/y/wearable/wp-3/event", "payload": {}},
            "not_object": b"42",
            "bad_value": message("has space", "wp-3", "event", event="fall"),
            "out_of_range": message("hr-1", "wp-3", "telemetry", heart_rate=900),
            # a vendor's MQTT topic in a native push is not translated by its MQTT profile
            "unknown_topic": {
                "message_id": "t-1",
                "topic": "zigbee2mqtt/smoke/smk-z1",
                "payload": {"smoke": True, "battery": 97},
            },
        }
        for reason, body in bad.items():
            r = push(svc, body, token)
            assert r.status_code == 422, (reason, r.status_code, r.text)
            answer = r.json()
            assert answer["accepted"] == 0
            assert [d["reason"] for d in answer["dead_letters"]] == [reason], answer
            assert push(svc, body, token).status_code == 422  # the same answer again

        # one bad message among good ones: the good ones are journaled, the answer says which
        mixed = [
            message("mix-1", "wp-3", "telemetry", heart_rate=70),
            message("mix-2", "wp-3", "event", event="jumped"),
        ]
        r = push(svc, mixed, token)
        assert r.status_code == 200
        assert r.json()["accepted"] == 1
        assert [(d["index"], d["message_id"], d["reason"]) for d in r.json()["dead_letters"]] == [
            (1, "mix-2", "bad_value")
        ]
        assert readings(stores, data, "wp-3") == 1

        # an integration confined to its devices: another device's message is a dead letter
        confined = issue_token(svc, "confined")
        r = push(svc, message("c-1", "wp-3", "event", event="fall"), confined, "confined")
        assert r.status_code == 422
        assert r.json()["dead_letters"][0]["reason"] == "unknown_topic"
        assert "not among integration confined's devices" in r.json()["dead_letters"][0]["detail"]
        assert readings(stores, data, "wp-3") == 1
        ok = [
            message("c-2", "wo-1", "event", event="fall"),
            message("c-3", "wq-1", "status", state="online"),
        ]
        assert push(svc, ok, confined, "confined").json() == {"accepted": 2, "dead_letters": []}

        assert readings(stores, data, "smk-z1") == 0  # the vendor topic's detector
        counts = svc.get("/api/dead-letters/counts")["counts"]
        more = {"bad_value": 1, "unknown_topic": 1}  # the mixed body's, the confined one's
        for reason in bad:  # each bad body twice
            assert counts[reason] == 2 + more.get(reason, 0), (reason, counts)
        letters = svc.get("/api/dead-letters?reason=not_json")["items"]
        assert letters[0]["topic"] == "push/ctwing" and letters[0]["payload"] == "{not json"
        metrics = svc.get_text("/metrics")
        assert 'jiayuan_dead_letters_total{reason="missing_field"} 2.0' in metrics
        assert 'jiayuan_push_requests_total{integration="ctwing",outcome="rejected"}' in metrics
    finally:
        svc.stop()


def test_a_push_is_answered_2xx_only_after_its_commit_and_503_while_the_journal_is_full(
    broker: Broker, tmp_path: Path
) -> None:
    # SQLite only: a full disk under the journal's file (journal_max_pages, a filler table the
    # test frees). PostgreSQL's counterpart, the database out of reach, is test_database_outage's.
    stores = Stores()
    data = tmp_path / "service"
    data.mkdir()
    journal = DataDir(data).journal
    Journal(journal, synchronous="NORMAL").close()
    with sqlite3.connect(journal) as db:  # the part of the "disk" the test frees later
        db.execute("CREATE TABLE filler (b BLOB)")
        db.execute("INSERT INTO filler VALUES (zeroblob(4000000))")
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    svc = ServiceProcess(
        data,
        broker,
        journal_max_pages=pages + 60,
        push_wait_s=20,
        expect_errors={
            "jiayuan_journal_write_failures_total",
            'jiayuan_log_errors_total{logger="ingest.pipeline"}',
        },
        **setup_files(tmp_path),
    ).start()
    try:
        token = issue_token(svc, "ctwing")
        answered: dict[int, int] = {}
        n = 0
        while 503 not in answered.values():  # fill the journal with pushes until it is full
            assert n < 200, "the journal never filled up"
            body = [
                message(f"f-{n}-{i}", "wp-4", "telemetry", heart_rate=70, note="n" * 3000)
                for i in range(20)
            ]
            r = push(svc, body, token)
            answered[n] = r.status_code
            assert r.status_code in (200, 503), r.text
            if r.status_code == 200:  # every message of a 2xx is in the journal already
                ids = rows(data, "SELECT count(*) FROM readings WHERE device_id = 'wp-4'")
                assert ids[0][0] == 20 * sum(c == 200 for c in answered.values())
            else:
                assert r.headers["retry-after"] == "5"
            n += 1
        full = n - 1
        health = svc.health()
        assert not health["journal"]["writable"]
        # while it is full: refused at once, nothing accepted
        fall = message("full-fall", "wp-5", "event", event="fall")
        r = push(svc, fall, token)
        assert r.status_code == 503 and "nothing was accepted" in r.json()["detail"]
        assert readings(stores, data, "wp-5") == 0

        with sqlite3.connect(journal, timeout=30) as db:  # space is freed
            db.execute("DELETE FROM filler")
        wait_for(lambda: svc.health()["journal"]["writable"], timeout=60)
        # the platform retries what was answered 503: journaled once, with what was held
        retry = [
            message(f"f-{full}-{i}", "wp-4", "telemetry", heart_rate=70, note="n" * 3000)
            for i in range(20)
        ]
        assert push(svc, retry, token).status_code == 200
        assert push(svc, fall, token).status_code == 200
        total, distinct = rows(
            data, "SELECT count(*), count(DISTINCT dedup) FROM readings WHERE device_id = 'wp-4'"
        )[0]
        assert total == distinct == 20 * (full + 1)
        assert readings(stores, data, "wp-5") == 1
        wait_for(lambda: svc.health()["status"] == "ok", timeout=30)
    finally:
        svc.stop()


def test_a_fall_pushed_during_a_telemetry_backlog_is_journaled_and_alerted_before_it(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    """The urgent lane: the service was down, the broker queued 30,000 readings for it; a fall
    pushed while they drain is answered, and alerted, before the backlog is through."""
    backlog, telemetry = 30_000, "community/y/wearable/wb-2/telemetry"
    data = tmp_path / "service"
    files = setup_files(tmp_path)
    broker.test_access("backlog")
    svc = ServiceProcess(data, broker, **files, **stores.settings).start()  # sessions subscribe
    token = issue_token(svc, "ctwing")
    svc.stop()  # the broker queues for them meanwhile
    publish_fast(
        broker,
        telemetry,
        (json.dumps({"seq": i, "heart_rate": 70 + i % 20}) for i in range(backlog)),
        "backlog",
    )
    # the broker may hand the whole backlog over at once, and the journal takes it in small
    # batches: it waits in the service's inbox, where a push would queue behind it. On
    # PostgreSQL (four ingest processes, a commit a round trip) batches of 5 took 50 s to drain
    # on the shared 2-core machine; of 25 it still drains long after the push is answered.
    svc = ServiceProcess(
        data,
        broker,
        http_port=svc.http_port,
        mqtt_receive_maximum=65_535,
        batch_max=5 if stores.url is None else 25,
        **files,
        **stores.settings,
    ).start()
    try:
        wait_for(lambda: readings(stores, data, "wb-2") > 0, timeout=60, interval=0.01)
        assert readings(stores, data, "wb-2") < backlog, "the backlog drained before the push"
        r = push(svc, message("urgent-1", "wp-6", "event", event="fall"), token)
        assert r.status_code == 200
        at_answer = readings(stores, data, "wb-2")
        assert at_answer < backlog, f"the push waited for the backlog ({at_answer:,} committed)"
        seen: list[int] = []

        def alerted() -> bool:
            items = svc.get("/api/alerts?device_id=wp-6")["items"]
            if items:
                seen.append(readings(stores, data, "wb-2"))
            return bool(items)

        wait_for(alerted, timeout=60, interval=0.01)
        assert seen[0] < backlog, f"the fall's alert waited for the backlog ({seen[0]:,})"
        wait_for(lambda: readings(stores, data, "wb-2") == backlog, timeout=300, interval=0.2)
    finally:
        svc.stop()


def test_a_platform_cannot_speak_for_a_device_registered_another_way(
    broker: Broker, tmp_path: Path, stores: Stores
) -> None:
    """onenet may push for any id (``devices: ["*"]``), yet not for wn-1, a native watch, nor
    for wp-9, registered ``via: ctwing``: each device id belongs to one way in. wp-9's own
    platform is accepted, and a native MQTT message for wp-9 is refused too."""
    from registry import Device

    files = setup_files(tmp_path)
    write_registry(
        Registry(
            "y",
            devices=[
                Device(device_id="wn-1", kind="wearable", compound="C01"),
                Device(device_id="wp-9", kind="wearable", compound="C01", via="ctwing"),
            ],
            staff=[staff("ops-1", "operator", channels=())],
        ),
        files["registry"],
    )
    data = tmp_path / "service"
    svc = ServiceProcess(data, broker, **files, **stores.settings).start()
    pub = Publisher(broker)
    try:
        onenet, ctwing = issue_token(svc, "onenet"), issue_token(svc, "ctwing")
        refused = push(svc, message("o-1", "wn-1", "event", event="sos"), onenet, "onenet")
        assert refused.status_code == 422, refused.text
        (note,) = refused.json()["dead_letters"]
        assert note["reason"] == "unknown_topic"
        assert note["detail"] == (
            "integration onenet: device wn-1 is registered to report native MQTT (its own"
            " broker account), not via onenet"
        )
        other = push(svc, message("o-2", "wp-9", "event", event="sos"), onenet, "onenet")
        assert other.status_code == 422
        assert "registered to report via ctwing, not via onenet" in other.text
        own = push(svc, message("c-1", "wp-9", "event", event="sos"), ctwing)
        assert own.json() == {"accepted": 1, "dead_letters": []}
        assert readings(stores, data, "wn-1") == 0 and readings(stores, data, "wp-9") == 1
        wait_for(lambda: svc.get("/api/alerts?device_id=wp-9")["items"], timeout=30)
        assert svc.get("/api/alerts?device_id=wn-1")["items"] == []

        pub.publish("community/y/wearable/wp-9/event", json.dumps({"event": "fall"}))
        pub.wait_acked()
        wait_for(
            lambda: any(
                d["topic"] == "community/y/wearable/wp-9/event"
                for d in svc.get("/api/dead-letters?limit=10")["items"]
            ),
            timeout=30,
        )
        assert readings(stores, data, "wp-9") == 1
    finally:
        pub.close()
        svc.stop()


def test_a_push_while_the_database_is_unreachable_is_answered_503_and_journaled_once_after(
    broker: Broker, tmp_path: Path, own_postgres: Postgres
) -> None:
    """PostgreSQL's counterpart of the full journal: the database goes away under the service.
    A push is refused with 503 and Retry-After (nothing accepted), never a 500 nor a 2xx before
    its commit; sent again once the database is back, it is journaled once and alerts."""
    stores = Stores(own_postgres.create_database("jiayuan"))
    data = tmp_path / "service"
    svc = ServiceProcess(
        data,
        broker,
        push_wait_s=5,
        expect_errors=DATABASE_AWAY,
        **setup_files(tmp_path),
        **stores.settings,
    ).start()
    try:
        token = issue_token(svc, "ctwing")
        assert push(svc, message("up-1", "wp-7", "telemetry", heart_rate=70), token).is_success
        own_postgres.halt()
        wait_for(lambda: svc.health()["database"]["reachable"] is False, timeout=30)
        fall = message("down-fall", "wp-7", "event", event="fall")
        for _ in range(2):  # the platform retries: refused alike
            r = push(svc, fall, token, timeout=90)
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) > 0
        own_postgres.resume()
        wait_for(lambda: svc.health()["status"] == "ok", timeout=90)
        # sent again until it is taken (the journal's first write may still meet a connection
        # the restart closed: 503 "send it again", and the write is retried), then once more
        wait_for(lambda: push(svc, fall, token).status_code == 200, timeout=60, interval=1)
        assert push(svc, fall, token).status_code == 200
        assert readings(stores, data, "wp-7") == 2
        wait_for(lambda: svc.get("/api/alerts?device_id=wp-7")["items"], timeout=30)
    finally:
        svc.stop()
