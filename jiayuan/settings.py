"""Settings: environment variables prefixed ``JIAYUAN_``, safe single-machine defaults."""

from __future__ import annotations

import grp
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from alerts.config import EscalationConfig, FlapConfig, GroupConfig, NotifyConfig
from ingest.profile_model import profile_files
from jiayuan.broker.accounts import INGEST_PROCESSES_MAX, SLOTS_MAX, URGENT_SLOTS_MAX

_COMMUNITY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def split_communities(text: str) -> dict[str, Path]:
    """``y=/srv/y,h=/srv/h`` (``JIAYUAN_COMMUNITIES``) as community id → registry path."""
    out: dict[str, Path] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        community, sep, path = item.partition("=")
        if not sep or not path.strip():
            raise ValueError(f"{item!r}: expected <community>=<registry path>")
        if community.strip() in out:
            raise ValueError(f"community {community.strip()!r} is listed twice")
        out[community.strip()] = Path(path.strip())
    return out


def url_problem(url: str) -> str | None:
    """What is wrong with a PostgreSQL URL, in words that never repeat its password; None when
    it is one: ``postgresql://`` or ``postgres://``, a host or a socket, a database name, as
    libpq reads it. Several hosts are one URL to libpq
    (``postgresql://user@primary:5432,standby:5432/db?target_session_attrs=read-write``: the
    one that takes writes, after a failover the promoted standby; docs/district.md)."""
    from urllib.parse import urlsplit

    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        scheme = urlsplit(url).scheme  # (only what may be a scheme: never the rest of the URL)
    except ValueError:  # an unbalanced [ of an IPv6 address
        return "not a URL (its host cannot be read)"
    if scheme not in ("postgresql", "postgres"):
        shown = scheme or "none"
        return f"expected postgresql://user:password@host:port/database (scheme {shown!r})"
    if _user_info(url) is None:
        return (
            "an @ in it other than the one before the host, or a /, ? or # before that @, is"
            " not read alike by every reader of URLs: write them percent-encoded in the user"
            " name, the password or a parameter (%40, %2F, %3F, %23)"
        )
    try:
        found = conninfo_to_dict(url)
    except psycopg.Error:
        return "not a URL (libpq cannot read it)"
    for port in str(found.get("port", "")).split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            return "not a URL (a port is not a number from 1 to 65535)"
    if not found.get("host") and not found.get("hostaddr"):
        return "no host (postgresql://user:password@HOST:port/database)"
    # libpq's hosts: the hostaddr list when given (a host name for each, if any), else the host
    # list; its ports: one for every host, or one for each, in order
    names, addrs, ports = (str(found.get(k) or "") for k in ("host", "hostaddr", "port"))
    hosts = _items(addrs or names)
    if addrs and names and _items(names) != hosts:
        return (
            f"{_count(names, 'host name')} for {_count(addrs, 'hostaddr value')}: give a"
            " name for each address, or none"
        )
    if ports and _items(ports) not in (1, hosts):
        return (
            f"{_count(ports, 'port')} for {_count(addrs or names, 'host')}: give one port for"
            " all the hosts, or one for each"
            " (postgresql://user:password@host1:port1,host2:port2/database)"
        )
    if not found.get("dbname"):
        return "no database name (postgresql://user:password@host:port/DATABASE)"
    return None


def _items(listed: str) -> int:
    """How many values the comma-separated list ``listed`` holds, as libpq counts them (an
    empty one counts: ``h1:5432,h2`` is two ports, the second the default)."""
    return listed.count(",") + 1


def _count(listed: str, what: str) -> str:
    """``"3 ports"`` for the comma-separated list ``listed``."""
    n = _items(listed)
    return f"{n} {what}{'s' * (n != 1)}"


def _user_info(url: str) -> tuple[str, str] | None:
    """(user info, the rest) of a URL after its ``scheme://`` (no user info: ``""``), or None
    when readers could split it differently: an ``@`` besides the one that ends the user info,
    or a ``/``, ``?`` or ``#`` before it. libpq ends the user info at the first ``@`` before
    any ``/`` (a ``?`` or ``#`` in it belongs to the password), Python's ``urlsplit`` at the
    last ``@`` before any ``/``, ``?`` or ``#``: ``u:ab@c/dSECRET@host/db`` is password ``ab``
    to one and shows ``dSECRET`` in a masked copy. Such a URL is refused (:func:`url_problem`)
    and shown masked whole (:func:`shown_url`)."""
    rest = url.partition("://")[2]
    at = rest.find("@")
    if at < 0:
        return "", rest
    if rest.count("@") > 1 or any(c in rest[:at] for c in "/?#"):
        return None
    return rest[:at], rest[at + 1 :]


def shown_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs): the one in its user info
    (``user:***@host``) and the value of every ``password`` query parameter
    (``?password=***&sslmode=require``), the other parameters as they are (a parameter's name
    may be percent-encoded, as libpq reads it; its value runs to the next ``&``, a ``#``
    included). A URL whose user info readers could split differently (:func:`_user_info`),
    which the settings refuse, is shown as ``scheme://***``."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return url
    split = _user_info(url)
    if split is None:
        return f"{scheme}://***"
    info, rest = split
    shown = f"{scheme}://"
    if info:
        user, colon, _ = info.partition(":")
        shown += f"{user}:***@" if colon else f"{info}@"
    return shown + _PARAMETER.sub(_shown_parameter, rest)


_PARAMETER = re.compile(r"(?<=[?&])([^=&]*)=([^&]*)")
"""A query parameter as libpq splits them. Looked for in all after the user info: a ``?`` or
``&`` elsewhere before the query (in a host or database name) can only hide more."""


def _shown_parameter(m: re.Match[str]) -> str:
    from urllib.parse import unquote

    return f"{m[1]}=***" if unquote(m[1]).lower() == "password" else m[0]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JIAYUAN_",
        extra="forbid",
        hide_input_in_errors=True,  # errors may hold secrets
        # the alerting parts' models: JIAYUAN_NOTIFY_BACKOFF_S is notify.backoff_s (split once)
        env_nested_delimiter="_",
        env_nested_max_split=1,
    )

    community: str = Field(default="y", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_client_id: str = Field(default="jiayuan-ingest", min_length=1, max_length=64)
    """Fixed, so the broker keeps the session (and queues messages) across restarts."""
    mqtt_session_expiry_s: int = Field(default=86_400, ge=60)
    mqtt_receive_maximum: int = Field(default=2_000, ge=10, le=65_535)
    # --- telemetry ingest processes (jiayuan/ingest_procs.py) -------------------------------
    ingest_processes: int = Field(default=1, ge=1, le=INGEST_PROCESSES_MAX)
    """OS processes that read and journal telemetry, each with a session of its own on a
    shared subscription (above 1: the broker accounts ``jiayuan.service-t2`` … from
    ``jiayuan broker credentials``); 1: one, on the service's own session (apart from the main
    process, or in it with ``ingest_separate`` off). The default by measurement: README,
    "Several ingest processes: make bench with K = 1 and K = 2"."""
    ingest_separate: bool = True
    """With ``ingest_processes`` 1: telemetry read and journaled by one process of its own
    (the service's own session and account, supervised as above), not by the main process,
    which keeps the urgent session, the rules worker, the rollups and the API; false: the main
    process reads it too. Apart, live readings come 5-13 % faster, a backlog drains 1.6-1.7
    times as fast and a fall in it is alerted 9-14 times sooner at the median, by measurement
    (README, "The bench's own load"). Above 1 the processes are apart anyway; on PostgreSQL
    the session slots are."""
    ingest_nice: int = Field(default=5, ge=0, le=19)
    """Added to the niceness of the telemetry ingest processes (and of PostgreSQL's session
    slots): when the CPU is short, the main process — the urgent session, the rules worker, the
    API — runs first, and telemetry waits in the broker. Measured (README, "Telemetry yields
    the CPU"): on PostgreSQL's four slots, telemetry 15-30 % faster at 20 % less CPU a message
    (larger batches) and a fall's median alert 3 ms sooner; on SQLite no change beyond the
    noise. 0: as the main process."""
    # --- broker access (README, "Security: broker access") ----------------------------------
    mqtt_username: str | None = Field(default=None, min_length=1)
    """The service's broker account, ``jiayuan.service`` from ``jiayuan broker credentials``.
    With it, the broker replaces the client id by the username: the session is the account's."""
    mqtt_password: SecretStr = SecretStr("")
    mqtt_password_file: Path | None = None
    """A file holding the password (first line), e.g. the generated ``service.password``;
    instead of ``mqtt_password``."""
    # --- the urgent session: events and status, queued apart from telemetry -----------------
    mqtt_urgent_client_id: str = Field(default="jiayuan-urgent", min_length=1, max_length=64)
    mqtt_urgent_username: str | None = Field(default=None, min_length=1)
    """The urgent session's own broker account, ``jiayuan.urgent``: the broker makes the
    username the client id, so the second session needs a second account."""
    mqtt_urgent_password: SecretStr = SecretStr("")
    mqtt_urgent_password_file: Path | None = None
    """A file holding its password, e.g. the generated ``urgent.password``."""
    mqtt_tls: bool = False
    """Connect over TLS, verifying the broker's certificate and name. On by itself when
    ``mqtt_tls_ca`` is set; the port then defaults to 8883."""
    mqtt_tls_ca: Path | None = None
    """The installation's CA certificate (``ca.crt`` from ``jiayuan broker tls``); none: the
    system's CAs."""
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    data_dir: Path = Path("./data")
    database_url: SecretStr | None = None
    """``postgresql://user:password@host:port/database``: keep the journal and the alert store
    (with the rules worker's cursor and state) in that PostgreSQL database instead of SQLite
    files in ``data_dir`` (docs/district.md). Unset: SQLite, as always. Secret: it may hold a
    password, so it is never logged (:meth:`database` gives it, :func:`shown_url` shows it)."""
    # --- several instances: session slots (jiayuan/slots.py, docs/district.md) -------------
    session_slots: int = Field(default=4, ge=1, le=SLOTS_MAX)
    """With ``database_url``: the telemetry sessions on the shared subscription, each held by
    one instance at a time by lease and run as an ingest process (accounts
    ``jiayuan.service-slot-<i>``). Fixed per installation, at least the number of instances."""
    urgent_slots: int = Field(default=2, ge=1, le=URGENT_SLOTS_MAX)
    """With ``database_url``: the urgent sessions (falls, SOS, alarms), likewise
    (``jiayuan.urgent-slot-<i>``), run in the main process."""
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        min_length=1,
        max_length=200,
    )
    """This instance's name in the leases (default host and process id)."""
    slot_lease_ttl_s: float = Field(default=10.0, ge=0.5, le=600)
    """A dead instance's slots are taken over this long (plus up to a third of it) after its
    last renewal."""
    # --- end of session slots ---------------------------------------------------------------
    # --- several instances: partition leases (rules/worker.py, district/leases.py) --------
    partition_lease_ttl_s: float = Field(default=10.0, ge=0.5, le=600.0)
    """With ``database_url``: a device partition's lease lapses this long after its holder's
    last renewal (renewed every third of it), so a killed instance's partitions are evaluated
    by another within about this long (the rules worker and the InfluxDB sink)."""
    # --- end of partition leases ----------------------------------------------------------
    # --- HTTP server limits (jiayuan/api/connections.py, jiayuan/api/bodylimit.py) ----------
    http_max_connections: int = Field(default=1000, ge=16, le=100_000)
    """Open HTTP connections at most. A new one past it closes the longest-idle connection
    (one between requests or still sending its headers); if every connection is busy with a
    request, the new one gets 503. The open-files limit is raised to fit when it can."""
    http_keepalive_s: int = Field(default=5, ge=1, le=300)
    """An idle keep-alive connection is closed after this long without a new request."""
    http_header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """A request's line and headers must arrive in full within this long of the connection
    opening or the previous response ending (slowloris)."""
    http_body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """A request body must arrive in full within this long of the route starting to read it."""
    http_max_body_bytes: int = Field(default=1_048_576, ge=4096, le=1 << 30)
    """Request bodies larger than this are refused (413) before they are read."""
    http_max_header_bytes: int = Field(default=16_384, ge=4096, le=1 << 20)
    """A request line and headers larger than this are refused (400)."""
    rules: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Rule files; empty means the built-in community pack. From the environment, paths
    separated by commas (``JIAYUAN_RULES=site.yaml,extra.yaml``)."""
    profiles: Annotated[list[Path] | None, NoDecode] = None
    """Device profile files (README, "Device profiles"); unset means the shipped ones
    (``ingest/vendors``), empty (``JIAYUAN_PROFILES=``) none. From the environment, paths
    separated by commas; ``shipped`` in the list stands for the shipped files."""
    registry: Path | None = None
    """A registry directory or file (YAML or CSV); none means an empty registry."""
    communities: Annotated[dict[str, Path], NoDecode] = Field(default_factory=dict)
    """Several communities in one installation (docs/communities.md): each community id with
    its own registry directory or file, ``JIAYUAN_COMMUNITIES=y=/srv/y,h=/srv/h``. Instead of
    ``registry``; ``community`` is then the first one unless set (it must be one of them).
    Unset: one community, ``community`` with ``registry``, as before."""
    # --- broker accounts that follow the registry (jiayuan/broker/live.py) -------------------
    broker_accounts_dir: Path | None = None
    """The directory Mosquitto reads its password and ACL files from (what ``jiayuan broker
    credentials --out`` writes): set, a device added or retired while running gets or loses its
    account there, and the broker is reloaded. Unset: accounts are left alone (health says so)."""
    broker_reload_command: str | None = Field(default=None, min_length=1)
    """How to make the broker read them again, e.g. ``systemctl reload mosquitto`` (run without a
    shell); or ``broker_pid_file``."""
    broker_pid_file: Path | None = None
    """Mosquitto's ``pid_file``: the service sends that process SIGHUP to reload the accounts."""
    broker_accounts_group: str | None = Field(default=None, min_length=1)
    """The group the broker's files are made readable by (``--group`` of ``jiayuan broker
    credentials``), e.g. ``mosquitto``."""
    # --- HTTP push from device platforms (jiayuan/api/push.py, README "Push endpoint") -------
    integrations: Path | None = None
    """The platforms that may push (``POST /api/push/{integration}``): a YAML file; none: the
    push endpoint answers 404 for every integration."""
    push_max_body_bytes: int = Field(default=262_144, ge=4096, le=1 << 24)
    """A pushed body larger than this is refused (413) before it is read."""
    push_wait_s: float = Field(default=10.0, gt=0, le=120)
    """How long a push waits for its commit before it is answered 503 (its messages are still
    journaled, once, when the journal takes them: the platform's retry is then a duplicate)."""
    journal_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    """SQLite fsync level: FULL survives power loss, NORMAL only a process crash."""
    batch_max: int = Field(default=1000, ge=1, le=10_000)
    batch_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    retention_days: float = Field(default=30.0, gt=0)
    journal_max_pages: int | None = Field(default=None, ge=100)
    """A cap on the journal's size in pages (SQLite ``max_page_count``, 4 KiB each): past it
    the journal is full, as on a full disk (acknowledgements held until there is room)."""
    # --- rules worker and health ------------------------------------------------------------
    max_unregistered_devices: int = Field(default=10_000, ge=100, le=10_000_000)
    """Devices not in the registry whose rule state is kept (least recently heard forgotten)."""
    health_ingest_lag_s: float = Field(default=30.0, gt=0)
    """/healthz says 503 when a received message has waited this long for its commit."""
    health_rules_lag_s: float = Field(default=30.0, gt=0)
    """/healthz says 503 when a committed reading waited this long for its rules."""
    health_clock_offset_s: float = Field(default=60.0, gt=0)
    """On PostgreSQL, /healthz says 503 when this instance's clock is further than this from
    the database's (district/clock.py: receive times, rule timers and escalation steps run on
    the instance's clock)."""
    rollup_1m_days: float = Field(default=90.0, gt=0)
    """How long per-minute rollups (min, max, mean, count per metric) are kept."""
    rollup_1h_days: float = Field(default=730.0, gt=0)
    """How long hourly rollups are kept."""
    influx_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    """InfluxDB (2.x, or 3.x through its v2 write API), e.g. ``http://127.0.0.1:8086``. Set, it
    turns the sink on: every journaled reading is written there too, from a persisted cursor."""
    influx_token: SecretStr = SecretStr("")
    influx_org: str = "jiayuan"
    influx_bucket: str = Field(default="jiayuan", min_length=1)
    influx_batch: int = Field(default=5000, ge=1, le=50_000)
    """Points per write request."""
    influx_timeout_s: float = Field(default=10.0, gt=0, le=300)
    influx_backoff_max_s: float = Field(default=30.0, ge=0.05, le=600)
    """Longest wait between two attempts while InfluxDB is unreachable."""
    influx_trouble_after_s: float = Field(default=300.0, gt=0)
    """Raise the ``timeseries_store_unreachable`` trouble alert after this long unreachable."""
    public_url: str = ""
    """How staff reach the API (links in notifications); default http://http_host:http_port."""
    # --- staff access (README, "Security: staff access") ----------------------------------
    demo: bool = False
    """Demo mode (``make demo``): weak secrets are accepted. Never in production."""
    admin_token: SecretStr = SecretStr("")
    """A bearer token with the admin role, for automation (at least 32 random characters);
    empty: none."""
    admin_token_file: Path | None = None
    """A file holding the admin token (first line), instead of ``admin_token``."""
    session_hours: float = Field(default=12.0, gt=0, le=168)
    """How long a console sign-in lasts (a shift); signing out ends it earlier."""
    token_max_days: int = Field(default=90, ge=1, le=366)
    """The longest a bearer token minted through ``POST /api/auth/tokens`` may live."""
    cookie_secure: bool | None = None
    """Mark the session cookie ``Secure``; default: when ``public_url`` or the request is https."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Other origins whose pages may call the API with a bearer token (never with the console's
    cookie); empty (the default): none. Comma-separated from the environment."""
    audit_retention_days: float = Field(default=400.0, ge=30)
    # --- alerting: routing, delivery, escalation, noise (alerts/dispatch.py) ---------------
    language: Literal["zh", "en"] = "zh"
    """Language of the notifications staff receive."""
    timezone: str = "Asia/Shanghai"
    """Local time of the duty roster (weekly shifts) and of times in notifications."""
    escalation: EscalationConfig = EscalationConfig()
    """``JIAYUAN_ESCALATION_FILE``: escalation chains (alerts/config.py)."""
    notify: NotifyConfig = NotifyConfig()
    """``JIAYUAN_NOTIFY_WORKERS``, ``_MAX_ATTEMPTS``, ``_BACKOFF_S``, ``_BACKOFF_MAX_S``."""
    flap: FlapConfig = FlapConfig()
    """``JIAYUAN_FLAP_THRESHOLD``, ``_WINDOW_S``."""
    group: GroupConfig = GroupConfig()
    """``JIAYUAN_GROUP_WAIT_S``, ``_WINDOW_S``, ``_THRESHOLD``."""
    log_level: str = "INFO"

    @field_validator("rules", mode="before")
    @classmethod
    def _split_paths(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("communities", mode="before")
    @classmethod
    def _split_communities(cls, v: object) -> object:
        return split_communities(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _communities(self) -> Settings:
        if not self.communities:
            return self
        bad = [c for c in self.communities if not _COMMUNITY_ID.fullmatch(c)]
        if bad:
            raise ValueError(f"JIAYUAN_COMMUNITIES: bad community id {bad[0]!r}")
        if self.registry is not None:
            raise ValueError(
                "set JIAYUAN_REGISTRY or JIAYUAN_COMMUNITIES, not both: with several"
                " communities each has its registry in JIAYUAN_COMMUNITIES"
            )
        if "community" not in self.model_fields_set:
            self.community = next(iter(self.communities))
        elif self.community not in self.communities:
            raise ValueError(
                f"JIAYUAN_COMMUNITY {self.community!r} is not one of JIAYUAN_COMMUNITIES"
                f" ({', '.join(self.communities)})"
            )
        return self

    def community_registries(self) -> dict[str, Path | None]:
        """Each community of the installation with its registry (one, unless ``communities``)."""
        if self.communities:
            return dict(self.communities)
        return {self.community: self.registry}

    @field_validator("profiles", mode="before")
    @classmethod
    def _split_profiles(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    def profile_files(self) -> list[Path]:
        """The profile files to load (see ``profiles``)."""
        return profile_files(self.profiles)

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, v: object) -> object:
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        if not isinstance(v, str):
            raise ValueError("JIAYUAN_DATABASE_URL: expected a postgresql:// URL")
        problem = url_problem(v.strip())
        if problem is not None:
            raise ValueError(f"JIAYUAN_DATABASE_URL: {problem}")
        return v.strip()

    def ingest_apart(self) -> bool:
        """Telemetry read by ingest processes of its own, not by the main process (on SQLite;
        on PostgreSQL the session slots' processes read it: jiayuan/slots.py)."""
        return self.database_url is None and (self.ingest_processes > 1 or self.ingest_separate)

    def database(self) -> str | None:
        """The PostgreSQL URL (password included) when ``database_url`` is set, else None."""
        return None if self.database_url is None else self.database_url.get_secret_value()

    @field_validator("influx_url", mode="before")
    @classmethod
    def _no_url(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @model_validator(mode="after")
    def _influx_complete(self) -> Settings:
        if self.influx_url is not None and not self.influx_org:
            raise ValueError("influx_org is required when influx_url is set")
        if self.ingest_processes > 1 and self.database_url is not None:
            raise ValueError(
                "JIAYUAN_INGEST_PROCESSES above 1 cannot be used with JIAYUAN_DATABASE_URL yet:"
                " the ingest processes write the SQLite journal file"
            )
        return self

    @model_validator(mode="after")
    def _mqtt_access(self) -> Settings:
        from jiayuan.auth.secrets import read_secret_file, weak_secret

        if self.mqtt_password_file is not None:
            if self.mqtt_password.get_secret_value():
                raise ValueError("give mqtt_password or mqtt_password_file, not both")
            self.mqtt_password = SecretStr(
                read_secret_file(self.mqtt_password_file, "mqtt_password_file")
            )
        password = self.mqtt_password.get_secret_value()
        if self.mqtt_username is None and password:
            raise ValueError("mqtt_password needs mqtt_username")
        if self.mqtt_username is not None and not password:
            raise ValueError("mqtt_username needs mqtt_password or mqtt_password_file")
        why = weak_secret(password) if password else None
        if why and not self.demo:
            raise ValueError(
                f"JIAYUAN_MQTT_PASSWORD is {why}: use the one `jiayuan broker credentials`"
                " generated (service.password)"
            )
        if self.mqtt_tls_ca is not None:
            if not self.mqtt_tls_ca.is_file():
                raise ValueError(f"mqtt_tls_ca: no such file {self.mqtt_tls_ca}")
            self.mqtt_tls = True
        if self.mqtt_tls and "mqtt_port" not in self.model_fields_set:
            self.mqtt_port = 8883
        if not self.mqtt_tls and self.mqtt_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(
                f"mqtt_host {self.mqtt_host} is not this machine: connect with TLS"
                " (mqtt_tls_ca), plain MQTT is for the loopback development listener only"
            )
        return self

    @model_validator(mode="after")
    def _mqtt_urgent_access(self) -> Settings:
        from jiayuan.auth.secrets import read_secret_file, weak_secret

        if self.mqtt_urgent_password_file is not None:
            if self.mqtt_urgent_password.get_secret_value():
                raise ValueError("give mqtt_urgent_password or mqtt_urgent_password_file, not both")
            self.mqtt_urgent_password = SecretStr(
                read_secret_file(self.mqtt_urgent_password_file, "mqtt_urgent_password_file")
            )
        password = self.mqtt_urgent_password.get_secret_value()
        if (self.mqtt_urgent_username is None) != (not password):
            raise ValueError("mqtt_urgent_username and its password go together")
        if self.mqtt_username is not None and self.mqtt_urgent_username is None:
            raise ValueError(
                "mqtt_username needs mqtt_urgent_username (jiayuan.urgent) and"
                " mqtt_urgent_password_file (urgent.password): run `jiayuan broker credentials`"
                " again to make that account; events have a session, and so an account, of"
                " their own"
            )
        if (
            self.mqtt_urgent_username is not None
            and self.mqtt_urgent_username == self.mqtt_username
        ):
            raise ValueError("mqtt_urgent_username must differ from mqtt_username")
        if self.mqtt_urgent_client_id == self.mqtt_client_id:
            raise ValueError("mqtt_urgent_client_id must differ from mqtt_client_id")
        why = weak_secret(password) if password else None
        if why and not self.demo:
            raise ValueError(
                f"JIAYUAN_MQTT_URGENT_PASSWORD is {why}: use the one `jiayuan broker"
                " credentials` generated (urgent.password)"
            )
        return self

    @model_validator(mode="after")
    def _broker_accounts(self) -> Settings:
        how = (self.broker_reload_command is not None) + (self.broker_pid_file is not None)
        if self.broker_accounts_dir is None and (how or self.broker_accounts_group):
            raise ValueError(
                "broker_reload_command, broker_pid_file and broker_accounts_group need"
                " broker_accounts_dir (the directory of Mosquitto's password and ACL files)"
            )
        if self.broker_accounts_dir is not None and how != 1:
            raise ValueError(
                "broker_accounts_dir needs one way to reload the broker: broker_reload_command"
                " (e.g. 'systemctl reload mosquitto') or broker_pid_file"
            )
        if self.broker_accounts_group is not None:
            try:
                grp.getgrnam(self.broker_accounts_group)
            except KeyError:
                raise ValueError(
                    f"broker_accounts_group: no group {self.broker_accounts_group!r} on this"
                    " machine (the broker's group, e.g. 'mosquitto')"
                ) from None
        return self

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: object) -> object:
        if isinstance(v, str):
            return [o.strip().rstrip("/") for o in v.split(",") if o.strip()]
        return v

    @model_validator(mode="after")
    def _staff_access(self) -> Settings:
        from jiayuan.auth.secrets import read_secret_file, weak_secret

        if self.admin_token_file is not None:
            if self.admin_token.get_secret_value():
                raise ValueError("give admin_token or admin_token_file, not both")
            self.admin_token = SecretStr(
                read_secret_file(self.admin_token_file, "admin_token_file")
            )
        token = self.admin_token.get_secret_value()
        why = weak_secret(token) if token else None
        if why and not self.demo:
            raise ValueError(
                f"JIAYUAN_ADMIN_TOKEN is {why}: use at least 32 random characters (python -c "
                "'import secrets; print(secrets.token_urlsafe(32))') or leave it unset; weak "
                "secrets are accepted only in demo mode (JIAYUAN_DEMO=true)"
            )
        for origin in self.cors_origins:
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ValueError(f"cors_origins: {origin!r} is not an origin (https://host:port)")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use e.g. Asia/Shanghai)") from None
        return v

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"
