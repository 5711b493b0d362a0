"""Broker accounts, ACL, secrets and TLS files; the settings and options that use them. The
broker's own verdict on these files is in tests/integration/test_broker_security.py."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.broker import PROJECT_CONF, render_conf
from ingest.access import BrokerAccess, CredentialsFile
from ingest.profiles import Profiles
from jiayuan.broker import accounts as brokerauth
from jiayuan.broker.tls import TlsFiles, make_tls
from jiayuan.cli import main as jiayuan
from jiayuan.settings import Settings
from registry import Device, Registry
from simulators.cli import _publisher

REG = Registry(
    "y",
    devices=[
        Device(device_id="wr-1", kind="wearable", compound="C01"),
        Device(device_id="smk-1", kind="smoke", compound="C01"),
        Device(device_id="gate-C02-main", kind="gate", compound="C02"),
    ],
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_hashes_are_mosquitto_2s_pbkdf2_sha512_format() -> None:
    # Made by `mosquitto_passwd -U` (Mosquitto 2.0.11) for the password "secret".
    salt = base64.b64decode("UrOi83sDERwWjaxJ")
    assert brokerauth.hash_password("secret", salt) == (
        "$7$101$UrOi83sDERwWjaxJ$QyV9/q8JyiI8wUFS6TkdEtj16l6p188+NVLlxc2HQpFla3ZwlFMeGN9H0dcuizSs"
        "WYvEazBFbHsO1JA4tFrQpQ=="
    )
    a, b = brokerauth.hash_password("x"), brokerauth.hash_password("x")
    assert a != b and a.startswith("$7$101$")  # a fresh salt each time


def test_the_acl_gives_each_account_exactly_its_topics(tmp_path: Path) -> None:
    brokerauth.write_credentials(REG, tmp_path, profiles=Profiles())
    acl = (tmp_path / "acl").read_text()
    blocks: dict[str, list[str]] = {}
    user = None
    for line in acl.splitlines():
        if line.startswith("user "):
            user = line[5:]
            blocks[user] = []
        elif line and not line.startswith("#"):
            assert user is not None, f"a line for anonymous clients: {line}"
            blocks[user].append(line)
    assert blocks == {
        "jiayuan.service": ["topic read community/+/+/+/+"],
        # the service's further telemetry ingest processes (JIAYUAN_INGEST_PROCESSES)
        **{f"jiayuan.service-t{i}": ["topic read community/+/+/+/+"] for i in range(2, 9)},
        # the session slots of several instances on PostgreSQL (jiayuan/slots.py)
        **{f"jiayuan.service-slot-{i}": ["topic read community/+/+/+/+"] for i in range(16)},
        **{
            user: ["topic read community/+/+/+/event", "topic read community/+/+/+/status"]
            for user in ["jiayuan.urgent", *(f"jiayuan.urgent-slot-{i}" for i in range(8))]
        },
        "gateway.C01": [
            "topic write community/y/smoke/smk-1/+",
            "topic write community/y/wearable/wr-1/+",
        ],
        "gateway.C02": ["topic write community/y/gate/gate-C02-main/+"],
        "gate-C02-main": ["topic write community/y/gate/gate-C02-main/+"],
        "smk-1": ["topic write community/y/smoke/smk-1/+"],
        "wr-1": ["topic write community/y/wearable/wr-1/+"],
    }
    assert "pattern" not in acl and "readwrite" not in acl


def test_a_device_that_reports_through_a_profile_or_a_push_has_no_account(tmp_path: Path) -> None:
    """Only native devices have accounts of their own (and gateway topics): one that reports
    through Zigbee2MQTT or a platform's push cannot connect and publish as itself."""
    reg = Registry(
        "y",
        devices=[
            *REG.devices.values(),
            Device(device_id="sd-z1", kind="smoke", compound="C01", via="z2m_smoke"),
            Device(device_id="sd-p1", kind="smoke", compound="C01", via="ctwing"),
        ],
    )
    brokerauth.write_credentials(reg, tmp_path, profiles=Profiles())
    creds = CredentialsFile.load(tmp_path / "credentials.json")
    assert set(creds.devices) == {"wr-1", "smk-1", "gate-C02-main"}
    assert creds.gateways["gateway.C01"].devices == ("smk-1", "wr-1")
    acl = (tmp_path / "acl").read_text()
    assert "sd-z1" not in acl and "sd-p1" not in acl
    assert "sd-z1" not in (tmp_path / "passwords").read_text()


def test_bridges_write_their_tree_and_the_service_reads_the_profiles_topics(
    tmp_path: Path,
) -> None:
    """The shipped profiles (the default): bridge.zigbee2mqtt may read and write zigbee2mqtt/#
    and nothing else; the urgent session's account reads the profiles' topics, the telemetry
    one does not (a smoke alarm never queues behind telemetry)."""
    report = brokerauth.write_credentials(REG, tmp_path)
    acl = (tmp_path / "acl").read_text()
    blocks = {
        b.split("\n", 1)[0]: [t for t in b.split("\n")[1:] if t.startswith("topic")]
        for b in acl.split("user ")[1:]
    }
    assert [t for t in blocks["bridge.zigbee2mqtt"] if t] == ["topic readwrite zigbee2mqtt/#"]
    assert [t for t in blocks["bridge.hikvision"] if t] == ["topic readwrite hikvision/#"]
    assert "topic read zigbee2mqtt/smoke/#" in blocks["jiayuan.urgent"]  # and availability
    assert not any("zigbee2mqtt" in t for t in blocks["jiayuan.service"])
    assert report.bridges == 2
    creds = CredentialsFile.load(tmp_path / "credentials.json")
    first = creds.password_of("bridge.zigbee2mqtt")
    assert first is not None
    brokerauth.write_credentials(REG, tmp_path)  # a second run keeps the bridge's password
    assert (
        CredentialsFile.load(tmp_path / "credentials.json").password_of("bridge.zigbee2mqtt")
        == first
    )


def test_files_secrets_and_their_modes(tmp_path: Path) -> None:
    report = brokerauth.write_credentials(REG, tmp_path, profiles=Profiles())
    assert (report.devices, report.gateways) == (3, 2)
    creds = CredentialsFile.load(tmp_path / "credentials.json")
    users = [line.split(":", 1)[0] for line in (tmp_path / "passwords").read_text().splitlines()]
    assert sorted(users) == sorted(["jiayuan.service", "jiayuan.urgent", "wr-1", "smk-1",
                                    "gate-C02-main", "gateway.C01", "gateway.C02",
                                    *brokerauth.telemetry_users(),
                                    *brokerauth.slot_users(),
                                    *brokerauth.slot_users("jiayuan.urgent", 8)])  # fmt: skip
    text = (tmp_path / "passwords").read_text()
    assert creds.urgent is not None and creds.urgent[1] != creds.service[1]
    for pw in [creds.service[1], creds.urgent[1], *creds.devices.values()]:
        assert len(pw) == 32 and pw not in text  # only hashes in the broker's file
    assert (tmp_path / "service.password").read_text() == creds.service[1] + "\n"
    assert (tmp_path / "urgent.password").read_text() == creds.urgent[1] + "\n"
    for name in ("passwords", "acl", "credentials.json", "service.password", "urgent.password",
                 "changes.log"):  # fmt: skip
        assert mode(tmp_path / name) == 0o600, name
    assert creds.gateways["gateway.C01"].devices == ("smk-1", "wr-1")
    gateway = creds.gateways["gateway.C01"]
    assert gateway.password not in repr(gateway) and creds.devices["wr-1"] not in repr(creds)
    assert "p4ss" not in repr(BrokerAccess("wr-1", "p4ss"))


def test_regeneration_keeps_passwords_drops_removed_devices_and_rotates(tmp_path: Path) -> None:
    brokerauth.write_credentials(REG, tmp_path)
    first = CredentialsFile.load(tmp_path / "credentials.json")
    smaller = Registry(
        "y",
        devices=[
            *(d for d in REG.devices.values() if d.device_id != "smk-1"),
            Device(device_id="wr-2", kind="wearable", compound="C03"),
        ],
    )
    report = brokerauth.write_credentials(smaller, tmp_path, rotate=["wr-1"])
    assert report.removed == ["smk-1"]
    assert report.added == ["gateway.C03", "wr-2"] and report.rotated == ["wr-1"]
    second = CredentialsFile.load(tmp_path / "credentials.json")
    assert second.service == first.service
    assert second.devices["gate-C02-main"] == first.devices["gate-C02-main"]
    assert second.devices["wr-1"] != first.devices["wr-1"]
    assert "smk-1" not in second.devices and "smk-1" not in (tmp_path / "passwords").read_text()
    assert "smk-1" not in (tmp_path / "acl").read_text()
    log = [json.loads(x) for x in (tmp_path / "changes.log").read_text().splitlines()]
    assert log[-1]["removed"] == ["smk-1"] and first.devices["wr-1"] not in str(log)
    with pytest.raises(ValueError, match="no such account nobody"):
        brokerauth.write_credentials(smaller, tmp_path, rotate=["nobody"])
    with pytest.raises(ValueError, match="community 'y'"):
        brokerauth.write_credentials(Registry("z"), tmp_path)


def test_test_accounts_are_marked_and_only_made_on_request(tmp_path: Path) -> None:
    brokerauth.write_credentials(REG, tmp_path)
    assert "test." not in (tmp_path / "acl").read_text()
    brokerauth.write_credentials(REG, tmp_path, tests=["any"])
    acl = (tmp_path / "acl").read_text()
    assert "# TEST-ONLY" in acl and "user test.any\ntopic readwrite #" in acl


def test_a_damaged_credentials_file_is_named_without_its_contents(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text('{"format": 1, "community": "y", "service": {"password": "s3cr3t-value"}}')
    with pytest.raises(ValueError) as e:
        CredentialsFile.load(path)
    assert str(path) in str(e.value) and "s3cr3t" not in str(e.value)


def test_the_commands_write_credentials_and_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "devices.yaml").write_text(
        "\n".join(
            f"- {{device_id: {d.device_id}, kind: {d.kind}, compound: {d.compound}}}"
            for d in REG.devices.values()
        )
    )
    out = tmp_path / "broker"
    assert jiayuan(["broker", "tls", "--out", str(out)]) == 0
    args = ["broker", "credentials", "--registry", str(tmp_path / "registry"), "--out", str(out)]
    assert jiayuan([*args, "--no-gateways"]) == 0
    printed = capsys.readouterr().out
    assert "3 devices, 0 gateways" in printed
    creds = CredentialsFile.load(out / "credentials.json")
    assert creds.service[1] not in printed and creds.gateways == {}
    assert {p.name for p in out.iterdir()} >= {
        "ca.crt", "ca.key", "server.crt", "server.key", "passwords", "acl", "credentials.json",
        "service.password", "urgent.password",
    }  # fmt: skip
    assert mode(out / "ca.key") == mode(out / "server.key") == 0o600
    assert jiayuan(["broker", "credentials", "--registry", str(tmp_path / "none"),
                    "--out", str(out)]) == 1  # fmt: skip


def test_the_ca_is_kept_and_the_certificate_follows_the_names(tmp_path: Path) -> None:
    first = make_tls(tmp_path)
    assert first.made == ("ca", "server")
    ca = first.ca_cert.read_bytes()
    assert make_tls(tmp_path).made == ()
    assert make_tls(tmp_path, ("127.0.0.1", "broker.example")).made == ("server",)
    assert make_tls(tmp_path, renew=True, hosts=("127.0.0.1", "broker.example")).made == ("server",)
    assert first.ca_cert.read_bytes() == ca


def _handshake(files: TlsFiles, server_name: str) -> str:
    """A TLS handshake in memory, as a client that trusts only ``ca.crt`` makes it with the
    broker's certificate; the negotiated version, or the client's verification error."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.server_cert, files.server_key)
    client = ssl.create_default_context(cafile=files.ca_cert)
    bios = [ssl.MemoryBIO() for _ in range(4)]
    s = server.wrap_bio(bios[0], bios[1], server_side=True)
    c = client.wrap_bio(bios[2], bios[3], server_hostname=server_name)
    for _ in range(10):
        for end in (c, s):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as e:
                return str(e.verify_message)
        bios[0].write(bios[3].read())
        bios[2].write(bios[1].read())
        if c.version() and s.version():
            with contextlib.suppress(ssl.SSLWantReadError):
                c.do_handshake()
            return str(c.version())
    raise AssertionError("handshake did not finish")


def test_clients_that_trust_the_ca_accept_the_broker_by_its_names(tmp_path: Path) -> None:
    files = make_tls(tmp_path)
    assert _handshake(files, "127.0.0.1").startswith("TLSv1.")
    assert _handshake(files, "localhost").startswith("TLSv1.")
    assert "mismatch" in _handshake(files, "broker.example")
    other = make_tls(tmp_path / "other")
    assert "unable to get local issuer" in _handshake(
        TlsFiles(other.ca_cert, files.server_cert, files.server_key, ()), "127.0.0.1"
    )
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days == 825


def test_a_certificate_that_no_longer_fits_its_key_is_made_again(tmp_path: Path) -> None:
    make_tls(tmp_path)
    (tmp_path / "server.key").write_bytes((tmp_path / "ca.key").read_bytes())
    assert make_tls(tmp_path).made == ("server",)
    assert mode(tmp_path / "server.key") == 0o600
    assert _handshake(make_tls(tmp_path, renew=False), "localhost").startswith("TLSv1.")


def test_the_conf_operators_deploy_is_the_one_tests_run(tmp_path: Path) -> None:
    deployed = PROJECT_CONF.read_text()
    for line in (
        "per_listener_settings false",
        "allow_anonymous false",
        "password_file /etc/mosquitto/jiayuan/passwords",
        "acl_file /etc/mosquitto/jiayuan/acl",
        "listener 8883",
        "listener 1883 127.0.0.1",
        "max_queued_messages 2000000",
        "max_inflight_messages 0",
    ):
        assert f"\n{line}\n" in deployed, line
    rendered = render_conf(1884, tmp_path, tls_port=8884, auth_dir=tmp_path / "auth")
    assert "listener 8884 127.0.0.1\n" in rendered and "listener 1884 127.0.0.1\n" in rendered
    settings = [x for x in rendered.splitlines() if x and not x.startswith("#")]
    assert not [x for x in settings if "/etc/mosquitto" in x]
    assert f"keyfile {tmp_path}/auth/server.key" in settings
    listeners = [x for x in rendered.splitlines() if x.startswith("listener ")]
    assert all(x.endswith(" 127.0.0.1") for x in listeners)  # tests and demo: loopback only
    assert rendered.count("use_username_as_clientid true") == 2  # one per listener


def test_settings_read_the_password_file_and_refuse_plain_mqtt_off_this_machine(
    tmp_path: Path,
) -> None:
    pw = tmp_path / "service.password"
    pw.write_text("Xq3-" + "abcdefghijklmnopqrstuvwxyz0123" + "\n")
    make_tls(tmp_path)
    urgent = tmp_path / "urgent.password"
    urgent.write_text("Yr5-" + "abcdefghijklmnopqrstuvwxyz0123" + "\n")
    s = Settings(mqtt_username="jiayuan.service", mqtt_password_file=pw,
                 mqtt_urgent_username="jiayuan.urgent", mqtt_urgent_password_file=urgent,
                 mqtt_tls_ca=tmp_path / "ca.crt")  # fmt: skip
    assert s.mqtt_urgent_password.get_secret_value() == urgent.read_text().strip()
    assert s.mqtt_password.get_secret_value() == pw.read_text().strip()
    assert (s.mqtt_tls, s.mqtt_port) == (True, 8883)
    assert "Xq3" not in repr(s)
    with pytest.raises(ValueError, match="not this machine"):
        Settings(mqtt_host="10.0.0.5")
    with pytest.raises(ValueError, match="needs mqtt_password"):
        Settings(mqtt_username="jiayuan.service")
    with pytest.raises(ValueError, match="needs mqtt_urgent_username"):  # one account, one session
        Settings(mqtt_username="jiayuan.service", mqtt_password_file=pw)
    with pytest.raises(ValueError, match="must differ"):
        Settings(mqtt_username="jiayuan.service", mqtt_password_file=pw,
                 mqtt_urgent_username="jiayuan.service", mqtt_urgent_password_file=pw)  # fmt: skip
    with pytest.raises(ValueError, match="too short") as e:
        Settings(mqtt_username="jiayuan.service", mqtt_password="hunter2")
    assert "hunter2" not in str(e.value)


def _sim_args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"host": "127.0.0.1", "port": None, "tls_ca": None, "rate": None}
    base.update(credentials=None, username=None, password_file=None, clients=1)
    base.update(kw)
    return argparse.Namespace(**base)


def test_the_simulator_picks_gateway_accounts_for_its_fleet(tmp_path: Path) -> None:
    brokerauth.write_credentials(REG, tmp_path)
    make_tls(tmp_path)
    args = _sim_args(credentials=tmp_path / "credentials.json", tls_ca=tmp_path / "ca.crt")
    pub = _publisher(args, {"wr-1"})
    assert args.port == 8883
    assert pub._names == ["as gateway.C01 over TLS"]  # only the gateway its devices need
    with pytest.raises(ValueError, match="no gateway account for 1"):
        _publisher(_sim_args(credentials=tmp_path / "credentials.json"), {"wr-1", "wr-9"})
    with pytest.raises(ValueError, match="--password-file"):
        _publisher(_sim_args(username="test.x"), {"wr-1"})
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    with pytest.raises(ValueError, match="one connection"):
        _publisher(_sim_args(username="test.x", password_file=pw, clients=2), {"wr-1"})


def test_a_credentials_file_from_before_the_urgent_account_gets_it_at_the_next_run(
    tmp_path: Path,
) -> None:
    brokerauth.write_credentials(REG, tmp_path)
    body = json.loads((tmp_path / "credentials.json").read_text())
    del body["urgent"]  # as written by the version with one service account
    (tmp_path / "credentials.json").write_text(json.dumps(body))
    old = CredentialsFile.load(tmp_path / "credentials.json")
    assert old.urgent is None and old.password_of("jiayuan.urgent") is None
    report = brokerauth.write_credentials(REG, tmp_path)
    assert report.added == ["jiayuan.urgent"] and report.removed == []
    new = CredentialsFile.load(tmp_path / "credentials.json")
    assert new.service == old.service and new.devices == old.devices  # the others are kept
    assert new.urgent is not None and new.password_of("jiayuan.urgent") == new.urgent[1]
