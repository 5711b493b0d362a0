"""Shared fixtures. Integration tests meet a real Mosquitto started from the project's
mosquitto.conf (accounts, ACL and TLS on) on free loopback ports, and a real VictoriaMetrics as
the time-series server; a missing broker or server is a failure, never a skip.

Every test fails when an error counter moved during it (an exception logged, a rule or a
subscriber that raised, a journal that could not write; devtools.launch.ERROR_COUNTERS) unless it
declares that one with ``@pytest.mark.expect_errors(...)``; the service run as a child process is
checked the same way by ``ServiceProcess.stop()``."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from psycopg import sql

from devtools.broker import Broker
from devtools.launch import error_samples, unexpected
from devtools.postgres import TEST_SETTINGS, Postgres
from devtools.victoria import Victoria
from district.migrate import migrate
from district.pg import connect as pg_connect
from jiayuan.broker.accounts import SERVICE_PASSWORD, URGENT_PASSWORD, URGENT_USER
from jiayuan.logmetrics import count_errors
from registry import Device, Registry
from tests.stores import Stores

BROKER_REGISTRY = Registry(
    "y",
    devices=[
        Device(device_id="wr-1", kind="wearable", compound="C01", building="B01"),
        Device(device_id="wr-2", kind="wearable", compound="C01", building="B02"),
        Device(device_id="smk-1", kind="smoke", compound="C01", building="B01"),
        Device(device_id="gt-1", kind="gate", compound="C02"),
    ],
)
"""The devices the ``broker`` fixture has accounts for (and gateways C01, C02)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "victoria(dedup=False): options of the victoria fixture's server (dedup=True: one sample"
        " per series and millisecond, as InfluxDB keeps one point per series and time)",
    )
    config.addinivalue_line(
        "markers",
        "expect_errors(*counters): error counters the test moves on purpose, each a name"
        " (jiayuan_rule_errors_total) or one with labels"
        " ('jiayuan_log_errors_total{logger=\"x\"}')",
    )
    count_errors()  # errors logged in this process count in jiayuan_log_errors_total
    # As in the service, where the notifier keeps apprise's lines as a failure's reason and
    # never logs them (they may name a recipient): here too whichever test comes first, so that
    # apprise's "Unparseable URL fake://..." on the tests' fake channels is not counted.
    logging.getLogger("apprise").propagate = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """schemathesis names the test of each operation ``test_x[GET /path]`` but gives them all
    the function's node id, and pytest-xdist tells tests apart by node id (in parallel, one ran
    and the others were lost): each gets its name as its id."""
    for item in items:
        if item.name.endswith("]") and not item.nodeid.endswith("]"):
            params = item.name.partition("[")[2][:-1]
            item._id = item._id.with_params(params)  # pytest 9's structured node id
    twice = [nodeid for nodeid, n in Counter(i.nodeid for i in items).items() if n > 1]
    if twice:  # xdist would run one of each and drop the others without a word
        raise pytest.UsageError(f"tests collected under one node id: {twice[:5]}")


def _errors() -> dict[str, float]:
    return error_samples((s.name, s.labels, s.value) for f in REGISTRY.collect() for s in f.samples)


@pytest.fixture(autouse=True)
def fail_on_counted_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test (at its teardown, after the other fixtures') when an error counter of this
    process moved and the test's ``expect_errors`` marker does not name it."""
    before = _errors()
    yield
    moved = {k: v - before.get(k, 0.0) for k, v in _errors().items() if v > before.get(k, 0.0)}
    expected = [a for m in request.node.iter_markers("expect_errors") for a in m.args]
    if bad := unexpected(moved, expected):
        counted = "\n".join(f"  {k} +{v:g}" for k, v in sorted(bad.items()))
        pytest.fail(f"errors counted that the test does not expect (expect_errors):\n{counted}")


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """A fresh Mosquitto for one test, anonymous clients refused: ``broker.host``,
    ``broker.port`` (plain, loopback), ``broker.tls_port``, ``broker.restart()``; accounts
    ``broker.service_access()`` and ``broker.urgent_access()`` (the service's two sessions),
    ``broker.device_access(id)`` for :data:`BROKER_REGISTRY`, and
    test-only ones, ``broker.test_access(name)`` (made on demand; tests.mqtt.Publisher's).

    ``ServiceProcess(data, broker)`` connects over TLS with the service's account; a child
    ``jiayuan run`` given only ``broker.port`` finds those accounts in the environment, set here.
    """
    b = Broker(tmp_path / "mosquitto", registry=BROKER_REGISTRY).start()
    service = b.service_access(tls=False)
    assert service.username is not None
    monkeypatch.setenv("JIAYUAN_MQTT_USERNAME", service.username)
    monkeypatch.setenv("JIAYUAN_MQTT_PASSWORD_FILE", str(b.auth_dir / SERVICE_PASSWORD))
    monkeypatch.setenv("JIAYUAN_MQTT_URGENT_USERNAME", URGENT_USER)
    monkeypatch.setenv("JIAYUAN_MQTT_URGENT_PASSWORD_FILE", str(b.auth_dir / URGENT_PASSWORD))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def victoria(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Victoria]:
    """A fresh VictoriaMetrics serving the InfluxDB v2 write API for one test: ``victoria.url``,
    ``stop()`` and ``start()`` again over the same data, ``samples()`` of what it stored."""
    marker = request.node.get_closest_marker("victoria")
    v = Victoria(tmp_path / "victoria", **(marker.kwargs if marker else {})).start()
    try:
        yield v
    finally:
        v.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One throwaway PostgreSQL for the whole session, started the first time a test asks for
    it (``initdb`` in a temporary directory; stopped and deleted at the end). Tests take a
    database of their own with ``pg_url``."""
    with Postgres(settings=TEST_SETTINGS) as pg:
        yield pg


@pytest.fixture
def pg_url(postgres: Postgres) -> Iterator[str]:
    """The URL of a fresh, empty database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    try:
        yield url
    finally:
        postgres.drop_database(name)


@pytest.fixture(scope="session")
def alerts_template(postgres: Postgres) -> str:
    """A database migrated once to the district's whole schema (alerts, auth and audit
    included): each test's store database on PostgreSQL is a copy (``CREATE DATABASE …
    TEMPLATE``, a file copy: much quicker than migrating every time)."""
    name = "t_alerts_template"
    url = postgres.create_database(name)
    with pg_connect(url) as db:
        migrate(db)
    return name


def store_at(request: pytest.FixtureRequest, tmp_path: Path, file: str) -> Iterator[Path | str]:
    """Where a test's store lives, by ``request.param``: ``tmp_path / file`` for "sqlite", or
    the URL of a fresh PostgreSQL database copied from ``alerts_template`` (dropped after)."""
    if request.param == "sqlite":
        yield tmp_path / file
        return
    postgres: Postgres = request.getfixturevalue("postgres")
    template: str = request.getfixturevalue("alerts_template")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with pg_connect(postgres.url(), autocommit=True) as db:
        # FILE_COPY (PostgreSQL 15+) copies a small template in half the time of WAL_LOG
        copy = " STRATEGY FILE_COPY" if db.info.server_version >= 150000 else ""
        db.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}" + copy).format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield postgres.url(name)
    finally:
        postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def alerts_at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """Where a test's alert store lives, once on each backend: a SQLite file's path, or the URL
    of a fresh PostgreSQL database already migrated (the store's contract tests take it)."""
    yield from store_at(request, tmp_path, "alerts.db")


@pytest.fixture(params=["sqlite", "postgresql"])
def auth_at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """Where a test's staff-access store and audit trail live (``AuthStore.open``), once on
    each backend: a SQLite file's path, or the URL of a fresh migrated PostgreSQL database."""
    yield from store_at(request, tmp_path, "auth.db")


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """A service test's journal and alert store, once on each backend: SQLite files in its data
    directory, or a fresh migrated PostgreSQL database (pass ``**stores.settings`` to
    ServiceProcess; read them back with ``stores.journal(data, sql)``)."""
    if request.param == "sqlite":
        yield Stores()
        return
    database = store_at(request, tmp_path, "unused")
    try:
        yield Stores(str(next(database)))
    finally:
        next(database, None)  # drops the database
