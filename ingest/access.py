"""How a client proves who it is to the broker, and the credentials file that says so.

Every MQTT client of the project — the service's listener, the simulator, the tests and the
benchmark — connects with a :class:`BrokerAccess`: an account (username and password) and, on
the TLS listener, the installation's certificate authority to verify the broker against.

``jiayuan broker credentials`` (jiayuan/broker/accounts.py) writes the accounts it generated into a
:class:`CredentialsFile` (JSON, mode 0600), which is read here: the simulator takes its gateway
accounts from it, provisioning tools the devices' passwords.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

FORMAT = 1
"""Version of the credentials file's layout."""


@dataclass(frozen=True)
class BrokerAccess:
    """An account and the TLS trust to connect with; all empty: anonymous plain MQTT."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    """Connect with TLS, verifying the broker's certificate and host name."""
    ca_file: Path | None = None
    """The CA to verify the broker against (with ``tls``); None: the system's CAs."""

    def apply(self, client: mqtt.Client) -> None:
        """Set the account and TLS on a paho client before it connects."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(
                ca_certs=str(self.ca_file) if self.ca_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            client.tls_insecure_set(False)  # check the certificate names the host

    def describe(self) -> str:
        """Who connects and how, for logs: never the password."""
        who = f"as {self.username}" if self.username else "anonymously"
        return f"{who} over {'TLS' if self.tls else 'plain TCP'}"


@dataclass(frozen=True)
class Gateway:
    """A gateway account: it publishes for exactly these devices."""

    password: str = field(repr=False)
    devices: tuple[str, ...]


@dataclass(frozen=True)
class CredentialsFile:
    """The accounts generated for one installation (``credentials.json``)."""

    community: str
    service: tuple[str, str]
    """(username, password) of the service's read-only account (its telemetry session)."""
    urgent: tuple[str, str] | None = field(default=None, repr=False)
    """(username, password) of the service's second read-only account, for its urgent session
    (events and status); None in files written before it existed (made at the next run)."""
    devices: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Device id (also its username) → password."""
    gateways: Mapping[str, Gateway] = field(default_factory=dict, repr=False)
    """Gateway username → its password and devices."""
    tests: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Test-only accounts (username → password) that may read and write any topic: made by
    the test harness and the benchmark, never by ``jiayuan broker credentials``."""

    bridges: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Bridge accounts (``bridge.<tree>`` → password): a vendor's bridge (Zigbee2MQTT) that
    writes its own topic tree, which a device profile reads (ingest/profiles.py)."""

    def password_of(self, username: str) -> str | None:
        if username == self.service[0]:
            return self.service[1]
        if self.urgent is not None and username == self.urgent[0]:
            return self.urgent[1]
        if username in self.devices:
            return self.devices[username]
        if username in self.gateways:
            return self.gateways[username].password
        if username in self.bridges:
            return self.bridges[username]
        return self.tests.get(username)

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "community": self.community,
            "service": {"username": self.service[0], "password": self.service[1]},
            **(
                {"urgent": {"username": self.urgent[0], "password": self.urgent[1]}}
                if self.urgent is not None
                else {}
            ),
            "gateways": {
                name: {"password": g.password, "devices": list(g.devices)}
                for name, g in sorted(self.gateways.items())
            },
            "devices": dict(sorted(self.devices.items())),
        }
        if self.bridges:
            body["bridges"] = dict(sorted(self.bridges.items()))
        if self.tests:
            body["tests"] = dict(sorted(self.tests.items()))
        return json.dumps(body, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "credentials file") -> CredentialsFile:
        try:
            body: Any = json.loads(text)
            if body.get("format") != FORMAT:
                raise ValueError(f"format {body.get('format')!r}, expected {FORMAT}")
            return cls(
                community=str(body["community"]),
                service=(str(body["service"]["username"]), str(body["service"]["password"])),
                urgent=(str(body["urgent"]["username"]), str(body["urgent"]["password"]))
                if "urgent" in body
                else None,
                devices={str(k): str(v) for k, v in body.get("devices", {}).items()},
                gateways={
                    str(k): Gateway(str(v["password"]), tuple(str(d) for d in v["devices"]))
                    for k, v in body.get("gateways", {}).items()
                },
                tests={str(k): str(v) for k, v in body.get("tests", {}).items()},
                bridges={str(k): str(v) for k, v in body.get("bridges", {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            # The message names what is wrong, never a value: the file holds secrets.
            raise ValueError(
                f"{source}: not a jiayuan credentials file ({type(e).__name__}: "
                f"{e if isinstance(e, ValueError) else 'missing or bad field'})"
            ) from None

    @classmethod
    def load(cls, path: Path) -> CredentialsFile:
        return cls.from_json(path.read_text(encoding="utf-8"), str(path))


def read_secret(path: Path) -> str:
    """A password kept in a file of its own (first line; a trailing newline is not part of it)."""
    text = path.read_text(encoding="utf-8").splitlines()
    if not text or not text[0]:
        raise ValueError(f"{path}: empty password file")
    return text[0]
