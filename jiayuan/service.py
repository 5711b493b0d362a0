"""The service shell: wires ingest → rules → alerts, runs the scheduler, and serves the API."""

from __future__ import annotations

import logging
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from psycopg_pool import ConnectionPool

from alerts.config import Config as AlertingConfig
from alerts.dispatch import Dispatcher
from alerts.lifecycle import AlertStore
from alerts.metrics import NOTIFY_FAILING
from alerts.outbox import RECENT_ATTEMPTS, failing_for_everyone
from alerts.system import STORE_DEVICE, STORE_UNREACHABLE
from base.datadir import DataDir
from base.retry import Backoff
from district import clock
from district.leases import PARTITION, LeaseKeeper, ensure_partitions
from district.pg import CONNECT_OPTIONS, open_pool
from ingest.access import BrokerAccess
from ingest.inbox import Inbox
from ingest.journal import Journal
from ingest.journal_pg import PgJournal
from ingest.journal_store import JournalStore
from ingest.listener import Listener
from ingest.pipeline import Pipeline
from ingest.profiles import Profiles, load_profiles
from ingest.push import PushIntake, acknowledge_both
from ingest.push_native import push_profiles
from ingest.rollups import RollupWorker
from ingest.ways import WaysIn
from jiayuan.auth.audit import AuditLog
from jiayuan.auth.limiter import limiter_for
from jiayuan.auth.manage import note_registry
from jiayuan.auth.store import installed
from jiayuan.broker.live import BrokerAccounts
from jiayuan.context import AppContext
from jiayuan.ingest_procs import IngestProcesses, previous_count, record_count
from jiayuan.integrations import PushSetup, PushTokens, load_integrations
from jiayuan.registry_admin import RegistryAdmin
from jiayuan.registry_files import registry_files
from jiayuan.settings import Settings, shown_url
from registry import Registry
from registry.assignments import floors
from rules.baselines import compute, specs_of
from rules.engine import RuleEngine
from rules.model import builtin_pack, load_rules
from rules.sources import PgRows, RowSource, SqliteRows
from rules.worker import RulesWorker

if TYPE_CHECKING:
    from ingest.influx import InfluxSink, SinkSource
    from jiayuan.slots import SessionSlots

log = logging.getLogger(__name__)

PRUNE_RETRY = Backoff(first_s=30.0, max_s=480.0, jitter=0.2)
"""A retention run the database refused (away, locked) is tried again after 30 s, then 1, 2,
4 and 8 minutes, not at the next hour."""
PRUNE_AT_ONCE = 8
"""Attempts in one run while the database answers (a pool's stale connections, up to 8, each
fail once after an outage)."""
HEALTH_CONNECT: dict[str, Any] = {
    **CONNECT_OPTIONS,
    "connect_timeout": 3,  # for each host of the URL
    "tcp_user_timeout": 3_000,
}
"""The health probe's connection: answered within seconds, or a problem (a network that drops
after the connection was made fails its reads in 3 s, not at the kernel's minutes). No
``statement_timeout`` in the startup options: a pooler such as PgBouncer refuses options it
does not know, and the probe's statements wait for no lock."""
CLOCK_PROBE_S = 60
"""How often the database's clock is read for ``/metrics`` besides each ``/healthz``."""


class Service:
    """Everything ``jiayuan run`` runs except the HTTP server: listener, pipeline, rule engine,
    alert store and periodic jobs. ``start()`` and ``stop()`` are idempotent-safe to call once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        files, loaded = registry_files(settings.community_registries())  # communities
        self.rules = load_rules(settings.rules or [builtin_pack()])
        datadir = DataDir(data)
        self.profiles = load_profiles(settings.profile_files(), settings.community)
        """Device profiles: vendor topics read besides the native tree (ingest/profiles.py)."""
        self.database = settings.database()
        """The PostgreSQL URL holding the journal and the alert store (``database_url``), or
        None: SQLite files in the data directory, as always."""
        self.journal: JournalStore
        self.leases: LeaseKeeper | None = None
        """With PostgreSQL: the device partitions this instance's rules worker evaluates."""
        self.lease_pool: ConnectionPool | None = None
        self.sqlite_journal: Journal | None = None
        """The SQLite journal (its file is what the rollups and the sink follow), or None."""
        rows: RowSource
        if self.database is None:
            self.journal = self.sqlite_journal = Journal(
                datadir.journal,
                synchronous=settings.journal_synchronous,
                max_pages=settings.journal_max_pages,
            )
            self.alerts = AlertStore(datadir.alerts)
            rows = SqliteRows(datadir.journal)
        else:
            log.info("journal and alert store in PostgreSQL %s", shown_url(self.database))
            pg = PgJournal(self.database)
            self.journal = pg
            self.alerts = AlertStore.open(self.database)
            # the partitions this instance holds by lease (none until the keeper's first tick)
            rows = PgRows(self.database, (), fence=(settings.instance_id, {}))
            self.lease_pool = open_pool(self.database, name="jiayuan-leases", max_size=2)
            self.leases = LeaseKeeper(
                self.lease_pool,
                settings.instance_id,
                count=pg.partitions,
                kind=PARTITION,
                ttl_s=settings.partition_lease_ttl_s,
                before_release=lambda numbers: self.worker.release(
                    numbers, timeout=settings.partition_lease_ttl_s / 3
                ),
                on_change=lambda _changes: self.worker.wake(),
            )
        self.journal.sync_registry(loaded)
        self.auth = installed(settings)
        """Staff passwords, sessions, tokens and the audit trail (jiayuan/auth)."""
        note_registry(self.auth, loaded)
        pushing = push_profiles(self.profiles)
        integrations = (
            load_integrations(settings.integrations, pushing)
            if settings.integrations is not None
            else {}
        )
        self.registry_admin = RegistryAdmin(
            loaded,
            files,
            audit=AuditLog(self.auth),
            broker=broker_accounts(settings, self.profiles),
            ways={p.id for p in self.profiles if p.spec.mqtt is not None} | set(integrations),
        )
        """The one holder of the current registry, and the way to change it while running."""
        self.dispatcher = Dispatcher(self.alerts, loaded, self.rules, alerting(settings))
        """Route, notify, escalate, silence, group, correlate (alerts/dispatch.py)."""
        tz, baselines = ZoneInfo(settings.timezone), specs_of(self.rules)
        self.worker = RulesWorker(
            rows,
            self.alerts,
            lambda: RuleEngine(
                self.rules,
                self.registry,
                max_unregistered=settings.max_unregistered_devices,
                tz=tz,
            ),
            community=settings.community,
            gate=self.dispatcher.gate,
            baselines=(
                lambda now: compute(
                    self.baseline_source(), baselines, tz, now, floors=floors(self.registry)
                )
            )
            if baselines
            else None,
            leases=self.leases,
        )
        """Rules as a follower of the journal: evaluation, rule state and cursor committed with
        the alert changes (rules/worker.py)."""
        self.inbox = Inbox()
        """Urgent messages (events, status) first; unbounded on purpose: the broker sends each
        session at most its receive maximum of unacknowledged QoS 1 messages, and blocking
        paho's loop thread would also block the acknowledgements."""
        apart = settings.ingest_apart()  # telemetry read by ingest processes, not this one
        self.listener = Listener(
            settings.mqtt_host,
            settings.mqtt_port,
            settings.mqtt_client_id,
            self.inbox,
            session_expiry_s=settings.mqtt_session_expiry_s,
            receive_maximum=settings.mqtt_receive_maximum,
            access=broker_access(settings),
            urgent_client_id=settings.mqtt_urgent_client_id,
            urgent_access=broker_access(settings, urgent=True),
            urgent_filters=self.profiles.filters(urgent=True),
            telemetry_filters=self.profiles.filters(urgent=False),
            telemetry=not apart and settings.database() is None,
            urgent=settings.database() is None,  # session slots: see below
        )
        # --- telemetry ingest processes (jiayuan/ingest_procs.py) ---------------------------
        k, before = settings.ingest_processes, previous_count(data)
        retiring = range(max(k, 1) + 1, before + 1)  # a larger K before: drain their sessions
        self.ingest_procs = (
            IngestProcesses(
                settings,
                loaded,
                self.worker.nudge,  # (telemetry only: the urgent session stays here)
                k,
                apart=apart,
                retiring=retiring,
                retired=lambda: record_count(data, k),
            )
            if apart or retiring
            else None
        )
        """With ``ingest_processes`` above 1 or ``ingest_separate``: the child processes that
        read and journal telemetry (this process keeps the urgent session and the HTTP push);
        and those that drain the sessions of a larger ``ingest_processes`` run before."""
        if not retiring and (k > 1 or before != 1):
            record_count(data, k)
        # --- end of telemetry ingest processes -----------------------------------------------
        # --- several instances: session slots held by lease (jiayuan/slots.py) ---------------
        self.slots: SessionSlots | None = None
        if settings.database() is not None:
            from jiayuan.slots import SessionSlots

            if self.ingest_procs is None:  # the telemetry slots' sessions run as ingest processes
                self.ingest_procs = IngestProcesses(settings, loaded, self.worker.wake, 0)
            self.slots = SessionSlots(settings, self.listener, self.ingest_procs, self.profiles)
        # --- end of session slots ------------------------------------------------------------
        self.ways = WaysIn(loaded)
        self.profiles.place_by(self.ways.community_of)
        """Each registered device's one way in (its ``via``), swapped at each registry change."""
        self.push = PushIntake(self.inbox)
        """Messages pushed over HTTP (jiayuan/api/push.py), into the same inbox and pipeline."""
        self.pipeline = Pipeline(
            self.inbox,
            self.journal,
            acknowledge_both(self.listener.ack, self.push),
            self.worker.committed,  # a fall wakes it at once; telemetry within its gather_s
            batch_max=settings.batch_max,
            batch_wait=settings.batch_wait_ms / 1000.0,
            profiles=self.profiles,
            on_refused=self.push.refused,
            ways=self.ways,
        )
        self.rollups = (
            RollupWorker(self.sqlite_journal.path) if self.sqlite_journal is not None else None
        )
        """Per-minute and hourly aggregates beside the SQLite journal; None on PostgreSQL,
        where charts and baselines are computed from the raw readings."""
        if self.rollups is not None and isinstance(rows, SqliteRows):
            rows.tap = self.rollups.offer  # one read of the journal for both followers
        self.sink = self._influx_sink() if settings.influx_url else None
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone="UTC",
        )
        self.scheduler.add_job(self.dispatcher.poll_soon, "interval", seconds=1, id="escalation")
        self.scheduler.add_job(
            self.scheduled_prune,
            "interval",
            hours=1,
            id="retention",
            next_run_time=datetime.now(UTC) + timedelta(seconds=30),
        )
        self.prune_failures = 0
        """Retention runs failed in a row (the database away): the next is tried sooner."""
        if isinstance(self.journal, PgJournal):
            # the coming days' partitions made ahead (a reading's day is also made on the spot
            # when it has none; the writer's connection is shared under the journal's lock)
            self.scheduler.add_job(self.journal.make_ahead, "interval", hours=6, id="partitions")
        self.clock: clock.ClockOffset | None = None
        """The database's clock against this instance's, at the last health probe."""
        if self.database is not None:  # /metrics current even where nothing asks /healthz
            self.scheduler.add_job(
                self.database_problem, "interval", seconds=CLOCK_PROBE_S, id="clock"
            )
        self.started_at = time.time()
        self.context = AppContext(
            settings=settings,
            journal=self.journal,
            alerts=self.alerts,
            registry=loaded,
            health=self.health,
            alerting=self.dispatcher,
            auth=self.auth,
            registry_admin=self.registry_admin,
            ways=self.ways,
            push=PushSetup(
                integrations=integrations,
                tokens=PushTokens(data, self.auth),
                limiter=limiter_for(self.auth),  # on PostgreSQL: counted for every instance
                intake=self.push,
                writable=lambda: self.pipeline.store_health().ok,
                profiles=pushing,
            ),
        )
        # every holder of the registry, swapped in this order at each change (create_app adds
        # staff access's scopes)
        admin = self.registry_admin
        admin.subscribe("ways in", self.ways.set_registry)
        if self.ingest_procs is not None:
            admin.subscribe("ingest processes' ways in", self.ingest_procs.set_registry)
        admin.subscribe("journal devices", self.journal.sync_registry)
        admin.subscribe("routing and paging", self.dispatcher.set_registry)
        admin.subscribe("rules", self.worker.set_registry)
        admin.subscribe("API", lambda r: setattr(self.context, "registry", r))
        admin.subscribe("staff audit", lambda r: note_registry(self.auth, r))

    @property
    def registry(self) -> Registry:
        """The registry as it is now (:class:`RegistryAdmin` holds it)."""
        return self.registry_admin.current

    # ------------------------------------------------------------------ stages

    @property
    def engine(self) -> RuleEngine:
        """The rule engine (owned by the rules worker's thread: read, never drive)."""
        return self.worker.engine

    def baseline_source(self) -> Path | PgJournal:
        """What the personal baselines are computed from: the SQLite journal's file (its
        hourly rollups), or the PostgreSQL journal (its raw readings)."""
        if self.sqlite_journal is not None:
            return self.sqlite_journal.path
        assert isinstance(self.journal, PgJournal)
        return self.journal

    def _influx_sink(self) -> InfluxSink:
        # imported only when enabled: its metrics then exist only when they mean something
        from ingest.influx import InfluxSink
        from ingest.influx_writer import InfluxWriter

        s = self.settings
        assert s.influx_url is not None
        writer = InfluxWriter(
            s.influx_url,
            s.influx_token.get_secret_value(),
            s.influx_org,
            s.influx_bucket,
            s.influx_timeout_s,
        )
        trouble_open = any(
            STORE_UNREACHABLE.raised(a) for a in self.alerts.open_alerts(STORE_DEVICE)
        )
        name = f"influx:{s.influx_bucket}@{s.influx_url}"
        journal: Path | SinkSource
        if isinstance(self.journal, PgJournal):
            from ingest.influx_pg import PgSource

            assert self.database is not None
            journal = PgSource(
                self.database,
                partitions=range(self.journal.partitions),
                leases=self.leases,  # the partitions the rules evaluate here: docs/district.md
                name=name,
            )
        else:
            assert self.sqlite_journal is not None
            journal = self.sqlite_journal.path
        return InfluxSink(
            journal,
            writer,
            community=s.community,
            name=name,
            batch=s.influx_batch,
            backoff_max_s=s.influx_backoff_max_s,
            trouble_after_s=s.influx_trouble_after_s,
            on_trouble=self._store_trouble,
            trouble_open=trouble_open,
        )

    def _store_trouble(self, raised: bool, at: float) -> None:
        """The sink's trouble, as an alert for the operators (from the sink's thread)."""
        self.alerts.apply(
            STORE_UNREACHABLE.transition(
                STORE_DEVICE,
                firing=raised,
                at=at,
                summary=None if raised else "InfluxDB reachable again, backlog written",
                labels={"community": self.settings.community},
            )
        )

    def scheduled_prune(self) -> None:
        """The hourly retention run. One the database refused is one WARNING line saying what
        failed (no traceback: nothing is wrong with the service) and is tried again after
        :data:`PRUNE_RETRY`'s wait; ``/healthz`` is not its business (what an outage stops,
        it says already). While the database answers, a failure is a pooled connection its
        outage closed (spent by the failure): tried again at once, a few times."""
        for _ in range(PRUNE_AT_ONCE):
            try:
                self.prune()
            except (psycopg.OperationalError, sqlite3.OperationalError) as e:
                failed: Exception = e
                if self.database is not None and self.database_problem() is None:
                    continue
                break
            else:
                if self.prune_failures:
                    log.info(
                        "retention: pruned, the database back (failed attempts before: %d)",
                        self.prune_failures,
                    )
                    self.prune_failures = 0
                return
        self.prune_failures += 1
        wait = PRUNE_RETRY.delay(self.prune_failures)
        reason = _reason(failed) if isinstance(failed, psycopg.Error) else str(failed)
        log.warning(
            "retention: pruning failed, the database refused it (%s); trying again in %.0f s",
            reason,
            wait,
        )
        self.scheduler.modify_job(
            "retention", next_run_time=datetime.now(UTC) + timedelta(seconds=wait)
        )

    def prune(self) -> None:
        """What retention drops: old readings, rollups, rejects, sessions and audit entries."""
        now = time.time()
        cutoff = now - self.settings.retention_days * 86_400
        keep_after = self.worker.source.keep_after()
        if self.rollups is not None:
            keep_after = min(keep_after, self.rollups.position)
        if self.sink is not None:
            keep_after = min(keep_after, self.sink.keep_after())
        n = self.journal.prune(cutoff, chunk=2000, keep_after=keep_after)
        if n:
            log.info(
                "retention: pruned %d readings older than %.0f days",
                n,
                self.settings.retention_days,
            )
        n = 0
        if self.rollups is not None:
            n = self.rollups.prune(
                {
                    "1m": now - self.settings.rollup_1m_days * 86_400,
                    "1h": now - self.settings.rollup_1h_days * 86_400,
                }
            )
        if n:
            log.info("retention: pruned %d rollup buckets", n)
        if self.sink is not None:
            self.sink.prune_rejects(cutoff)
        self.auth.prune()
        AuditLog(self.auth).prune(now - self.settings.audit_retention_days * 86_400)

    def health(self) -> dict[str, Any]:
        """What /healthz answers: ``status`` is ``ok`` only while the service can ingest,
        evaluate and notify; otherwise ``problems`` says why, in words for the operator."""
        problems: list[str] = []
        now = time.time()
        connected = self.listener.connected.is_set()
        sessions = self.listener.sessions()
        journal = self.pipeline.store_health()
        lag = self.pipeline.oldest_unacked_age(now)
        committed, queued = self.pipeline.committed, self.inbox.qsize()
        problems += [_session_down(name) for name, up in sessions.items() if not up]
        procs = None if self.ingest_procs is None else self.ingest_procs.health(now)
        slots = None if self.slots is None else self.slots.health()
        if slots is not None:  # several instances: this one's slots and who holds the rest
            problems += slots.problems
        if procs is not None:  # telemetry ingest processes: theirs added in
            k = self.settings.ingest_processes
            problems += [
                f"ingest process {i} of {k} down (restarting)"
                if self.slots is None and i <= k
                else f"telemetry slot {i}'s ingest process down (restarting)"
                if self.slots is not None
                else f"ingest process {i} (draining the session of a larger ingest_processes)"
                " down (restarting)"
                for i in procs.down
            ]
            if not procs.supervised:
                problems.append("ingest processes unsupervised: one that stops is not restarted")
            share = "disconnected: its share of the readings not received"
            problems += [
                f"MQTT session of telemetry slot {i} {share}"
                if self.slots is not None
                else _session_down("telemetry")  # the one process apart reads them all
                if k == 1
                else f"MQTT telemetry session of ingest process {i} of {k} {share}"
                for i in procs.disconnected
            ]
            sessions["telemetry"] = (
                sessions.get("telemetry", True) and not procs.down and not procs.disconnected
            )
            connected = connected and sessions["telemetry"]
            journal = journal if not journal.ok else procs.store
            if procs.oldest_unacked_s is not None:
                lag = max(lag or 0.0, procs.oldest_unacked_s)
            committed, queued = committed + procs.committed, queued + procs.queued
        unreachable = self.database_problem()
        if unreachable is not None:
            problems.append(f"database unreachable: {unreachable}; nothing acknowledged")
        elif self.clock is not None:
            skewed = clock.problem(self.clock, self.settings.health_clock_offset_s)
            if skewed is not None:
                problems.append(skewed)
        if not journal.ok and unreachable is None:
            problems.append(f"journal refuses writes ({journal.reason}); nothing acknowledged")
        if lag is not None and lag > self.settings.health_ingest_lag_s:
            problems.append(f"ingest behind: oldest unacknowledged message {lag:.0f} s old")
        rules = self.worker.health(lag=unreachable is None)
        if rules.failing is not None and unreachable is None:
            problems.append(f"alert store refuses writes ({rules.failing}); rules held")
        if rules.oldest_s is not None and rules.oldest_s > self.settings.health_rules_lag_s:
            problems.append(
                f"rules behind: {rules.behind} readings waiting, oldest {rules.oldest_s:.0f} s"
            )
        if rules.unevaluated:
            problems.append(
                f"rules: partitions {list(rules.unevaluated)} held by this instance's leases"
                " but refused by its rules worker (they lapsed and were not taken again): their"
                " devices' readings and falls are not evaluated here"
            )
        if not self.dispatcher.alive:
            problems.append("alerting stopped: the dispatch thread is not running; nobody is paged")
        registry = self.registry_admin.health()
        if registry["broker_problem"]:
            problems.append(registry["broker_problem"])
        notify = None
        if unreachable is None:
            try:
                notify = failing_for_everyone(self._recent_attempts(), now)
            except psycopg.Error as e:  # went away since the probe above
                unreachable = _reason(e)
                problems.append(f"database unreachable: {unreachable}; nothing acknowledged")
        NOTIFY_FAILING.set(notify is not None)
        if notify is not None:
            problems.append(f"notifications failing for everyone: {notify}")
        return {
            "status": "ok" if not problems else "degraded",
            "problems": problems,
            "mqtt_connected": connected,
            "mqtt_sessions": sessions,
            "ingest_queue": queued,
            "messages_committed": committed,
            "ingest_processes": None if procs is None else procs.processes,
            "session_slots": None if slots is None else slots.report,
            "journal": {
                "writable": journal.ok,
                "reason": journal.reason,
                "since": journal.since,
                "oldest_unacked_s": None if lag is None else round(lag, 3),
            },
            "rules_worker": {
                "position": rules.position,
                "behind": rules.behind,
                "oldest_s": None if rules.oldest_s is None else round(rules.oldest_s, 3),
                "failing": rules.failing,
                "evaluated": self.worker.evaluated,
            },
            "database": None
            if self.database is None
            else {
                "reachable": unreachable is None,
                "problem": unreachable,
                "clock_offset_s": None if self.clock is None else round(self.clock.offset_s, 3),
            },
            "rollups": self.rollups is not None,
            **(
                {
                    "instance": self.leases.instance_id,
                    "partitions_held": sorted(self.leases.owned()),
                    "partitions_evaluated": self.worker.partitions,
                }
                if self.leases is not None
                else {}
            ),
            **(
                {"journal_partitions": self.journal.counters}
                if isinstance(self.journal, PgJournal)
                else {}
            ),
            "uptime_s": round(now - self.started_at, 1),
            "rules": len(self.rules),
            "registered_devices": len(self.registry.devices),
            "registry": registry,
            "influx": {"enabled": False}
            if self.sink is None
            else {"enabled": True, **self.sink.health()},
        }

    def _recent_attempts(self) -> list[Any]:
        """The outbox's recent attempts; on PostgreSQL asked twice when a pooled connection
        turns out dead (the database restarted: the pool drops it and connects anew)."""
        try:
            return self.alerts.query(RECENT_ATTEMPTS)
        except psycopg.OperationalError:
            if self.database is None:
                raise
            return self.alerts.query(RECENT_ATTEMPTS)

    def database_problem(self) -> str | None:
        """Why the PostgreSQL database cannot be reached now (a fresh connection and a few
        reads of its clock, at most a few seconds), or None: reachable, or SQLite files. The
        clock's offset from this instance's is kept (:attr:`clock`) and shown on /metrics."""
        if self.database is None:
            return None
        try:
            with psycopg.connect(
                self.database,
                autocommit=True,
                application_name="jiayuan-health",
                **HEALTH_CONNECT,
            ) as db:
                self.clock = clock.measure(db)
        except psycopg.Error as e:
            self.clock = None
            clock.unknown()
            return _reason(e)
        return None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.registry_admin.reconcile()  # the broker's accounts as the registry says, at once
        self.dispatcher.start()
        if self.leases is not None:
            with self.lease_pool.connection() as db:  # type: ignore[union-attr]
                ensure_partitions(db, self.leases.count)
            self.leases.start()
        self.worker.start()
        self.pipeline.start()
        if self.rollups is not None:
            self.rollups.start()
        if self.sink is not None:
            self.sink.start()
        if self.ingest_procs is not None:
            self.ingest_procs.start()
            self._aggregate_gauges()
        self.listener.start()
        if self.slots is not None:
            self.slots.start()
        self.scheduler.start()
        log.info(
            "jiayuan running: %d rules, %d registered devices, broker %s:%s, data in %s",
            len(self.rules),
            len(self.registry.devices),
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self.settings.data_dir,
        )

    def _aggregate_gauges(self) -> None:
        """With ingest processes: the gauges operators alert on say what ``/healthz`` says,
        over every process (read at each scrape), not this process's alone."""
        from ingest.metrics import CONNECTED, JOURNAL_WRITABLE, OLDEST_UNACKED

        procs = self.ingest_procs
        assert procs is not None

        def oldest() -> float:
            now = time.time()
            mine = self.pipeline.oldest_unacked_age(now) or 0.0
            return max(mine, procs.health(now).oldest_unacked_s or 0.0)

        def writable() -> float:
            return float(self.pipeline.store_health().ok and procs.health(time.time()).store.ok)

        def connected() -> float:
            h = procs.health(time.time())
            return float(self.listener.connected.is_set() and not h.down and not h.disconnected)

        OLDEST_UNACKED.set_function(oldest)
        JOURNAL_WRITABLE.set_function(writable)
        CONNECTED.set_function(connected)

    def stop(self) -> None:
        """Finish the batch in hand (committed and acknowledged), then disconnect. Whatever is
        still unacknowledged stays with the broker's session and comes again on restart."""
        self.scheduler.shutdown(wait=False)
        if self.slots is not None:  # its sessions stopped cleanly, then its leases given back
            self.slots.stop()
        if self.ingest_procs is not None:
            self.ingest_procs.stop()  # each finishes, acknowledges and disconnects its batch
        self.pipeline.stop()
        self.listener.stop()
        self.worker.stop()
        if self.leases is not None:  # after the worker's last commit: given back at once
            try:
                self.leases.stop()
            except psycopg.Error as e:
                log.warning("partition leases not given back (they lapse): %s", e)
        if self.lease_pool is not None:
            self.lease_pool.close()
        if self.sink is not None:
            self.sink.stop()
        if self.rollups is not None:
            self.rollups.stop()
        self.dispatcher.stop()
        self.journal.close()
        if self.database is not None:
            self.alerts.close()
        self.auth.close()


def _reason(e: psycopg.Error) -> str:
    """What the driver says about a failed connection or query, without where the server is
    (/healthz is public): ``Connection refused``, ``terminating connection due to …``."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return line.rsplit("failed: ", 1)[-1][:200]


def alerting(settings: Settings) -> AlertingConfig:
    """The alerting stages' settings: the parts' own models, as read, and what messages need."""
    return AlertingConfig(
        language=settings.language,
        base_url=settings.base_url,
        timezone=settings.timezone,
        community=settings.community,
        notify=settings.notify,
        flap=settings.flap,
        group=settings.group,
        escalation=settings.escalation,
    )


def broker_accounts(settings: Settings, profiles: Profiles) -> BrokerAccounts | None:
    """The broker's account files the service keeps in step with the registry, if configured."""
    if settings.broker_accounts_dir is None:
        return None
    return BrokerAccounts(
        settings.broker_accounts_dir,
        reload_command=settings.broker_reload_command,
        pid_file=settings.broker_pid_file,
        group=settings.broker_accounts_group,
        profiles=profiles,
    )


def broker_access(settings: Settings, *, urgent: bool = False) -> BrokerAccess:
    """The service's account (its urgent session's with ``urgent``) and TLS trust."""
    username = settings.mqtt_urgent_username if urgent else settings.mqtt_username
    secret = settings.mqtt_urgent_password if urgent else settings.mqtt_password
    password = secret.get_secret_value()
    return BrokerAccess(
        username,
        password or None,
        tls=settings.mqtt_tls,
        ca_file=settings.mqtt_tls_ca,
    )


def _session_down(name: str) -> str:
    """What /healthz says of the service's MQTT session ``name`` (``telemetry``, ``urgent``)
    while it is disconnected."""
    what = "falls, SOS and alarms" if name.startswith("urgent") else "readings"
    return f"MQTT {name} session disconnected: no {what} received"
