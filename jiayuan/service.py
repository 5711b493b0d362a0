"""The service shell: wires ingest → rules → alerts, runs the scheduler, and serves the API."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from alerts.lifecycle import AlertStore
from ingest.journal import Journal
from ingest.listener import Inbound, Listener
from ingest.payloads import Reading
from ingest.pipeline import Pipeline
from jiayuan.context import AppContext
from jiayuan.settings import Settings
from registry import Registry
from registry.loader import load_registry
from rules.engine import RuleEngine
from rules.matches import Transition
from rules.model import builtin_pack, load_rules

log = logging.getLogger(__name__)


class Service:
    """Everything ``jiayuan run`` runs except the HTTP server: listener, pipeline, rule engine,
    alert store and periodic jobs. ``start()`` and ``stop()`` are idempotent-safe to call once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.registry = (
            load_registry(settings.registry, community=settings.community)
            if settings.registry is not None
            else Registry(settings.community)
        )
        self.rules = load_rules(settings.rules or [builtin_pack()])
        self.journal = Journal(data / "journal.db", synchronous=settings.journal_synchronous)
        self.journal.sync_registry(self.registry)
        self.alerts = AlertStore(data / "alerts.db")
        self.engine = RuleEngine(self.rules, self.registry)
        for a in self.alerts.open_alerts():  # rules that clear by themselves pick up their state
            self.engine.restore(a.rule_id, a.device_id, a.started_at)
        self._engine_lock = threading.Lock()
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        """Unbounded on purpose: the broker sends at most ``mqtt_receive_maximum`` unacknowledged
        QoS 1 messages, and blocking paho's loop thread would also block the acknowledgements."""
        self.listener = Listener(
            settings.mqtt_host,
            settings.mqtt_port,
            settings.mqtt_client_id,
            self.inbox,
            session_expiry_s=settings.mqtt_session_expiry_s,
            receive_maximum=settings.mqtt_receive_maximum,
        )
        self.pipeline = Pipeline(
            self.inbox,
            self.journal,
            self.listener.ack,
            self.on_readings,
            batch_max=settings.batch_max,
            batch_wait=settings.batch_wait_ms / 1000.0,
        )
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone="UTC",
        )
        self.scheduler.add_job(self.tick, "interval", seconds=1, id="rules-tick")
        self.scheduler.add_job(
            self.prune,
            "interval",
            hours=1,
            id="retention",
            next_run_time=datetime.now(UTC) + timedelta(seconds=30),
        )
        self.started_at = time.time()
        self.context = AppContext(
            settings=settings,
            journal=self.journal,
            alerts=self.alerts,
            registry=self.registry,
            health=self.health,
        )

    # ------------------------------------------------------------------ stages

    def on_readings(self, readings: Sequence[Reading]) -> None:
        """Committed, new readings: status into alert flags, everything through the rules."""
        transitions: list[Transition] = []
        with self._engine_lock:
            for r in readings:
                transitions.extend(self.engine.evaluate(r))
        for r in readings:
            if r.stream == "status" and r.event in ("online", "offline"):
                self.alerts.set_offline(r.device_id, r.event == "offline", r.ts)
        self._apply(transitions)

    def tick(self) -> None:
        with self._engine_lock:
            transitions = self.engine.tick(time.time())
        self._apply(transitions)

    def _apply(self, transitions: Sequence[Transition]) -> None:
        for t in transitions:
            try:
                self.alerts.apply(t)
            except Exception:
                log.exception("alert store refused %s for %s", t.rule_id, t.device_id)

    def prune(self) -> None:
        cutoff = time.time() - self.settings.retention_days * 86_400
        n = self.journal.prune(cutoff)
        if n:
            log.info(
                "retention: pruned %d readings older than %.0f days",
                n,
                self.settings.retention_days,
            )

    def health(self) -> dict[str, Any]:
        connected = self.listener.connected.is_set()
        return {
            "status": "ok" if connected else "degraded",
            "mqtt_connected": connected,
            "ingest_queue": self.inbox.qsize(),
            "messages_committed": self.pipeline.committed,
            "uptime_s": round(time.time() - self.started_at, 1),
            "rules": len(self.rules),
            "registered_devices": len(self.registry.devices),
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.pipeline.start()
        self.listener.start()
        self.scheduler.start()
        log.info(
            "jiayuan running: %d rules, %d registered devices, broker %s:%s, data in %s",
            len(self.rules),
            len(self.registry.devices),
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self.settings.data_dir,
        )

    def stop(self) -> None:
        """Finish the batch in hand (committed and acknowledged), then disconnect. Whatever is
        still unacknowledged stays with the broker's session and comes again on restart."""
        self.scheduler.shutdown(wait=False)
        self.pipeline.stop()
        self.listener.stop()
        self.journal.close()
