"""Several instances share the MQTT sessions: session slots held by lease (docs/district.md,
"The design that strands nothing: session slots, leased").

With ``JIAYUAN_DATABASE_URL`` every instance of an installation reads the broker through K
telemetry slots (``JIAYUAN_SESSION_SLOTS``) and U urgent slots (``JIAYUAN_URGENT_SLOTS``). A
slot is one persistent MQTT 5 session with a fixed identity — account and client id
``jiayuan.service-slot-<i>`` / ``jiayuan.urgent-slot-<i>`` (:func:`jiayuan.broker.accounts.
slot_user`) — on the shared subscription of its kind. Slots are leased in PostgreSQL like the
rules' partitions (:class:`district.leases.LeaseKeeper`, kinds ``slot`` and ``urgent-slot``):
each live instance holds ``ceil(K / live)`` of each kind and runs the session of every slot it
holds — a telemetry slot as an ingest process (:meth:`jiayuan.ingest_procs.IngestProcesses.add`),
an urgent slot as a session in this process (:meth:`ingest.listener.Listener.add_session`).

Nothing stranded: Mosquitto keeps a dead member's queued share and unacknowledged messages in
its session until that session is resumed. When an instance dies its leases lapse after the
ttl; the survivors take its slots and connect those sessions with ``clean_start=False``, and
the broker hands them everything the session held (the in-flight ones again, DUP).

Giving a slot up to balance (a new instance came): ``before_release`` stops the slot's session
cleanly — the batch in hand committed and acknowledged, the session disconnected and kept —
before the release commits, so the next holder never runs the session while this one still
does.

A zombie (this instance's renewal overdue: database unreachable, process stalled): from the
moment :meth:`LeaseKeeper.owned` is empty — never later than the database lets another take
the slots — the watch thread stops every session it runs. If it is stalled beyond that (a
frozen VM), the survivor's CONNECT with the same client id makes the broker close the zombie's
connection (session takeover); when the zombie wakes, its paho loop would reconnect after at
least a second and take the session back, but its watch thread runs first and stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import psycopg

from district.leases import SLOT, URGENT_SLOT, LeaseKeeper, ensure_leases, holders
from district.pg import open_pool
from ingest.access import BrokerAccess
from ingest.listener import URGENT_SLOT as URGENT_SESSION_PREFIX
from ingest.listener import Listener, shared
from ingest.topics import URGENT_SUBSCRIPTIONS
from jiayuan.broker.accounts import slot_user

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from ingest.profiles import Profiles
    from jiayuan.ingest_procs import IngestProcesses
    from jiayuan.settings import Settings

log = logging.getLogger(__name__)

URGENT_GROUP: Final = "jiayuan-urgent"
"""The urgent slots' shared subscription group (telemetry's is ``jiayuan-ingest``)."""
VENDOR_SLOT: Final = 0
"""The urgent slot whose session alone subscribes to the vendor profiles' topics (not shared):
a vendor's reports without a device time (Zigbee2MQTT's) keep their order only on one session,
and a ``trigger: change`` event (smoke on after off) is made by comparing a report with the
device's last one, which only the process that read both knows. Shared among the slots, a smoke
on, off, on from two instances raised one alarm, not two (tests/integration/
test_profiles_service.py). The slot is leased like the others: when its instance dies the next
holder resumes its session, and what the broker queued for it meanwhile comes then."""
WATCH_S: Final = 0.2
"""How often the sessions run are checked against the leases held."""


def telemetry_identity(settings: Settings, slot: int) -> tuple[str, str | None]:
    """Client id and account of telemetry slot ``slot``."""
    user = settings.mqtt_username
    if user is None:
        return slot_user(settings.mqtt_client_id, slot), None
    return slot_user(user, slot), slot_user(user, slot)


def urgent_access(settings: Settings, slot: int) -> tuple[str, BrokerAccess]:
    """Client id and access of urgent slot ``slot``."""
    user = settings.mqtt_urgent_username
    password = settings.mqtt_urgent_password.get_secret_value() or None
    access = BrokerAccess(
        None if user is None else slot_user(user, slot),
        password,
        tls=settings.mqtt_tls,
        ca_file=settings.mqtt_tls_ca,
    )
    return slot_user(user or settings.mqtt_urgent_client_id, slot), access


@dataclass(frozen=True)
class SlotsHealth:
    problems: list[str]
    report: dict[str, Any]


class SessionSlots:
    """This instance's share of the session slots, following its leases."""

    def __init__(
        self,
        settings: Settings,
        listener: Listener,
        procs: IngestProcesses,
        profiles: Profiles,
        *,
        pool: ConnectionPool | None = None,
    ) -> None:
        url = settings.database()
        if url is None and pool is None:
            raise ValueError("session slots need JIAYUAN_DATABASE_URL")
        self.settings = settings
        self.instance_id = settings.instance_id
        self.listener = listener
        self.procs = procs
        self.urgent_filters = shared(URGENT_SUBSCRIPTIONS, URGENT_GROUP)
        self.vendor_filters = profiles.filters(urgent=True)
        """The vendor profiles' topics: read by urgent slot 0 alone, see :func:`vendor_slot`."""
        self.pool = pool or open_pool(
            url or "", name=f"jiayuan-slots-{self.instance_id}"[:63], max_size=4
        )
        counts = {SLOT: settings.session_slots, URGENT_SLOT: settings.urgent_slots}
        with self.pool.connection() as db:
            for kind, count in counts.items():
                ensure_leases(db, kind, count)
        self.keepers = {kind: self._keeper(kind, count) for kind, count in counts.items()}
        self.running: dict[str, set[int]] = {SLOT: set(), URGENT_SLOT: set()}
        self._releasing: dict[tuple[str, int], float] = {}
        """Slots stopped by ``before_release`` whose release may not have committed yet: not
        started again meanwhile (until the lease's ttl has passed)."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="session-slots", daemon=True)
        self.gained = 0
        """Slots this instance gained after its start (a dead instance's, or one given up to
        balance)."""

    def _keeper(self, kind: str, count: int) -> LeaseKeeper:
        """The leases of ``count`` slots of ``kind``: a slot given up is stopped first."""
        return LeaseKeeper(
            self.pool,
            self.instance_id,
            count=count,
            kind=kind,
            ttl_s=self.settings.slot_lease_ttl_s,
            before_release=lambda ns: self._release(kind, ns),
            on_change=lambda _c: self._wake.set(),
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for keeper in self.keepers.values():
            keeper.start()
        self._reconcile()
        self._thread.start()

    def stop(self) -> None:
        """A clean stop: every session stopped (committed, acknowledged, kept), then the leases
        given back so the others take over at their next tick instead of after the ttl."""
        self._stop.set()
        self._wake.set()
        self._thread.join(10)
        for keeper in self.keepers.values():
            keeper.stop(release=False)
        with self._lock:
            for n in sorted(self.running[URGENT_SLOT]):
                self._stop_session(URGENT_SLOT, n)
            self.procs.remove(self.running[SLOT])  # together: each its batch, then disconnect
            self.running[SLOT].clear()
        for keeper in self.keepers.values():
            try:
                keeper.release_all()
            except psycopg.Error as e:  # they lapse after the ttl instead
                log.warning("could not give the session slots back: %s", e)
        self.pool.close()

    # ------------------------------------------------------------------ following the leases

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(WATCH_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._reconcile()
            except Exception:  # a bug: said, and the watch goes on
                log.exception("following the session slot leases failed; going on")
                time.sleep(WATCH_S)

    def _reconcile(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._releasing = {k: t for k, t in self._releasing.items() if t > now}
            for kind, keeper in self.keepers.items():
                owned = set(keeper.owned())
                want = {n for n in owned if (kind, n) not in self._releasing}
                lost = sorted(self.running[kind] - want)
                if lost:
                    self._lost(kind, lost)
                for n in sorted(want - self.running[kind]):
                    self._start_session(kind, n)

    def _release(self, kind: str, numbers: list[int]) -> None:
        """``before_release``: the sessions of the slots given up stopped cleanly, before the
        release commits (from the lease heartbeat's thread, in its transaction)."""
        with self._lock:
            until = time.monotonic() + self.settings.slot_lease_ttl_s
            for n in numbers:
                self._releasing[kind, n] = until
                if n in self.running[kind]:
                    self._stop_session(kind, n)
                    log.info("%s %d given up to balance the load: its session stopped", kind, n)

    def _start_session(self, kind: str, n: int) -> None:
        if kind == SLOT:
            client_id, username = telemetry_identity(self.settings, n)
            self.procs.add(n, client_id, username)
        else:
            client_id, access = urgent_access(self.settings, n)
            vendor = self.vendor_filters if n == VENDOR_SLOT else ()
            self.listener.add_session(
                f"{URGENT_SESSION_PREFIX}{n}",
                client_id,
                access,
                self.urgent_filters + vendor,
                receive_maximum=200,
                # a version that shared the vendors' topics among the slots
                retire=shared(self.vendor_filters, URGENT_GROUP) + self.vendor_filters,
            )
        if self._thread.is_alive():
            self.gained += 1
        self.running[kind].add(n)
        log.info("%s %d held: its session %s resumed by %s", kind, n, client_id, self.instance_id)

    def _stop_session(self, kind: str, n: int) -> None:
        """Stop a session cleanly: its batch committed and acknowledged, then disconnected."""
        if kind == SLOT:
            self.procs.remove([n])
        else:
            self.listener.remove_session(f"{URGENT_SESSION_PREFIX}{n}")
        self.running[kind].discard(n)

    def _lost(self, kind: str, numbers: list[int]) -> None:
        """Leases lost (lapsed, or taken): another instance may be resuming these sessions
        now, so they stop at once, all together — an ingest process killed, an urgent session
        disconnected without waiting for its batch. Nothing is lost by it: what was not
        acknowledged stays in the session for its new holder (and what was committed here and
        not acknowledged is stored there again). Were they left to finish, paho's reconnect
        (a second after the broker closed them for the new holder) would take the sessions
        back and forth with the new holder meanwhile."""
        log.warning(
            "%ss %s no longer held by this instance (leases lapsed or taken): their sessions"
            " stopped at once",
            kind,
            numbers,
        )
        if kind == SLOT:
            self.procs.remove(numbers, timeout=0.0)
        else:
            for n in numbers:
                self.listener.remove_session(f"{URGENT_SESSION_PREFIX}{n}", drain_s=0.0)
        self.running[kind] -= set(numbers)

    # ------------------------------------------------------------------ health

    def health(self) -> SlotsHealth:
        """The slots this instance holds, who holds the others, and what is wrong: a slot
        nobody live holds (its messages wait in its session), this instance's leases not
        renewed, a held slot's session down (the caller reads the sessions)."""
        problems: list[str] = []
        held = {kind: sorted(self.running[kind]) for kind in self.keepers}
        owners: dict[str, dict[int, str | None]] = {}
        try:
            with self.pool.connection(timeout=2) as db:
                for kind in self.keepers:
                    owners[kind] = holders(db, kind)
                row = db.execute(
                    "SELECT count(*) FROM instances WHERE expires_at > now()"
                ).fetchone()
                live = int(row[0]) if row else 0
        except Exception:  # health never raises; the service's own probe says the database
            # is unreachable, once, in words that do not name the server (/healthz is public)
            live = 0
        for kind, keeper in self.keepers.items():
            if not keeper.owned() and self.running[kind]:
                problems.append(f"{kind} leases overdue: this instance's sessions being stopped")
            free = [n for n, h in owners.get(kind, {}).items() if h is None]
            if free:
                what = "readings" if kind == SLOT else "falls, SOS and alarms"
                problems.append(
                    f"{kind}s {free} held by no live instance: their sessions' {what} wait"
                    " until an instance takes them (within one lease heartbeat)"
                )
        return SlotsHealth(
            problems,
            {
                "instance": self.instance_id,
                "live_instances": live,
                "telemetry": held[SLOT],
                "urgent": held[URGENT_SLOT],
                "telemetry_slots": self.settings.session_slots,
                "urgent_slots": self.settings.urgent_slots,
                "holders": {kind: {str(n): h for n, h in o.items()} for kind, o in owners.items()},
                "gained": self.gained,
            },
        )
