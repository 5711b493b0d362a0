"""The push endpoint in process (the app over a real journal and a real ingest pipeline): no
body, however odd, gets a server error, and each bad one is a dead letter; the duplicate keys of
pushed messages; the integrations file and the token store. Through the real service and
Mosquitto: tests/integration/test_push.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.journal import dedup_key
from ingest.payloads import Reading, decode
from ingest.profiles import Canonical, ProfileError
from ingest.push_native import NATIVE
from jiayuan.api import create_app
from jiayuan.api.push import _keys
from jiayuan.integrations import Integration, IntegrationError, PushTokens, load_integrations
from tests.staff import ADMIN_TOKEN
from tests.unit.api_world import PUSH_INTEGRATION, with_push, world

URL = f"/api/push/{PUSH_INTEGRATION}"


@pytest.fixture(scope="module")
def pushing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any, dict]]:  # type: ignore[type-arg]
    with ExitStack() as stack:
        ctx = world(tmp_path_factory.mktemp("push"), stack)
        auth = with_push(ctx, stack)
        with TestClient(create_app(ctx)) as client:
            yield client, ctx, auth


def dead_letters(ctx: Any) -> int:
    return sum(ctx.journal.dead_letter_counts().values())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
TOPICS = st.sampled_from(
    ["community/y/wearable/wq-1/event", "community/y/smoke/sq-1/telemetry", "x/y", ""]
) | st.text(max_size=40)
MESSAGES = st.fixed_dictionaries(
    {"message_id": st.text(min_size=0, max_size=20), "topic": TOPICS, "payload": JSON}
)
BODIES = (
    st.binary(max_size=300)
    | JSON.map(lambda v: json.dumps(v).encode())
    | MESSAGES.map(lambda m: json.dumps(m).encode())
    | st.lists(MESSAGES, max_size=5).map(lambda m: json.dumps(m).encode())
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=BODIES)
def test_no_body_gets_a_server_error_and_every_refused_one_is_a_dead_letter(
    pushing: tuple[TestClient, Any, dict[str, str]], body: bytes
) -> None:
    client, ctx, auth = pushing
    before = dead_letters(ctx)
    r = client.post(URL, content=body, headers={**auth, "Content-Type": "application/json"})
    assert r.status_code in (200, 422), (r.status_code, r.text)
    answer = r.json()
    assert dead_letters(ctx) - before == len(answer["dead_letters"])
    if r.status_code == 422:
        assert answer["accepted"] == 0 and answer["dead_letters"]
        assert all(d["reason"] and d["detail"] for d in answer["dead_letters"])


def test_one_platform_message_mapped_onto_several_keeps_one_key_each() -> None:
    canon = [
        Canonical("community/y/smoke/s-1/event", b"{}", "m-1"),
        Canonical("community/y/smoke/s-1/telemetry", b"{}", "m-1"),
        Canonical("community/y/smoke/s-2/event", b"{}", "m-2"),
        Canonical("community/y/smoke/s-3/event", b"{}", None),
    ]
    keys = _keys("ctwing", canon)
    assert keys[3] is None
    assert len(set(keys[:3])) == 3
    assert keys == _keys("ctwing", canon)  # the same body again: the same keys
    assert set(keys[:3]).isdisjoint(_keys("onenet", canon))  # another platform's ids


def test_a_source_message_id_is_the_duplicate_key_whatever_else_differs() -> None:
    topic = "community/y/wearable/w-1/telemetry"
    a = decode(topic, b'{"heart_rate": 70}', 100.0)
    b = decode(topic, b'{"heart_rate": 70}', 200.0)
    assert isinstance(a, Reading) and isinstance(b, Reading)
    assert dedup_key(a) is None  # no seq, no ts: nothing tells a resend from a new one
    keyed = [
        Reading(**{**{f: getattr(r, f) for f in r.__struct_fields__}, "key": "p\x1fm-1"})
        for r in (a, b)
    ]
    assert dedup_key(keyed[0]) == dedup_key(keyed[1]) is not None
    other = Reading(**{**{f: getattr(a, f) for f in a.__struct_fields__}, "key": "p\x1fm-2"})
    assert dedup_key(other) != dedup_key(keyed[0])


def test_the_integrations_file_is_validated_and_errors_name_file_integration_and_field(
    tmp_path: Path,
) -> None:
    f = tmp_path / "integrations.yaml"
    f.write_text(
        "integrations:\n"
        "  - id: ctwing\n    profile: native\n    devices: [smk-*]\n"
        "  - id: ctwing\n    devices: [smk-*]\n"
        "  - id: bad id\n    devices: [smk-*]\n"
        "  - id: onenet\n    profile: huawei\n    devices: [smk-*]\n"
        "  - id: x\n    tokn: abc\n    devices: [smk-*]\n"
        "  - id: any\n"
    )
    with pytest.raises(IntegrationError) as e:
        load_integrations(f, {"native"})
    text = str(e.value)
    assert f"{f}: integration 'ctwing' (#2): field 'id': declared twice" in text
    assert "integration 'bad id' (#3): field 'id'" in text
    assert "integration 'onenet' (#4): field 'profile': unknown profile 'huawei'" in text
    assert "integration 'x' (#5): field 'tokn'" in text
    # no default "any device": an integration says which devices it speaks for
    assert "integration 'any' (#6): field 'devices': Field required" in text
    f.write_text("integrations:\n  - id: ctwing\n    devices: ['*']\n")
    assert load_integrations(f, {"native"})["ctwing"].profile == "native"


def test_tokens_are_kept_as_digests_and_a_reissue_ends_the_old_one(tmp_path: Path) -> None:
    tokens = PushTokens(tmp_path)
    first = tokens.issue("ctwing")
    assert tokens.check("ctwing", first)
    assert first not in tokens.path.read_text()
    assert tokens.path.stat().st_mode & 0o777 == 0o600
    assert not tokens.check("onenet", first) and not tokens.check("ctwing", "")
    second = PushTokens(tmp_path).issue("ctwing")  # another process: the CLI
    assert tokens.check("ctwing", second) and not tokens.check("ctwing", first)
    assert tokens.revoke("ctwing") and not tokens.check("ctwing", second)


@pytest.mark.expect_errors('jiayuan_log_errors_total{logger="jiayuan.integrations"}')
def test_an_unreadable_token_file_refuses_every_push_rather_than_fail(tmp_path: Path) -> None:
    tokens = PushTokens(tmp_path)
    token = tokens.issue("ctwing")
    tokens.path.write_text('{"ctwing": {"digest": 3')
    assert not tokens.check("ctwing", token)
    tokens.path.write_text('["not", "a", "mapping"]')
    assert not tokens.check("ctwing", token)
    again = tokens.issue("ctwing")
    assert tokens.check("ctwing", again)


class _Quiet:
    """A profile that maps a body onto nothing (a vendor event code it does not keep)."""

    id = "quiet"
    max_body = None

    def from_http(self, body: bytes) -> list[Canonical]:
        return []


def test_a_body_mapped_onto_nothing_is_answered_at_once_with_nothing_stored(
    pushing: tuple[TestClient, Any, dict[str, str]],
) -> None:
    client, ctx, _ = pushing
    before = dead_letters(ctx)
    setup = ctx.push
    quiet = Integration(id="quiet", profile="quiet", devices=["*"])
    ctx.push = replace(
        setup,
        integrations={**setup.integrations, "quiet": quiet},
        profiles={**setup.profiles, "quiet": _Quiet()},
    )
    try:
        token = ctx.push.tokens.issue("quiet")
        r = client.post(
            "/api/push/quiet", content=b"{}", headers={"Authorization": f"Bearer {token}"}
        )
        assert (r.status_code, r.json()) == (200, {"accepted": 0, "dead_letters": []})
        assert dead_letters(ctx) == before
    finally:
        ctx.push = setup


@pytest.fixture()
def hik(tmp_path: Path) -> Iterator[tuple[TestClient, Any, dict[str, str], dict[str, str]]]:
    """Two integrations of one service: ``hik`` (Hikvision controllers through a relay) and
    ``ctwing`` (native), each with its token header."""
    with ExitStack() as stack:
        ctx = world(tmp_path, stack)
        other = with_push(ctx, stack)
        setup = ctx.push
        assert setup is not None
        hik = Integration(id="hik", profile="hikvision_acs", devices=["G-*"])
        ctx.push = replace(setup, integrations={**setup.integrations, "hik": hik})
        auth = {"Authorization": f"Bearer {setup.tokens.issue('hik')}"}
        with TestClient(create_app(ctx)) as client:
            yield client, ctx, auth, other


def gate_event(serial: int, when: str, sub: int) -> bytes:
    ev = {"deviceName": "G-N1", "majorEventType": 5, "subEventType": sub, "serialNo": serial}
    return json.dumps({"dateTime": when, "AccessControllerEvent": ev}).encode()


def journaled_events(ctx: Any, device: str) -> list[str]:
    with closing(sqlite3.connect(ctx.journal.path)) as db:
        rows = db.execute(
            "SELECT event FROM readings WHERE device_id = ? ORDER BY rowid", (device,)
        )
        return [e for (e,) in rows]


def test_a_controller_whose_serial_restarted_is_not_taken_for_a_retry(hik: Any) -> None:
    client, ctx, auth, _ = hik
    first = gate_event(1, "2026-11-01T08:00:00+08:00", 1)
    assert client.post("/api/push/hik", content=first, headers=auth).status_code == 200
    assert client.post("/api/push/hik", content=first, headers=auth).status_code == 200  # retry
    # the controller is replaced (or reset): serialNo starts again at 1, a month later
    forced = gate_event(1, "2026-12-03T19:02:11+08:00", 27)
    r = client.post("/api/push/hik", content=forced, headers=auth)
    assert (r.status_code, r.json()["accepted"]) == (200, 1)
    assert journaled_events(ctx, "G-N1") == ["granted", "forced"]


def test_an_integration_speaks_only_for_its_devices_of_this_community(hik: Any) -> None:
    client, _, auth, other = hik
    # hik's devices are G-*: a controller named like another device is refused
    r = client.post(
        "/api/push/hik",
        content=gate_event(9, "2026-12-03T19:02:11+08:00", 27).replace(b"G-N1", b"wr-1"),
        headers=auth,
    )
    assert r.status_code == 422 and r.json()["dead_letters"][0]["reason"] == "unknown_topic"
    # a native body for another community's device (ctwing may report for any device id)
    body = {
        "message_id": "x-1",
        "topic": "community/z/wearable/wr-1/event",
        "payload": {"event": "fall"},
    }
    r = client.post("/api/push/ctwing", content=json.dumps(body).encode(), headers=other)
    assert r.status_code == 422, r.text
    (note,) = r.json()["dead_letters"]
    assert note["reason"] == "unknown_topic" and "community" in note["detail"]


def native(payload: str, *, around: bytes = b"") -> bytes:
    body = '{"message_id":"m2","topic":"community/y/wearable/wr-1/event","payload":' + payload + "}"
    return around + body.encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (native('{"event":"fall","event":"fall_cancelled"}'), "duplicate_key"),
        (native('{"event":"fall","x":' + "[" * 40 + "]" * 40 + "}"), "too_deep"),
        (native('{"event":"fall","steps":' + "9" * 30 + "}"), "too_large_number"),
        (native('{"event":"fall","x":1e400}'), "too_large_number"),
        (native('{"event":"fall","note":"\\ud800"}'), "lone_surrogate"),
        (native('{"event":"fall","x":NaN}'), "not_json"),
        (b"[" * 5000, "too_deep"),
        (b"\xff", "bad_utf8"),
    ],
)
def test_native_push_bodies_are_held_to_the_journals_json_rules(body: bytes, reason: str) -> None:
    with pytest.raises(ProfileError) as e:
        NATIVE.from_http(body)
    assert e.value.reason == reason


def test_a_native_body_with_a_bom_is_read_as_without() -> None:
    (c,) = NATIVE.from_http(native('{"event":"fall"}', around=b"\xef\xbb\xbf"))
    assert json.loads(c.payload) == {"event": "fall"}


def test_a_pushed_payload_with_a_key_twice_is_a_duplicate_key_dead_letter(hik: Any) -> None:
    client, _, _, other = hik
    body = native('{"event":"fall","event":"fall_cancelled"}')
    r = client.post("/api/push/ctwing", content=body, headers=other)
    assert r.status_code == 422 and r.json()["dead_letters"][0]["reason"] == "duplicate_key"


def test_wrong_tokens_never_lock_out_the_right_one(hik: Any) -> None:
    client, _, auth, other = hik
    for _ in range(25):  # hik's token was rotated; its platform still sends the old one
        client.post("/api/push/hik", content=b"{}", headers={"Authorization": "Bearer jyp_old"})
    old = client.post("/api/push/hik", content=b"{}", headers={"Authorization": "Bearer jyp_old"})
    assert old.status_code == 429 and int(old.headers["retry-after"]) > 0
    body = {
        "message_id": "m1",
        "topic": "community/y/wearable/wr-9/event",
        "payload": {"event": "sos"},
    }
    # another integration from the same address, and hik itself with its new token
    r = client.post("/api/push/ctwing", content=json.dumps(body).encode(), headers=other)
    assert r.status_code == 200, (r.status_code, r.text)
    forced = gate_event(3, "2026-12-03T19:02:11+08:00", 27)
    assert client.post("/api/push/hik", content=forced, headers=auth).status_code == 200


def test_the_integrations_file_is_yaml_1_2_with_no_key_twice(tmp_path: Path) -> None:
    f = tmp_path / "integrations.yaml"
    f.write_text("integrations:\n  - id: no\n    devices: [on]\n")  # YAML 1.1: False, True
    assert load_integrations(f, {"native"})["no"].devices == ["on"]
    f.write_text("integrations:\n  - id: a\n    devices: ['*']\n    devices: [smk-*]\n")
    with pytest.raises(IntegrationError) as e:
        load_integrations(f, {"native"})
    assert "duplicate key 'devices'" in str(e.value)


def test_jiayuan_run_lists_a_bad_integrations_file_and_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "integrations.yaml"
    f.write_text("integrations:\n  - id: ctwing\n    profile: huawei\n    devices: ['*']\n")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "JIAYUAN_DATA_DIR": str(tmp_path / "data"),
        "JIAYUAN_INTEGRATIONS": str(f),
        "JIAYUAN_DEMO": "1",
    }
    run = subprocess.run(
        [sys.executable, "-m", "jiayuan.cli", "run"], env=env, capture_output=True, timeout=120
    )
    err = run.stderr.decode()
    assert run.returncode == 2, err
    assert "bad push integrations" in err and "unknown profile 'huawei'" in err
    assert "Traceback" not in err


def test_a_body_over_its_profiles_limit_is_413_and_nothing_is_stored(hik: Any) -> None:
    client, ctx, auth, _ = hik
    before = dead_letters(ctx)
    big = gate_event(5, "2026-12-03T19:02:11+08:00", 27)[:-1] + b',"pad":"' + b"x" * 70_000 + b'"}'
    r = client.post("/api/push/hik", content=big, headers=auth)
    assert r.status_code == 413 and "65536" in r.json()["detail"], r.text
    assert dead_letters(ctx) == before


@pytest.mark.expect_errors("jiayuan_journal_refused_total")
def test_a_message_the_journal_refuses_is_answered_as_a_dead_letter_not_accepted(
    hik: Any,
) -> None:
    client, ctx, _, other = hik
    with closing(sqlite3.connect(ctx.journal.path)) as db, db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON readings WHEN NEW.device_id = 'wr-7'"
            " AND NEW.stream = 'event' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    body = [
        {"message_id": "j-1", "topic": "community/y/wearable/wr-7/telemetry",
         "payload": {"heart_rate": 70}},
        {"message_id": "j-2", "topic": "community/y/wearable/wr-7/event",
         "payload": {"event": "fall"}},
    ]  # fmt: skip
    r = client.post("/api/push/ctwing", content=json.dumps(body).encode(), headers=other)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["accepted"] == 1
    assert [(d["index"], d["message_id"], d["reason"]) for d in answer["dead_letters"]] == [
        (1, "j-2", "journal_refused")
    ]
    # the body's only message refused: nothing usable, 422
    r = client.post("/api/push/ctwing", content=json.dumps(body[1:]).encode(), headers=other)
    assert r.status_code == 422 and r.json()["dead_letters"][0]["reason"] == "journal_refused"


def test_a_platform_cannot_speak_for_a_device_registered_another_way(hik: Any) -> None:
    """ctwing may report for any id (``devices: ["*"]``), yet not for wr-1, a native watch:
    its push is a dead letter saying how wr-1 is registered. Registered ``via: ctwing``
    (through the API, no restart), its next push is accepted; hik's for it is refused."""
    client, ctx, _, other = hik

    def push(mid: str, device: str, headers: dict[str, str]) -> Any:
        body = {"message_id": mid, "topic": f"community/y/wearable/{device}/event",
                "payload": {"event": "sos"}}  # fmt: skip
        return client.post("/api/push/ctwing", content=json.dumps(body).encode(), headers=headers)

    r = push("w-1", "wr-1", other)
    assert r.status_code == 422, r.text
    (note,) = r.json()["dead_letters"]
    assert note["reason"] == "unknown_topic"
    assert note["detail"] == (
        "integration ctwing: device wr-1 is registered to report native MQTT (its own broker"
        " account), not via ctwing"
    )
    assert "sos" not in journaled_events(ctx, "wr-1")
    letters, _ = ctx.journal.dead_letters()
    assert any(d["detail"] == note["detail"] for d in letters)

    record = {**ctx.registry.devices["wr-1"].model_dump(mode="json", exclude_none=True)}
    r = client.put("/api/registry/devices/wr-1", json={**record, "via": "ctwing"},
                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["diff"]["devices"]["changed"][0]["fields"] == [
        {"field": "via", "before": None, "after": "ctwing"}
    ]
    assert push("w-2", "wr-1", other).json() == {"accepted": 1, "dead_letters": []}
    assert journaled_events(ctx, "wr-1").count("sos") == 1
    # an unregistered id is accepted as before, and remembered as heard through ctwing
    assert push("w-3", "wr-new", other).status_code == 200
    assert ctx.ways.heard("wr-new") == "ctwing"
