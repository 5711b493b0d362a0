"""The ingest pipeline: inbox → decode → journal (committed) → PUBACK → downstream.

One thread. It takes what has arrived (up to ``batch_max`` messages, waiting at most
``batch_wait`` for more once it has one), decodes each message once, writes the batch in one
transaction, acknowledges the batch's messages, and only then hands the new readings to the
next stage. A failure downstream is logged and counted; it never loses or blocks ingestion.

Two kinds of journal failure, told apart by the journal's ``trouble(e)`` (SQLite's
:func:`ingest.journal.store_trouble`, PostgreSQL's :func:`ingest.journal_pg.store_trouble`):

- **A message the journal refuses** (a value it cannot bind, a constraint): the batch is split
  in halves until the message is alone; it becomes a dead letter (``journal_refused``) and the
  rest are committed and acknowledged. One message never holds the others.
- **The store failing** (disk full, locked, read-only, I/O error): not the messages' fault.
  The batch stays in hand, unacknowledged and not dead-lettered; the pipeline says so once in
  the log, in :meth:`Pipeline.store_health` and in ``jiayuan_journal_writable``, retries with
  a growing pause, and goes on by itself once the store takes the batch.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from time import thread_time
from typing import Final

import msgspec

from base.retry import Backoff
from ingest.inbox import Inbox
from ingest.journal import BatchResult
from ingest.journal_store import JournalStore
from ingest.listener import PUSH_SESSIONS, Inbound
from ingest.metrics import (
    BATCH_SIZE,
    COMMIT_LAG,
    COMMIT_SECONDS,
    DEAD_LETTERS,
    DECODE_CPU,
    DUPLICATES,
    JOURNAL_CPU,
    JOURNAL_REFUSED,
    JOURNAL_WRITABLE,
    JOURNAL_WRITE_FAILURES,
    MESSAGES,
    OLDEST_UNACKED,
    PIPELINE_ERRORS,
    QUEUE_DEPTH,
)
from ingest.payloads import MAX_PAYLOAD, DeadLetter, DeadLetterReason, Reading, decode
from ingest.profiles import ProfileError, Profiles
from ingest.ways import WaysIn

STORE_RETRY = Backoff(first_s=0.25, max_s=5.0)
"""Pauses between attempts to write a batch while the journal is failing."""

log = logging.getLogger(__name__)

Ack = Callable[[Iterable[Inbound]], None]
Downstream = Callable[[Sequence[Reading]], None]


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Whether the journal takes writes. ``reason``: the store's error while it does not;
    ``since``: when it stopped (epoch seconds)."""

    ok: bool
    reason: str | None = None
    since: float | None = None


class StoreFailing(Exception):
    """The journal cannot write at all right now; nothing of the batch was committed."""

    def __init__(self, trouble: str, message: str) -> None:
        super().__init__(f"{trouble}: {message}")
        self.trouble = trouble


def decode_inbound(m: Inbound, communities: Collection[str] | None = None) -> Reading | DeadLetter:
    """:func:`decode` of one message; one refused at the edge is its dead letter, and the
    source's own message id becomes the reading's duplicate key. ``communities``: the
    installation's when it declares several (:attr:`ingest.ways.WaysIn.communities`)."""
    if m.refused is not None:
        reason, detail = m.refused
        return DeadLetter(m.topic, m.payload[:MAX_PAYLOAD], reason, detail, m.received)
    out = decode(m.topic, m.payload, m.received, communities)
    if m.key is not None and isinstance(out, Reading):
        return msgspec.structs.replace(out, key=m.key)
    return out


_Item = tuple[Inbound, Reading | DeadLetter]
_RECEIVED: Final = attrgetter("received")
_KIND_STREAM: Final = attrgetter("kind", "stream")
_REASON: Final = attrgetter("reason")


@dataclass(slots=True)
class _Written:
    """What one batch put in the journal, over all the parts it was split into."""

    new: list[Reading] = field(default_factory=list)
    duplicates: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    commit_seconds: float = 0.0
    done: set[int] = field(default_factory=set)
    """``id()`` of the items committed: after the store failed half-way through a split
    batch, only the others are written again (a vendor message may be several items)."""

    def add(self, r: BatchResult, dead: Sequence[DeadLetter], items: Sequence[_Item]) -> None:
        self.done.update(map(id, items))
        self.new.extend(r.new)
        self.duplicates += r.duplicates
        self.dead.extend(dead)
        self.commit_seconds += r.commit_seconds


class Pipeline:
    def __init__(
        self,
        inbox: queue.Queue[Inbound],
        journal: JournalStore,
        ack: Ack,
        downstream: Downstream | None = None,
        *,
        batch_max: int = 1000,
        batch_wait: float = 0.005,
        retry: Backoff = STORE_RETRY,
        profiles: Profiles | None = None,
        on_refused: Callable[[Inbound, DeadLetter], None] | None = None,
        ways: WaysIn | None = None,
    ) -> None:
        """``retry``: the pauses between two attempts to write a batch while the store is
        failing (the house's one backoff: doubling from the first to the longest)."""
        self.inbox = inbox
        self.journal = journal
        self.ack = ack
        self.downstream = downstream
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.retry = retry
        self.profiles = profiles
        self.on_refused = on_refused
        self.ways = ways
        """Each registered device's one way in (its ``via``): a reading of it that came
        another way — natively, or through a profile not its own — is a dead letter
        (``unknown_topic``); pushed ones are checked at the HTTP edge (ingest/ways.py)."""
        """Told (pipeline thread, before the batch's ack) of each message the journal refused
        and kept as a ``journal_refused`` dead letter: the push endpoint answers so
        (:meth:`ingest.push.PushIntake.refused`)."""
        """Device profiles: a message on a vendor's topic is translated into canonical ones
        before :func:`decode` (ingest/profiles.py)."""
        self.committed = 0
        """Messages committed (readings, duplicates and dead letters) since start."""
        self._health = StoreHealth(ok=True)
        self._retry_at = 0.0
        self._in_hand_since: float | None = None
        """Receive time of the first message of the batch taken from the inbox and not yet
        acknowledged (the oldest: the inbox is in arrival order)."""
        self._dead_logged: dict[str, tuple[float, int]] = {}
        self._undo: dict[int, Callable[[], None]] = {}
        """``id()`` of a reading of the batch in hand that recorded a device's new state
        (a ``trigger: change`` event) → what forgets that state should the journal refuse it."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        JOURNAL_WRITABLE.set(1)

    def start(self) -> None:
        OLDEST_UNACKED.set_function(lambda: self.oldest_unacked_age(time.time()) or 0.0)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (unless the store is failing: then it is left), then stop.
        Unacknowledged messages stay with the broker."""
        self._stop.set()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ health

    def store_health(self) -> StoreHealth:
        """Whether the journal takes writes now (for ``/healthz``)."""
        return self._health

    def oldest_unacked_age(self, now: float) -> float | None:
        """Seconds since the oldest message received but not yet acknowledged arrived (the
        ingest lag), or None when every message received is acknowledged."""
        oldest = self._in_hand_since
        if oldest is None:
            if isinstance(self.inbox, Inbox):
                oldest = self.inbox.oldest_received()
            else:
                with self.inbox.mutex:
                    oldest = self.inbox.queue[0].received if self.inbox.queue else None
            if oldest is None:
                return None
        return max(0.0, now - oldest)

    def _failing(self, e: StoreFailing, held: int) -> None:
        JOURNAL_WRITE_FAILURES.labels(e.trouble).inc()
        if self._health.ok:
            self._health = StoreHealth(ok=False, reason=str(e)[:300], since=time.time())
            JOURNAL_WRITABLE.set(0)
            log.error(
                "journal refuses writes (%s); holding %d messages unacknowledged and retrying"
                " until it takes them (logged once per outage)",
                e,
                held,
            )

    def _writable(self) -> None:
        if not self._health.ok:
            since = self._health.since or time.time()
            self._health = StoreHealth(ok=True)
            JOURNAL_WRITABLE.set(1)
            log.warning(
                "journal takes writes again after %.1f s; ingestion goes on",
                time.time() - since,
            )
        self._retry_at = 0.0

    # ------------------------------------------------------------------ the loop

    def _take(self) -> list[Inbound]:
        """The next batch: what waits now, and what comes within ``batch_wait`` of its first
        message, up to ``batch_max``; but a batch holding an urgent message (a fall, a fire
        alarm) waits for nothing more: it is committed with what is already there, so that its
        alert is not held the batch window behind it (5 ms of a fall's ~10 ms publish→alert)."""
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        self._in_hand_since = first.received
        batch = [first]
        urgent = first.urgent
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_max:
            urgent = self._waiting(batch) or urgent
            if urgent or len(batch) >= self.batch_max:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                more = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            batch.append(more)
            urgent = more.urgent
        return batch

    def _waiting(self, batch: list[Inbound]) -> bool:
        """Add the messages waiting now to ``batch``, up to ``batch_max`` (from an
        :class:`Inbox` under one lock); whether one of them is urgent."""
        if isinstance(self.inbox, Inbox):
            more = self.inbox.get_many(self.batch_max - len(batch))
            batch.extend(more)
            return bool(more) and more[0].urgent  # (an Inbox hands urgent messages out first)
        urgent = False
        while len(batch) < self.batch_max:
            try:
                m = self.inbox.get_nowait()
            except queue.Empty:
                break
            batch.append(m)
            urgent = urgent or m.urgent
        return urgent

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take()
            QUEUE_DEPTH.set(self.inbox.qsize())
            if not batch:
                self._idle()
                continue
            self._until_committed(batch)
            self._in_hand_since = None

    def _until_committed(self, batch: Sequence[Inbound]) -> None:
        """Process ``batch``; while the store fails, hold it and try again, pausing longer
        each time (until stopped: then it stays unacknowledged, with the broker)."""
        items = self._decode(batch)
        written = _Written()
        attempt = 0
        told = False
        while True:
            try:
                self._write([it for it in items if id(it) not in written.done], written)
            except StoreFailing as e:
                self._failing(e, len(batch) + self.inbox.qsize())
            except Exception:
                # A bug, not the store: nothing more was committed; count it, say it once and
                # try again (dropping the batch would leave it unacknowledged until a restart).
                PIPELINE_ERRORS.labels("journal").inc()
                if not told:
                    log.exception("ingest failed on a batch of %d messages; retrying", len(batch))
                    told = True
            else:
                self._finish(batch, written)
                return
            attempt += 1
            if self._stop.wait(self.retry.delay(attempt)):
                return

    def _idle(self) -> None:
        """With nothing to ingest: write last-seen times when due; while the store fails,
        probe it now and then, so that health turns good again without waiting for a message."""
        was_ok = self._health.ok
        try:
            if self._health.ok:
                self.journal.flush(if_due=True)
            elif time.monotonic() >= self._retry_at:
                self._retry_at = time.monotonic() + self.retry.max_s
                self.journal.probe()
                self._writable()
        except Exception as e:
            trouble = self.journal.trouble(e)
            if trouble is None:
                PIPELINE_ERRORS.labels("journal").inc()
                log.exception("could not write device last-seen times")
                return
            self._failing(StoreFailing(trouble, str(e)), 0)
            self._retry_at = time.monotonic() + (self.retry.first_s if was_ok else self.retry.max_s)

    def process(self, batch: Sequence[Inbound]) -> list[Reading]:
        """Decode, journal, acknowledge and hand on one batch; returns the new readings.
        Raises :class:`StoreFailing` (nothing acknowledged) while the store cannot write."""
        written = _Written()
        self._write(self._decode(batch), written)
        return self._finish(batch, written)

    def _decode(self, batch: Sequence[Inbound]) -> list[_Item]:
        """Each message's readings and dead letters; a vendor's message through its profile
        (the CPU time counted per batch). A native message is refused when its device is
        registered to report another way (its own broker account exists only for native
        devices: this is a second line).

        Native messages are decoded in the loop itself, not through a method and
        :func:`decode_inbound`: two calls fewer per message (``python -m bench.pipeline``)."""
        self._undo.clear()  # the previous batch is committed: its readings are gone
        cpu = thread_time()
        items: list[_Item] = []
        add = items.append
        profiles, ways = self.profiles, self.ways
        communities = None if ways is None else ways.communities
        for m in batch:
            if m.session in PUSH_SESSIONS:  # mapped and checked at the HTTP edge (api/push.py)
                add((m, decode_inbound(m)))
            elif profiles is not None and not m.topic.startswith("community/"):
                items.extend((m, x) for x in self._vendor(m, profiles))
            else:
                if m.refused is None and m.key is None:  # every MQTT message
                    x = decode(m.topic, m.payload, m.received, communities)
                else:
                    x = decode_inbound(m, communities)
                if ways is not None and isinstance(x, Reading):
                    why = ways.refusal(x.device_id, None)
                    if why is not None:
                        x = DeadLetter(
                            m.topic, m.payload[:MAX_PAYLOAD], "unknown_topic", why, m.received
                        )
                add((m, x))
        DECODE_CPU.inc(thread_time() - cpu)
        return items

    def _vendor(self, m: Inbound, profiles: Profiles) -> list[Reading | DeadLetter]:
        """A vendor message's canonical readings. A dead letter keeps the vendor's topic and
        bytes (what the operator must see), its detail names the profile; one vendor message
        may give readings and dead letters, and is acknowledged once, after all are committed.
        An edge-triggered event (an alarm turning on) that is not journaled is forgotten by
        its profile, so that the device's next report raises it again."""

        def dead(reason: DeadLetterReason, detail: str) -> DeadLetter:
            return DeadLetter(m.topic, m.payload[:MAX_PAYLOAD], reason, detail[:300], m.received)

        profile = profiles.for_topic(m.topic)
        if profile is None:
            return [dead("unknown_topic", f"no profile for vendor topic {m.topic[:120]!r}")]
        try:
            out = profile.from_mqtt(m.topic, m.payload)
        except ProfileError as e:
            return [dead(e.reason, f"profile {profile.id}: {e.message}")]
        found: list[Reading | DeadLetter] = []
        for c in out:
            if c.refused is not None:
                found.append(dead(c.refused[0], f"profile {profile.id}: {c.refused[1]}"))
                continue
            x = decode(
                c.topic, c.payload, m.received, None if self.ways is None else self.ways.communities
            )
            way = None
            if isinstance(x, Reading) and self.ways is not None:
                way = self.ways.refusal(x.device_id, profile.id)
            if way is not None:  # not its way in: the edge's new state is forgotten too
                x = dead("unknown_topic", f"profile {profile.id}: {way}")
                if c.edge is not None:
                    profile.forget(c.edge)
            elif isinstance(x, DeadLetter):
                x = dead(x.reason, f"profile {profile.id} -> {c.topic}: {x.detail}")
                if c.edge is not None:
                    profile.forget(c.edge)
            elif c.edge is not None:
                self._undo[id(x)] = functools.partial(profile.forget, c.edge)
            found.append(x)
        return found

    def _finish(self, batch: Sequence[Inbound], written: _Written) -> list[Reading]:
        """The batch is committed: acknowledge it, count it, hand its new readings on."""
        self._writable()
        try:
            self.ack(batch)
        except Exception:  # committed: the broker sends them again, the journal drops them
            PIPELINE_ERRORS.labels("ack").inc()
            log.exception("could not acknowledge %d committed messages", len(batch))
        self.committed += len(batch)
        now = time.time()
        COMMIT_SECONDS.observe(written.commit_seconds)
        COMMIT_LAG.set(now - min(map(_RECEIVED, batch)))
        BATCH_SIZE.observe(len(batch))
        for (kind, stream), n in Counter(map(_KIND_STREAM, written.new)).items():
            MESSAGES.labels(kind, stream).inc(n)
        for reason, n in Counter(map(_REASON, written.dead)).items():
            DEAD_LETTERS.labels(reason).inc(n)
        for d in written.dead:
            self._log_dead(d)
        if written.duplicates:
            DUPLICATES.inc(written.duplicates)
        if self.downstream is not None and written.new:
            try:
                self.downstream(written.new)
            except Exception:
                PIPELINE_ERRORS.labels("downstream").inc()
                log.exception("rule stage failed on a batch of %d readings", len(written.new))
        return written.new

    def _write(self, items: Sequence[_Item], out: _Written) -> None:
        """Journal ``items`` in one transaction; if the journal refuses one of them, split
        them in halves until it is alone, and keep it as a dead letter."""
        readings = [x for _, x in items if isinstance(x, Reading)]
        dead = [x for _, x in items if isinstance(x, DeadLetter)]
        cpu = thread_time()
        try:
            out.add(self.journal.write_batch(readings, dead), dead, items)
            return
        except Exception as e:
            trouble = self.journal.trouble(e)
            if trouble is not None:
                raise StoreFailing(trouble, str(e)) from e
            refusal = f"{type(e).__name__}: {e}"[:200]
        finally:
            JOURNAL_CPU.inc(thread_time() - cpu)
        if len(items) > 1:
            mid = len(items) // 2
            self._write(items[:mid], out)
            self._write(items[mid:], out)
            return
        m = items[0][0]
        JOURNAL_REFUSED.inc()
        undo = self._undo.pop(id(items[0][1]), None)
        if undo is not None:  # an alarm the journal would not keep: the next report raises it
            undo()
        letter = DeadLetter(
            m.topic, m.payload[:MAX_PAYLOAD], "journal_refused", refusal, m.received
        )
        self._keep_refused(items[0], letter, out)
        if self.on_refused is not None:
            try:
                self.on_refused(m, letter)
            except Exception:
                PIPELINE_ERRORS.labels("ack").inc()
                log.exception("could not tell a push of a refused message")

    def _keep_refused(self, item: _Item, d: DeadLetter, out: _Written) -> None:
        """Store the dead letter of a message the journal refused; should even that be refused
        (its topic, say), a bare one that says so."""
        bare = DeadLetter("", b"", d.reason, d.detail + "; topic, payload not kept", d.received)
        for letter in (d, bare):
            try:
                out.add(self.journal.write_batch([], [letter]), [letter], [item])
                return
            except Exception as e:
                trouble = self.journal.trouble(e)
                if trouble is not None:
                    raise StoreFailing(trouble, str(e)) from e
        raise StoreFailing("journal_refused", "the journal refuses even a bare dead letter")

    def _log_dead(self, d: DeadLetter) -> None:
        """Log a dead letter with its topic and reason (never its payload: it may hold health
        data), at most once per reason every 10 s; the rest are counted and stored."""
        now = time.monotonic()
        last, skipped = self._dead_logged.get(d.reason, (0.0, 0))
        if now - last < 10.0:
            self._dead_logged[d.reason] = (last, skipped + 1)
            return
        self._dead_logged[d.reason] = (now, 0)
        more = f" ({skipped} more of this reason not logged)" if skipped else ""
        log.warning(
            "dead letter (%s) on %.120s: %s; %d bytes%s",
            d.reason,
            d.topic,
            d.detail,
            len(d.payload),
            more,
        )
