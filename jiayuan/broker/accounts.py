"""Broker accounts from the registry: Mosquitto's password and ACL files, and the secrets.

``jiayuan broker credentials --registry DIR --out DIR`` writes into ``DIR``:

- ``passwords``: Mosquitto's ``password_file`` (PBKDF2-SHA512 hashes in Mosquitto 2.0's ``$7$``
  format, the one ``mosquitto_passwd`` writes);
- ``acl``: Mosquitto's ``acl_file``, one ``user`` block per account;
- ``credentials.json`` (mode 0600): every generated password, for provisioning devices and
  gateways (read by :class:`ingest.access.CredentialsFile`);
- ``service.password`` (mode 0600): the service's password alone, for
  ``JIAYUAN_MQTT_PASSWORD_FILE``;
- ``urgent.password`` (mode 0600): the password of the service's urgent session's account,
  for ``JIAYUAN_MQTT_URGENT_PASSWORD_FILE``;
- ``changes.log``: one JSON line per run — who, when, accounts added, removed and rotated.

The identity model (README, "Security: broker access"):

- **device** ``<device_id>``: writes ``community/<c>/<kind>/<device_id>/+`` — its telemetry,
  events and retained status (and so its last will), under its own kind; reads nothing.
  Only native devices (no ``via`` in the registry) have one: a device that reports through a
  profile or a push integration has no account of its own, and no gateway writes its topics.
- **gateway** ``gateway.<compound>``: writes exactly the topics of its compound's native devices,
  for fleets that reach the broker through a gateway (a LoRa or NB-IoT concentrator, a vendor
  platform, the simulator); reads nothing.
- **service** ``jiayuan.service``: reads ``community/+/+/+/+``, writes nothing: the session
  that takes telemetry.
- **telemetry processes** ``jiayuan.service-t2`` … ``-t8``: the service's account again, for
  its further telemetry ingest processes (``JIAYUAN_INGEST_PROCESSES``, jiayuan/ingest_procs.py):
  each process holds a session of its own on a shared subscription, and the broker makes the
  username the client id, so each needs a username; same password and reads as
  ``jiayuan.service`` (they are the same principal), writes nothing.
- **session slots** ``jiayuan.service-slot-0`` … ``-slot-15`` and ``jiayuan.urgent-slot-0`` …
  ``-slot-7``: with several instances on PostgreSQL (``JIAYUAN_DATABASE_URL``,
  jiayuan/slots.py) each instance keeps the sessions of the slots it holds by lease; a slot's
  session must be the same whichever instance holds it (a survivor resumes a dead instance's),
  hence an account per slot. Same password and reads as ``jiayuan.service`` (telemetry slots)
  or ``jiayuan.urgent`` (urgent slots): the same principals, writing nothing.
- **urgent** ``jiayuan.urgent``: reads ``community/+/+/+/event`` and ``community/+/+/+/status``,
  writes nothing: the service's second session, so that falls, SOS and alarms are queued apart
  from telemetry and never wait behind a backlog of it. A second account, because the broker
  makes the username the client id (``use_username_as_clientid``): one account, one session.

- **bridge** ``bridge.<tree>``: a vendor's bridge (``bridge.zigbee2mqtt``) reads and writes
  its own topic tree (``zigbee2mqtt/#``, which Zigbee2MQTT also subscribes to) and nothing
  else; one per tree of the device profiles in force (ingest/profiles.py, the shipped ones by
  default). The service's accounts read the profiles' topics (its urgent one, those of urgent
  profiles).

Account names other than devices' contain a ``.``, which no device id can, so no account can be
mistaken for a device. Running the command again keeps the passwords of accounts still in the
registry, issues new ones to new accounts (and to ``--rotate`` ones), and drops removed devices
and compounds: after the broker reloads (SIGHUP) a removed device can no longer connect.
"""

from __future__ import annotations

import base64
import getpass
import grp
import hashlib
import json
import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from base.files import write_file
from ingest.access import CredentialsFile, Gateway
from ingest.profiles import Profiles, shipped_profiles
from ingest.topics import SUBSCRIPTION, URGENT_SUBSCRIPTIONS, topic_for
from registry import Registry

SERVICE_USER = "jiayuan.service"
INGEST_PROCESSES_MAX = 8
"""Telemetry ingest processes at most (``JIAYUAN_INGEST_PROCESSES``): the accounts made for
them (:func:`telemetry_user`)."""
URGENT_USER = "jiayuan.urgent"
SLOTS_MAX = 16
"""Telemetry session slots at most (``JIAYUAN_SESSION_SLOTS``): the accounts made for them."""
URGENT_SLOTS_MAX = 8
"""Urgent session slots at most (``JIAYUAN_URGENT_SLOTS``)."""
URGENT_PASSWORD = "urgent.password"
GATEWAY_PREFIX = "gateway."
TEST_PREFIX = "test."
PASSWORDS, ACL, CREDENTIALS, SERVICE_PASSWORD = (
    "passwords",
    "acl",
    "credentials.json",
    "service.password",
)
CHANGES = "changes.log"

HASH_ITERATIONS = 101
"""Mosquitto's own default for ``$7$``. The passwords are 192-bit random strings, not chosen by
people, so no iteration count makes guessing them from the hashes feasible or not; the broker,
single-threaded, pays the count at every CONNECT, and 4,383 devices reconnect at once after a
restart."""


def telemetry_user(username: str, index: int) -> str:
    """The account (and so client id) of telemetry ingest process ``index`` (1-based) of the
    service whose account is ``username``: the first is the service's own, so a single
    process (and the first of several) resumes the session it always had."""
    return username if index == 1 else f"{username}-t{index}"


def telemetry_users(username: str = SERVICE_USER) -> list[str]:
    """The further telemetry processes' accounts (processes 2 … :data:`INGEST_PROCESSES_MAX`)."""
    return [telemetry_user(username, i) for i in range(2, INGEST_PROCESSES_MAX + 1)]


def slot_user(username: str, slot: int) -> str:
    """The account (and so client id) of session slot ``slot`` (0-based) of the session whose
    account (or client id) is ``username``: ``jiayuan.service-slot-0``, ``jiayuan.urgent-slot-1``
    (jiayuan/slots.py)."""
    return f"{username}-slot-{slot}"


def slot_users(username: str = SERVICE_USER, count: int = SLOTS_MAX) -> list[str]:
    return [slot_user(username, i) for i in range(count)]


def new_password() -> str:
    return secrets.token_urlsafe(24)  # 192 bits


def hash_password(
    password: str, salt: bytes | None = None, iterations: int = HASH_ITERATIONS
) -> str:
    """A ``password_file`` hash: ``$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>``."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def gateway_name(compound: str) -> str:
    return f"{GATEWAY_PREFIX}{compound}"


def device_topic(community: str, kind: str, device_id: str) -> str:
    """What a device's account may write: its own streams, and only under its own kind."""
    return topic_for(community, kind, device_id, "+")


@dataclass
class Report:
    """What one run changed; names only, never a password."""

    out: Path
    devices: int = 0
    gateways: int = 0
    bridges: int = 0
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def names(xs: list[str]) -> str:
            shown = ", ".join(xs[:5]) + (f" and {len(xs) - 5} more" if len(xs) > 5 else "")
            return f"{len(xs)}" + (f" ({shown})" if xs else "")

        return (
            f"broker accounts in {self.out}: {self.devices:,} devices, {self.gateways} gateways,"
            f" 2 service accounts, {self.bridges} bridges; added {names(self.added)},"
            f" removed {names(self.removed)}, rotated {names(self.rotated)}"
        )


def plan(
    registry: Registry,
    previous: CredentialsFile | None = None,
    *,
    gateways: bool = True,
    rotate: Iterable[str] = (),
    tests: Iterable[str] = (),
    bridges: Iterable[str] = (),
) -> CredentialsFile:
    """The accounts for ``registry`` and the ``bridges`` named: passwords kept from ``previous``
    where the account is still there and not in ``rotate``, new ones otherwise. ``tests`` names
    test-only accounts (``test.<name>``) that may read and write anything: for the test
    harness, never for an installation."""
    rotating = set(rotate)

    def password(username: str) -> str:
        old = previous.password_of(username) if previous is not None else None
        return old if old is not None and username not in rotating else new_password()

    native = sorted(d.device_id for d in registry.devices.values() if d.via is None)
    by_compound: dict[str, list[str]] = {}
    for dev in native:
        by_compound.setdefault(registry.devices[dev].compound, []).append(dev)
    return CredentialsFile(
        community=registry.community,
        service=(SERVICE_USER, password(SERVICE_USER)),
        urgent=(URGENT_USER, password(URGENT_USER)),
        devices={dev: password(dev) for dev in native},
        gateways={
            gateway_name(c): Gateway(password(gateway_name(c)), tuple(devs))
            for c, devs in sorted(by_compound.items())
        }
        if gateways
        else {},
        tests={f"{TEST_PREFIX}{n}": password(f"{TEST_PREFIX}{n}") for n in sorted(set(tests))},
        bridges={b: password(b) for b in sorted(set(bridges))},
    )


def password_file(creds: CredentialsFile) -> str:
    lines = [f"{SERVICE_USER}:{hash_password(creds.service[1])}"]
    lines += [f"{user}:{hash_password(creds.service[1])}" for user in telemetry_users()]
    lines += [f"{user}:{hash_password(creds.service[1])}" for user in slot_users()]
    if creds.urgent is not None:
        lines.append(f"{creds.urgent[0]}:{hash_password(creds.urgent[1])}")
        lines += [
            f"{user}:{hash_password(creds.urgent[1])}"
            for user in slot_users(creds.urgent[0], URGENT_SLOTS_MAX)
        ]
    lines += [f"{user}:{hash_password(pw)}" for user, pw in creds.devices.items()]
    lines += [f"{user}:{hash_password(g.password)}" for user, g in creds.gateways.items()]
    lines += [f"{user}:{hash_password(pw)}" for user, pw in creds.tests.items()]
    lines += [f"{user}:{hash_password(pw)}" for user, pw in creds.bridges.items()]
    return "\n".join(lines) + "\n"


def acl_file(registry: Registry, creds: CredentialsFile, profiles: Profiles | None = None) -> str:
    """One ``user`` block per account and no ``pattern`` lines: a pattern applies to every
    account, and cannot pin a device to its own kind and community. ``profiles``: the device
    profiles whose vendor topics the service reads and bridges write."""
    c = registry.community
    profiles = profiles if profiles is not None else Profiles()
    trees = profiles.bridges()
    kind = {d.device_id: d.kind for d in registry.devices.values()}

    def c_of(device_id: str) -> str:  # communities: each device under its own community
        return registry.community_of(device_id) or c

    out = [
        "# Generated by `jiayuan broker credentials` from the registry; do not edit, run it again.",
        "# No lines before the first `user`: anonymous clients get nothing (and are refused).",
        "",
    ]
    for user in [SERVICE_USER, *telemetry_users(), *slot_users()]:
        out += [
            "# The service reads every reading topic and writes nothing."
            if user == SERVICE_USER
            else "# ... and so do its further telemetry ingest processes and session slots.",
            f"user {user}",
            f"topic read {SUBSCRIPTION}",
            *(f"topic read {f}" for f in profiles.filters(urgent=False)),
            "",
        ]
    if creds.urgent is not None:
        for user in [creds.urgent[0], *slot_users(creds.urgent[0], URGENT_SLOTS_MAX)]:
            out += [
                "# The service's urgent session (events, status) reads those and writes nothing."
                if user == creds.urgent[0]
                else "# ... and so does each urgent session slot.",
                f"user {user}",
                *(f"topic read {f}" for f in URGENT_SUBSCRIPTIONS),
                *(f"topic read {f}" for f in profiles.filters(urgent=True)),
                "",
            ]
    if creds.gateways:
        out.append("# Gateways: exactly the topics of their compound's devices.")
        for user, g in creds.gateways.items():
            out.append(f"user {user}")
            out += [
                f"topic write {device_topic(c_of(d), kind[d], d)}" for d in g.devices if d in kind
            ]
        out.append("")
    if creds.bridges:
        out.append("# Bridges (device profiles): their vendor's topic tree, nothing else.")
        for user in creds.bridges:
            out += [f"user {user}", *(f"topic readwrite {t}" for t in trees.get(user, ()))]
        out.append("")
    if creds.tests:
        out.append("# TEST-ONLY accounts (test harness, benchmark): never in an installation.")
        for user in creds.tests:
            out += [f"user {user}", "topic readwrite #"]
        out.append("")
    out.append("# Devices: their own streams (telemetry, event, retained status and last will).")
    for dev in creds.devices:
        out += [f"user {dev}", f"topic write {device_topic(c_of(dev), kind[dev], dev)}"]
    return "\n".join(out) + "\n"


def write_credentials(
    registry: Registry,
    out: Path,
    *,
    gateways: bool = True,
    rotate: Sequence[str] = (),
    tests: Iterable[str] = (),
    group: str | None = None,
    profiles: Profiles | None = None,
) -> Report:
    """Write the password, ACL and secrets files for ``registry`` into ``out`` (each replaced
    atomically, so a broker reloading meanwhile reads the old file or the new one, never half).
    ``group``: make the broker's files (passwords, acl) readable by that group, e.g. the one
    Mosquitto runs as. ``profiles``: the device profiles in force (default: the shipped ones),
    whose topics the service reads and whose bridges get accounts."""
    if profiles is None:
        profiles = shipped_profiles(registry.community)
    out.mkdir(parents=True, exist_ok=True)
    secrets_path = out / CREDENTIALS
    previous = CredentialsFile.load(secrets_path) if secrets_path.exists() else None
    if previous is not None and previous.community != registry.community:
        raise ValueError(
            f"{secrets_path} is for community {previous.community!r}, the registry for"
            f" {registry.community!r}: use another --out"
        )
    unknown = [u for u in rotate if previous is None or previous.password_of(u) is None]
    if unknown:
        raise ValueError(f"--rotate: no such account {', '.join(unknown)}")
    creds = plan(
        registry,
        previous,
        gateways=gateways,
        rotate=rotate,
        tests=tests,
        bridges=profiles.bridges(),
    )
    old, new = _accounts(previous), _accounts(creds)
    report = Report(
        out,
        devices=len(creds.devices),
        gateways=len(creds.gateways),
        bridges=len(creds.bridges),
        added=sorted(new - old),
        removed=sorted(old - new),
        rotated=sorted(set(rotate) & new),
    )
    gid = grp.getgrnam(group).gr_gid if group else None
    write_file(out / PASSWORDS, password_file(creds), 0o640 if gid is not None else 0o600, gid)
    write_file(
        out / ACL, acl_file(registry, creds, profiles), 0o640 if gid is not None else 0o600, gid
    )
    write_file(secrets_path, creds.to_json(), 0o600)
    write_file(out / SERVICE_PASSWORD, creds.service[1] + "\n", 0o600)
    if creds.urgent is not None:
        write_file(out / URGENT_PASSWORD, creds.urgent[1] + "\n", 0o600)
    if report.added or report.removed or report.rotated:
        _log_change(out / CHANGES, report)
    return report


def _accounts(creds: CredentialsFile | None) -> set[str]:
    if creds is None:
        return set()
    urgent = [creds.urgent[0]] if creds.urgent is not None else []
    return {
        creds.service[0],
        *urgent,
        *creds.devices,
        *creds.gateways,
        *creds.tests,
        *creds.bridges,
    }


def _log_change(path: Path, report: Report) -> None:
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": f"{getpass.getuser()}@{socket.gethostname()}",
        "added": report.added,
        "removed": report.removed,
        "rotated": report.rotated,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
