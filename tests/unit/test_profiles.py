"""Device profiles: vendor messages to canonical ones (ingest/profiles.py), profile files checked
like rule files (ingest/profile_model.py), and the pipeline's use of them."""

from __future__ import annotations

import json
import queue
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.journal import Journal
from ingest.listener import URGENT, Inbound
from ingest.payloads import DeadLetter, Reading, decode
from ingest.pipeline import Pipeline
from ingest.profile_model import check_main, shipped_profile_files
from ingest.profiles import (
    Canonical,
    Profile,
    ProfileError,
    ProfileFileError,
    Profiles,
    load_profiles,
    shipped_profiles,
)
from jiayuan.api.push import _keys
from jiayuan.settings import Settings

SHIPPED = shipped_profiles("y")
SMOKE = {"smoke": True, "battery": 97, "tamper": False, "battery_low": False, "linkquality": 120}


def readings(out: Iterable[Canonical]) -> list[Reading]:
    """Each canonical message decoded as a native one (all must be readings)."""
    got = [decode(c.topic, c.payload, time.time()) for c in out]
    assert all(isinstance(r, Reading) for r in got), got
    return got  # type: ignore[return-value]


def events(out: Iterable[Canonical]) -> list[str | None]:
    return [r.event for r in readings(out) if r.stream == "event"]


def fresh(profile_id: str) -> Profile:
    """The profile as just loaded: as after a restart, no last values."""
    p = shipped_profiles("y").get(profile_id)
    assert p is not None
    return p


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped profiles ------------------------------------------------------------------


def test_the_shipped_files_are_valid_and_checked_by_the_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert check_main([]) == 0
    out = capsys.readouterr().out
    assert "OK: 3 profiles in" in out and "zigbee2mqtt.yaml" in out
    assert {p.id for p in SHIPPED} == {"z2m_smoke", "z2m_contact", "z2m_sos", "hikvision_acs"}


def test_z2m_smoke_states_are_edges_and_the_first_report_after_a_start_counts() -> None:
    p, topic = fresh("z2m_smoke"), "zigbee2mqtt/smoke/sd-1"

    state = dict(SMOKE)

    def report(**fields: Any) -> list[str | None]:
        state.update(fields)  # Zigbee2MQTT sends the whole state each time
        return events(p.from_mqtt(topic, json.dumps(state).encode()))

    assert report() == ["alarm"]
    assert report(battery=96) == []  # z2m's full state again: no second alarm
    assert report(smoke=False) == ["alarm_clear"]
    assert report(smoke=False) == []
    assert report(tamper=True) == ["tamper"]
    assert report(tamper=False) == []  # no event for false
    assert report(tamper=True) == ["tamper"]  # a second tamper is a second event
    assert report(battery_low=True) == ["low_battery"]
    # a restart forgets: an alarm still on is raised again (the open alert is only updated),
    # and a clear that came meanwhile is not missed
    assert events(fresh("z2m_smoke").from_mqtt(topic, json.dumps(SMOKE).encode())) == ["alarm"]
    again = fresh("z2m_smoke").from_mqtt(topic, json.dumps({**SMOKE, "smoke": False}).encode())
    assert events(again) == ["alarm_clear"]
    # each device has its own last value
    assert events(p.from_mqtt("zigbee2mqtt/smoke/sd-2", json.dumps(SMOKE).encode())) == ["alarm"]


def test_z2m_smoke_battery_and_last_seen_become_canonical_fields() -> None:
    body = {**SMOKE, "last_seen": "2026-12-03T18:00:00+08:00"}
    out = fresh("z2m_smoke").from_mqtt("zigbee2mqtt/smoke/sd-1", json.dumps(body).encode())
    assert [c.topic for c in out] == [
        "community/y/smoke/sd-1/telemetry",
        "community/y/smoke/sd-1/event",
    ]
    assert [json.loads(c.payload) for c in out] == [
        {"battery": 97, "ts": 1796292000000},
        {"event": "alarm", "ts": 1796292000000},
    ]
    assert all(c.key is None for c in out)


def test_z2m_sos_every_press_counts_and_an_empty_action_is_none() -> None:
    p, topic = fresh("z2m_sos"), "zigbee2mqtt/sos/wr-1"
    press = json.dumps({"action": "emergency", "battery": 90}).encode()
    assert events(p.from_mqtt(topic, press)) == ["sos"]
    assert events(p.from_mqtt(topic, press)) == ["sos"]
    (alive,) = readings(p.from_mqtt(topic, b'{"action":""}'))
    assert (alive.kind, alive.stream, alive.values) == ("wearable", "telemetry", {})


def test_z2m_contact_is_a_gate_that_is_forced_when_opened() -> None:
    p, topic = fresh("z2m_contact"), "zigbee2mqtt/door/fire-exit-3"
    assert events(p.from_mqtt(topic, b'{"contact":false,"battery":100}')) == ["forced"]
    assert events(p.from_mqtt(topic, b'{"contact":false,"battery":100}')) == []
    (closed,) = readings(p.from_mqtt(topic, b'{"contact":true,"battery":100}'))
    assert (closed.kind, closed.device_id, closed.event) == ("gate", "fire-exit-3", "closed")


@pytest.mark.parametrize(
    ("payload", "state"),
    [(b'{"state":"online"}', "online"), (b"offline", "offline"), (b'"online"', "online")],
)
def test_z2m_availability_json_and_the_legacy_plain_form(payload: bytes, state: str) -> None:
    (r,) = readings(fresh("z2m_smoke").from_mqtt("zigbee2mqtt/smoke/sd-1/availability", payload))
    assert (r.stream, r.event) == ("status", state)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 2048, "too_deep"),
        (b'{"state":"online","state":"offline"}', "duplicate_key"),
        (b'{"state":"' + b"x" * 5000 + b'"}', "too_large"),
        (b'{"state":"dozing"}', "bad_value"),
    ],
)
def test_a_bad_availability_payload_is_a_dead_letter_with_its_reason_never_a_crash(
    payload: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ProfileError) as e:
        fresh("z2m_smoke").from_mqtt("zigbee2mqtt/smoke/sd-1/availability", payload)
    assert e.value.reason == reason
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # no traceback per message


def test_hikvision_event_codes_become_gate_events() -> None:
    p = fresh("hikvision_acs")

    def body(major: int, minor: int, **more: Any) -> bytes:
        ev = {"deviceName": "gt-1", "majorEventType": major, "subEventType": minor, **more}
        return json.dumps(
            {"dateTime": "2026-12-03T19:02:11+08:00", "AccessControllerEvent": ev}
        ).encode()

    (granted,) = readings(p.from_mqtt("hikvision/gt-1/event", body(5, 75, employeeNoString="7")))
    assert (granted.event, granted.attrs) == ("granted", {"method": "face", "credential": "7"})
    assert events(p.from_mqtt("hikvision/gt-1/event", body(5, 9))) == ["denied"]
    assert events(p.from_mqtt("hikvision/gt-1/event", body(5, 27))) == ["forced"]
    assert events(p.from_mqtt("hikvision/gt-1/event", body(5, 28))) == ["held_open"]
    assert events(p.from_mqtt("hikvision/gt-1/event", body(1, 1028))) == ["tamper"]
    # a code not in the map (the lock relay) is no event, but the gate was heard from
    (alive,) = readings(p.from_mqtt("hikvision/gt-1/event", body(5, 21)))
    assert alive.stream == "telemetry"


def test_from_http_keys_every_message_by_the_platforms_id_and_is_stateless() -> None:
    p = fresh("hikvision_acs")
    body = json.dumps(
        {
            "AccessControllerEvent": {
                "deviceName": "gt-1",
                "majorEventType": 5,
                "subEventType": 1,
                "serialNo": 4127,
            }
        }
    ).encode()
    first = p.from_http(body)
    assert [c.key for c in first] == ["4127"]  # no dateTime in this body: the id alone
    assert p.from_http(body) == first  # a retried push translates the same
    with pytest.raises(ProfileError) as e:
        p.from_http(b'{"AccessControllerEvent":{"serialNo":1}}')
    assert e.value.reason == "missing_field"
    with pytest.raises(ProfileError) as e:
        p.from_http(b'{"AccessControllerEvent":{"deviceName":"gt-1"}}')
    assert e.value.reason == "missing_field" and "message id" in e.value.message


def test_several_messages_of_one_push_get_distinct_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
profiles:
  - id: nb_smoke
    kind: smoke
    http: {device: imei, message_id: msgId}
    metrics: {battery: {field: bat}}
    events:
      - {field: alarm, map: {1: alarm, 0: alarm_clear}}
      - {field: tamper, map: {true: tamper}}
""",
    )
    (p,) = load_profiles([path], "y")
    out = p.from_http(b'{"imei":"86012","msgId":"m-9","bat":80,"alarm":1,"tamper":true}')
    assert [c.key for c in out] == ["m-9", "m-9", "m-9"]  # one platform message
    assert events(out) == ["alarm", "tamper"]
    keys = _keys("nb", out)
    assert len(set(keys)) == 3
    # another message whose id looks like a part of m-9's: no key in common
    (other,) = p.from_http(b'{"imei":"86012","msgId":"m-9#1","bat":80}')
    assert set(keys).isdisjoint(_keys("nb", [other]))


def test_a_profile_speaks_only_for_its_devices(tmp_path: Path) -> None:
    """A bridge whose profile lists its devices cannot raise or clear the alarm of a native
    detector by naming a Zigbee device after it."""
    path = write(
        tmp_path,
        "profiles:\n  - id: site_smoke\n    kind: smoke\n"
        '    devices: ["z-*"]\n'
        '    mqtt: {topic: "site/{device}", availability: {topic: "site/{device}/lwt"}}\n'
        "    http: {device: imei}\n"
        "    events: [{field: smoke, map: {true: alarm, false: alarm_clear}}]\n",
    )
    (p,) = load_profiles([path], "y")
    assert events(p.from_mqtt("site/z-1", b'{"smoke":true}')) == ["alarm"]
    calls: list[Callable[[], object]] = [
        lambda: p.from_mqtt("site/smk-1", b'{"smoke":false}'),  # a native detector's id
        lambda: p.from_mqtt("site/smk-1/lwt", b"offline"),
        lambda: p.from_http(b'{"imei":"smk-1","smoke":false}'),
    ]
    for call in calls:
        with pytest.raises(ProfileError) as e:
            call()
        assert e.value.reason == "unknown_topic" and "smk-1" in e.value.message


def test_a_message_id_too_long_or_with_a_control_character_is_refused_not_cut(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "profiles:\n  - id: nb\n    kind: smoke\n    http: {device: imei, message_id: msgId}\n",
    )
    (p,) = load_profiles([path], "y")
    long = "m" * 128
    assert [c.key for c in p.from_http(json.dumps({"imei": "1", "msgId": long}).encode())] == [long]
    for mid, reason in (
        (long + "1", "out_of_range"),  # would have been cut to the id above: one key for two
        ("m\u001f1", "bad_value"),
        ("m\n1", "bad_value"),
    ):
        with pytest.raises(ProfileError) as e:
            p.from_http(json.dumps({"imei": "1", "msgId": mid}).encode())
        assert e.value.reason == reason and "msgId" in e.value.message


def test_a_pushed_message_is_keyed_by_its_id_and_its_time() -> None:
    """A Hikvision controller's serialNo restarts after a reset or a replacement: with the
    event's time in its key, the new event 1 is not taken for a retry of the old event 1."""
    p = fresh("hikvision_acs")

    def body(when: str) -> bytes:
        ev = {"deviceName": "gt-1", "majorEventType": 5, "subEventType": 27, "serialNo": 1}
        return json.dumps({"dateTime": when, "AccessControllerEvent": ev}).encode()

    (a,) = p.from_http(body("2026-11-01T08:00:00+08:00"))
    (b,) = p.from_http(body("2026-12-03T19:02:11+08:00"))
    assert a.key != b.key and a.key is not None and a.key.startswith("1\x1f")
    assert p.from_http(body("2026-11-01T08:00:00+08:00")) == [a]  # a retry: the same key


def test_units_scale_and_time_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
profiles:
  - id: us_smoke
    kind: smoke
    mqtt: {topic: "acme/{device}/state"}
    device_id: "acme-{device}"
    time: {field: t, form: epoch_s}
    metrics:
      temperature_c: {field: temp_f, unit: fahrenheit}
      battery: {field: bat, unit: fraction}
      co_ppm: {field: co_raw, scale: 0.1, offset: -2}
""",
    )
    (p,) = load_profiles([path], "y")
    now = int(time.time())
    body = json.dumps({"temp_f": 212, "bat": 0.5, "co_raw": 120, "t": now}).encode()
    (r,) = readings(p.from_mqtt("acme/17/state", body))
    assert r.device_id == "acme-17" and r.ts == now
    assert r.values == {"temperature_c": 100.0, "battery": 50.0, "co_ppm": 10.0}
    with pytest.raises(ProfileError) as e:  # epoch_s wants a number
        p.from_mqtt("acme/17/state", b'{"t":"2026-12-03T18:00:00"}')
    assert e.value.reason == "wrong_type"
    for bad in ({"temp_f": "hot"}, {"bat": True}):  # the telemetry's dead letter, as a native's
        (c,) = p.from_mqtt("acme/17/state", json.dumps(bad).encode())
        d = decode(c.topic, c.payload, time.time())
        assert isinstance(d, DeadLetter) and d.reason == "wrong_type"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff", "bad_utf8"),
        (b"{", "not_json"),
        (b"[1]", "not_object"),
        (b'{"smoke":true,"smoke":false}', "duplicate_key"),
        (b'{"smoke":"yes"}', "wrong_type"),
        (b'{"smoke":1.5}', "wrong_type"),
        (b'{"battery":' + b"9" * 30 + b"}", "too_large_number"),
        (b"{}" + b" " * 70_000, "too_large"),
    ],
)
def test_bad_vendor_payloads_raise_profile_errors_with_a_dead_letter_reason(
    payload: bytes, reason: str
) -> None:
    """The whole message's reason, or (an event field of the wrong type) that event's."""
    try:
        out = fresh("z2m_smoke").from_mqtt("zigbee2mqtt/smoke/sd-1", payload)
    except ProfileError as e:
        got = e.reason
    else:
        got = next(c.refused[0] for c in out if c.refused is not None)
    assert got == reason


# --- the property: nothing but ProfileError, whatever arrives ---------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["smoke", "tamper", "battery", "battery_low", "contact", "action", "last_seen", "state",
     "AccessControllerEvent", "dateTime", "test"]
)  # fmt: skip
VENDOR_OBJECTS = st.dictionaries(FIELDS | st.text(max_size=8), JSON, max_size=6)
VENDOR_TOPICS = [
    t
    for p in SHIPPED
    if p.spec.mqtt is not None
    for t in (
        p.spec.mqtt.topic,
        *([p.spec.mqtt.availability.topic] if p.spec.mqtt.availability else []),
    )
]
TOPICS = st.sampled_from(
    [t.replace("{device}", dev) for t in VENDOR_TOPICS for dev in ("sd-1", "x y", "é")]
)


def translate_or_profile_error(call: Any) -> None:
    try:
        out = call()
    except ProfileError as e:
        assert e.reason in {"bad_utf8", "not_json", "not_object", "too_deep", "too_large",
                            "too_large_number", "duplicate_key", "lone_surrogate",
                            "missing_field", "wrong_type", "bad_value", "out_of_range",
                            "unknown_topic"}  # fmt: skip
        return
    for c in out:
        assert isinstance(decode(c.topic, c.payload, time.time()), Reading | DeadLetter)


@settings(max_examples=300, deadline=None)
@given(topic=TOPICS, payload=st.binary(max_size=200))
def test_arbitrary_bytes_through_from_mqtt_raise_nothing_but_profile_error(
    topic: str, payload: bytes
) -> None:
    profile = SHIPPED.for_topic(topic)
    assert profile is not None
    translate_or_profile_error(lambda: profile.from_mqtt(topic, payload))


@settings(max_examples=300, deadline=None)
@given(topic=TOPICS, obj=VENDOR_OBJECTS | JSON)
def test_arbitrary_json_through_from_mqtt_and_from_http_raise_nothing_but_profile_error(
    topic: str, obj: object
) -> None:
    profile = SHIPPED.for_topic(topic)
    assert profile is not None
    payload = json.dumps(obj).encode()
    translate_or_profile_error(lambda: profile.from_mqtt(topic, payload))
    hikvision = SHIPPED.get("hikvision_acs")
    assert hikvision is not None
    translate_or_profile_error(lambda: hikvision.from_http(payload))


# --- bad profile files -----------------------------------------------------------------------


def test_a_bad_profile_file_is_refused_naming_the_file_the_profile_and_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
profiles:
  - id: wrong_metric
    kind: smoke
    mqtt: {topic: "acme/{device}"}
    metrics: {heart_rate: {field: hr}}
  - id: wrong_event
    kind: gate
    mqtt: {topic: "acme/gate/{device}"}
    events: [{field: code, map: {7: alarm}}]
  - id: no_device
    kind: smoke
    mqtt: {topic: "acme/all", colour: red}
  - id: nowhere
    kind: wearable
  - id: two_wrongs
    kind: wearable
    mqtt: {topic: "acme/band/{device}"}
    metrics: {co_ppm: {field: co}}
    events: [{field: btn, map: {1: alarm}, attrs: {credential: card}}]
""",
    )
    with pytest.raises(ProfileFileError) as e:
        load_profiles([path], "y")
    lines = e.value.errors
    assert (
        f"{path} line 3: profile 'wrong_metric': field 'metrics.heart_rate': not a smoke"
        in lines[0]
    )
    assert "profile 'wrong_event': field 'events[0].map.7': 'alarm' is not a gate event" in lines[1]
    assert any(
        "profile 'no_device': field 'mqtt.topic': needs exactly one level" in x for x in lines
    )
    assert any("profile 'no_device': field 'mqtt.colour': unknown field" in x for x in lines)
    assert any("profile 'nowhere'" in x and "give mqtt, http or both" in x for x in lines)
    two = [x for x in lines if "profile 'two_wrongs'" in x]  # every problem, not the first
    assert len(two) == 3 and "field 'metrics.co_ppm'" in two[0]
    assert "field 'events[0].map.1': 'alarm' is not a wearable event" in two[1]
    assert "field 'events[0].attrs': gate events only" in two[2]
    assert all(x.startswith(str(path)) for x in lines)
    assert check_main([path]) == 1
    assert "error(s) in 1 file(s)" in capsys.readouterr().err


def test_duplicate_keys_ids_and_topics_across_files_are_refused(tmp_path: Path) -> None:
    twice = write(tmp_path, "profiles:\n  - id: a\n    id: b\n    kind: smoke\n", "twice.yaml")
    assert "duplicate key 'id'" in load_errors([twice])[0]
    same = write(
        tmp_path,
        "profiles:\n  - id: z2m_smoke\n    kind: smoke\n"
        '    mqtt: {topic: "zigbee2mqtt/smoke/{device}"}\n',
        "same.yaml",
    )
    errors = load_errors([*shipped_profile_files(), same])
    assert any("profile 'z2m_smoke': field 'id': duplicate id" in x for x in errors)
    assert any("'zigbee2mqtt/smoke/{device}' is already profile 'z2m_smoke'" in x for x in errors)


def test_yaml_1_2_keeps_vendor_words_as_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'profiles:\n  - id: plug\n    kind: smoke\n    mqtt: {topic: "t/{device}"}\n'
        "    events: [{field: state, map: {ON: alarm, OFF: alarm_clear}}]\n",
    )
    (p,) = load_profiles([path], "y")
    assert events(p.from_mqtt("t/d1", b'{"state":"ON"}')) == ["alarm"]


def load_errors(paths: list[Path]) -> list[str]:
    with pytest.raises(ProfileFileError) as e:
        load_profiles(paths, "y")
    return e.value.errors


def test_settings_load_the_shipped_profiles_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JIAYUAN_PROFILES", raising=False)
    assert Settings().profile_files() == shipped_profile_files()
    monkeypatch.setenv("JIAYUAN_PROFILES", "")
    assert Settings().profile_files() == []
    monkeypatch.setenv("JIAYUAN_PROFILES", f"shipped,{tmp_path / 'site.yaml'}")
    assert Settings().profile_files() == [*shipped_profile_files(), tmp_path / "site.yaml"]


# --- the pipeline ----------------------------------------------------------------------------


def vendor(topic: str, payload: bytes, mid: int) -> Inbound:
    return Inbound(topic, payload, mid, 1, False, time.time(), URGENT)


def test_one_vendor_message_is_several_readings_acknowledged_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    acked: list[int] = []
    pipeline = Pipeline(
        queue.Queue(),
        journal,
        lambda ms: acked.extend(m.mid for m in ms),
        profiles=shipped_profiles("y"),
    )
    batch = [
        vendor("zigbee2mqtt/smoke/sd-1", json.dumps(SMOKE).encode(), 1),
        vendor("zigbee2mqtt/smoke/sd-1", b'{"smoke":"yes"}', 2),
        vendor("zigbee2mqtt/smoke/sd-1", b'{"battery":150}', 3),
        vendor("zigbee2mqtt/elsewhere", b"{}", 4),
        Inbound("community/y/smoke/sd-9/event", b'{"event":"alarm"}', 5, 1, False, time.time()),
    ]
    new = pipeline.process(batch)
    assert [(r.device_id, r.stream, r.event) for r in new] == [
        ("sd-1", "telemetry", None),
        ("sd-1", "event", "alarm"),
        ("sd-9", "event", "alarm"),
    ]
    assert sorted(acked) == [1, 2, 3, 4, 5]  # each message once
    items, total = journal.dead_letters()
    assert total == 3
    assert sorted((d["topic"], d["reason"]) for d in items) == [
        ("zigbee2mqtt/elsewhere", "unknown_topic"),
        ("zigbee2mqtt/smoke/sd-1", "out_of_range"),
        ("zigbee2mqtt/smoke/sd-1", "wrong_type"),
    ]
    journal.close()


@pytest.mark.expect_errors("jiayuan_journal_refused_total")
def test_a_refused_reading_of_a_vendor_message_does_not_hold_its_others(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    Journal(path, synchronous="NORMAL").close()
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON readings WHEN NEW.stream = 'event'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    journal = Journal(path, synchronous="NORMAL")
    acked: list[int] = []
    pipeline = Pipeline(
        queue.Queue(),
        journal,
        lambda ms: acked.extend(m.mid for m in ms),
        profiles=shipped_profiles("y"),
    )
    new = pipeline.process([vendor("zigbee2mqtt/smoke/sd-1", json.dumps(SMOKE).encode(), 7)])
    assert [(r.stream, r.values) for r in new] == [("telemetry", {"battery": 97})]
    assert acked == [7]
    (letter,), _ = journal.dead_letters()
    assert (letter["topic"], letter["reason"]) == ("zigbee2mqtt/smoke/sd-1", "journal_refused")
    # the alarm was not journaled: the detector's next report (smoke still on) raises it
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER refuse")
    again = pipeline.process([vendor("zigbee2mqtt/smoke/sd-1", json.dumps(SMOKE).encode(), 8)])
    assert [r.event for r in again if r.stream == "event"] == ["alarm"]
    journal.close()


def test_a_dead_lettered_report_does_not_consume_the_smoke_edge(tmp_path: Path) -> None:
    """A report whose time cannot be read is one dead letter, and records no state: the
    next report, smoke still on, raises the alarm. One with a field the profile cannot read
    (tamper "x") raises it at once; either way security is paged exactly once."""
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    pipeline = Pipeline(queue.Queue(), journal, lambda ms: None, profiles=shipped_profiles("y"))

    def alarms(topic: str, *reports: bytes) -> list[str | None]:
        new = [r for i, b in enumerate(reports) for r in pipeline.process([vendor(topic, b, i)])]
        return [r.event for r in new if r.stream == "event"]

    bad_time = json.dumps({**SMOKE, "last_seen": "yesterday"}).encode()
    smoke = json.dumps(SMOKE).encode()
    assert alarms("zigbee2mqtt/smoke/sd-1", bad_time, smoke, smoke) == ["alarm"]
    bad_tamper = json.dumps({**SMOKE, "tamper": "x"}).encode()
    assert alarms("zigbee2mqtt/smoke/sd-3", bad_tamper, smoke, smoke) == ["alarm"]
    journal.close()


def test_a_bad_battery_or_tamper_does_not_drop_the_alarm_of_the_same_report(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    pipeline = Pipeline(queue.Queue(), journal, lambda ms: None, profiles=shipped_profiles("y"))
    t = "zigbee2mqtt/smoke/sd-2"
    new = pipeline.process([vendor(t, b'{"smoke":true,"battery":"97","tamper":"x"}', 1)])
    assert [(r.stream, r.event) for r in new] == [("event", "alarm")]
    items, _ = journal.dead_letters()
    assert sorted(d["reason"] for d in items) == ["wrong_type", "wrong_type"]  # battery, tamper
    # the same report again: the alarm is not raised twice, a good battery is read
    again = pipeline.process([vendor(t, b'{"smoke":true,"battery":97}', 2)])
    assert [(r.stream, r.event, r.values) for r in again] == [("telemetry", None, {"battery": 97})]
    journal.close()


def test_a_vendor_topic_with_a_level_more_is_subscribed_and_dead_lettered(tmp_path: Path) -> None:
    """Zigbee2MQTT names with a slash make deeper topics (smoke/3-1/SD-201): they match no
    profile's topic, and must become dead letters the operator sees, not vanish at the broker."""
    from paho.mqtt.client import topic_matches_sub

    topic = "zigbee2mqtt/smoke/3-1/SD-201"
    assert any(topic_matches_sub(f, topic) for f in SHIPPED.filters(urgent=True))
    assert not any(
        topic_matches_sub(f, "zigbee2mqtt/bridge/state") for f in SHIPPED.filters(urgent=True)
    )
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    pipeline = Pipeline(queue.Queue(), journal, lambda ms: None, profiles=SHIPPED)
    assert pipeline.process([vendor(topic, json.dumps(SMOKE).encode(), 1)]) == []
    (letter,), _ = journal.dead_letters()
    assert (letter["topic"], letter["reason"]) == (topic, "unknown_topic")
    journal.close()


def test_no_profiles_means_no_vendor_topics() -> None:
    assert Profiles().filters(urgent=True) == () and Profiles().bridges() == {}
    assert SHIPPED.filters(urgent=False) == ()  # every shipped profile reads on the urgent session


def test_broker_credentials_follow_the_profiles_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`jiayuan broker credentials` makes bridge accounts for the profiles the service loads:
    JIAYUAN_PROFILES, or --profiles; none when there are none."""
    from ingest.access import CredentialsFile
    from jiayuan.cli import main as jiayuan

    (tmp_path / "registry").mkdir()
    devices = "- {device_id: sd-1, kind: smoke, compound: C01}\n"
    (tmp_path / "registry" / "devices.yaml").write_text(devices)
    out = tmp_path / "broker"
    args = ["broker", "credentials", "--registry", str(tmp_path / "registry"), "--out", str(out)]
    monkeypatch.delenv("JIAYUAN_PROFILES", raising=False)
    assert jiayuan(args) == 0
    assert set(CredentialsFile.load(out / "credentials.json").bridges) == {
        "bridge.zigbee2mqtt",
        "bridge.hikvision",
    }
    monkeypatch.setenv("JIAYUAN_PROFILES", str(shipped_profile_files()[0]))  # hikvision only
    assert jiayuan(args) == 0
    assert set(CredentialsFile.load(out / "credentials.json").bridges) == {"bridge.hikvision"}
    assert "removed 1 (bridge.zigbee2mqtt)" in capsys.readouterr().out
    assert jiayuan([*args, "--profiles", ""]) == 0
    assert CredentialsFile.load(out / "credentials.json").bridges == {}
    assert "zigbee2mqtt" not in (out / "acl").read_text()
    bad = write(tmp_path, "profiles: 3\n", "bad.yaml")
    assert jiayuan([*args, "--profiles", str(bad)]) == 1
    assert "expected a mapping with a 'profiles' list" in capsys.readouterr().err


# --- each device id belongs to one way in (the registry's via) -------------------------------


def test_wrong_way_is_the_registry_via_and_unregistered_ids_go_any_way() -> None:
    from registry.models import Device, wrong_way

    native = Device(device_id="sd-n", kind="smoke", compound="C01")
    zigbee = Device(device_id="sd-z", kind="smoke", compound="C01", via="z2m_smoke")
    assert wrong_way(native, None) is None and wrong_way(zigbee, "z2m_smoke") is None
    assert wrong_way(None, "z2m_smoke") is None and wrong_way(None, None) is None
    assert wrong_way(native, "z2m_smoke") == (
        "device sd-n is registered to report native MQTT (its own broker account),"
        " not via z2m_smoke"
    )
    assert wrong_way(zigbee, None) == (
        "device sd-z is registered to report via z2m_smoke, not native MQTT (its own broker"
        " account)"
    )
    assert "registered to report via z2m_smoke, not via ctwing" in str(wrong_way(zigbee, "ctwing"))


def test_a_profile_cannot_speak_for_a_native_device_and_the_registry_is_read_as_it_is_now(
    tmp_path: Path,
) -> None:
    """The review's case: a Zigbee device named smoke/<native id> reporting smoke:false would
    clear the native detector's alarm. It is a dead letter saying how the device is
    registered; the edge it carried is forgotten; a Zigbee device registered via the profile,
    and an unregistered one, report as before; a registry swapped in is read at once."""
    from ingest.ways import WaysIn
    from registry import Device, Registry

    def registry(*devices: Device) -> Registry:
        return Registry("y", devices=list(devices))

    native = Device(device_id="sd-n", kind="smoke", compound="C01")
    zigbee = Device(device_id="sd-z", kind="smoke", compound="C01", via="z2m_smoke")
    ways = WaysIn(registry(native, zigbee))
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    pipeline = Pipeline(
        queue.Queue(), journal, lambda ms: None, profiles=shipped_profiles("y"), ways=ways
    )
    off, on = json.dumps({**SMOKE, "smoke": False}).encode(), json.dumps(SMOKE).encode()

    def events_of(topic: str, payload: bytes, mid: int) -> list[str | None]:
        out = pipeline.process([vendor(topic, payload, mid)])
        return [r.event for r in out if r.stream == "event"]

    assert events_of("zigbee2mqtt/smoke/sd-n", on, 1) == []
    assert events_of("zigbee2mqtt/smoke/sd-n", off, 2) == []
    assert events_of("zigbee2mqtt/smoke/sd-n", on, 20) == []  # were it kept, no alarm below
    letters, _ = journal.dead_letters()
    assert {(d["topic"], d["reason"]) for d in letters} == {
        ("zigbee2mqtt/smoke/sd-n", "unknown_topic")
    }
    assert all(
        "profile z2m_smoke: device sd-n is registered to report native MQTT" in d["detail"]
        for d in letters
    )
    assert journal.get_device("sd-n") is None  # nothing of it journaled
    # the native detector itself reports as ever; the Zigbee one through its profile
    native_alarm = Inbound("community/y/smoke/sd-n/event", b'{"event":"alarm"}', 3, 1, False,
                           time.time(), URGENT)  # fmt: skip
    assert [r.event for r in pipeline.process([native_alarm])] == ["alarm"]
    assert events_of("zigbee2mqtt/smoke/sd-z", on, 4) == ["alarm"]
    assert events_of("zigbee2mqtt/smoke/sd-new", on, 5) == ["alarm"]  # unregistered: as today
    assert ways.heard("sd-new") == "z2m_smoke" and ways.heard("sd-n") is None
    # the Zigbee device natively: refused too (it has no broker account; a second line)
    zig_native = Inbound("community/y/smoke/sd-z/event", b'{"event":"alarm_clear"}', 6, 1,
                         False, time.time(), URGENT)  # fmt: skip
    assert pipeline.process([zig_native]) == []
    # the registry changes (sd-n now reported through Zigbee2MQTT): the next message follows;
    # the edge refused earlier was forgotten, so its first report now raises the alarm
    ways.set_registry(registry(native.model_copy(update={"via": "z2m_smoke"}), zigbee))
    assert events_of("zigbee2mqtt/smoke/sd-n", on, 7) == ["alarm"]
    journal.close()
