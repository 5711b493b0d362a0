"""The ingest pipeline: inbox → decode → journal (committed) → PUBACK → downstream.

One thread. It takes what has arrived (up to ``batch_max`` messages, waiting at most
``batch_wait`` for more once it has one), decodes each message once, writes the batch in one
transaction, acknowledges the batch's messages, and only then hands the new readings to the
rule stage. A failure downstream is logged and counted; it never loses or blocks ingestion.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from ingest.journal import Journal
from ingest.listener import Inbound
from ingest.metrics import (
    BATCH_SIZE,
    COMMIT_LAG,
    COMMIT_SECONDS,
    DEAD_LETTERS,
    DUPLICATES,
    MESSAGES,
    PIPELINE_ERRORS,
    QUEUE_DEPTH,
)
from ingest.payloads import DeadLetter, Reading, decode

log = logging.getLogger(__name__)

Ack = Callable[[Iterable[Inbound]], None]
Downstream = Callable[[Sequence[Reading]], None]


class Pipeline:
    def __init__(
        self,
        inbox: queue.Queue[Inbound],
        journal: Journal,
        ack: Ack,
        downstream: Downstream | None = None,
        *,
        batch_max: int = 1000,
        batch_wait: float = 0.005,
    ) -> None:
        self.inbox = inbox
        self.journal = journal
        self.ack = ack
        self.downstream = downstream
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.committed = 0
        """Messages committed (readings, duplicates and dead letters) since start."""
        self._dead_logged: dict[str, tuple[float, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand, then stop. Unacknowledged messages stay with the broker."""
        self._stop.set()
        self._thread.join(timeout)

    def _take(self) -> list[Inbound]:
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_max:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(self.inbox.get(timeout=left))
                except queue.Empty:
                    break
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take()
            QUEUE_DEPTH.set(self.inbox.qsize())
            if not batch:
                self._idle()
                continue
            try:
                self.process(batch)
            except Exception:
                # The journal refused the batch (disk full, say). Nothing was acknowledged, so
                # the broker redelivers; back off and go on rather than die.
                PIPELINE_ERRORS.labels("journal").inc()
                log.exception("journal write failed; %d messages left unacknowledged", len(batch))
                time.sleep(1.0)

    def _idle(self) -> None:
        try:
            self.journal.flush(if_due=True)
        except Exception:
            PIPELINE_ERRORS.labels("journal").inc()
            log.exception("could not write device last-seen times")

    def process(self, batch: Sequence[Inbound]) -> list[Reading]:
        """Decode, journal, acknowledge and hand on one batch; returns the new readings."""
        readings: list[Reading] = []
        dead: list[DeadLetter] = []
        for m in batch:
            item = decode(m.topic, m.payload, m.received)
            if isinstance(item, Reading):
                readings.append(item)
            else:
                dead.append(item)
        result = self.journal.write_batch(readings, dead)
        self.ack(batch)
        self.committed += len(batch)
        now = time.time()
        COMMIT_SECONDS.observe(result.commit_seconds)
        COMMIT_LAG.set(now - min(m.received for m in batch))
        BATCH_SIZE.observe(len(batch))
        for (kind, stream), n in Counter((r.kind, r.stream) for r in readings).items():
            MESSAGES.labels(kind, stream).inc(n)
        for d in dead:
            DEAD_LETTERS.labels(d.reason).inc()
            self._log_dead(d)
        if result.duplicates:
            DUPLICATES.inc(result.duplicates)
        if self.downstream is not None and result.new:
            try:
                self.downstream(result.new)
            except Exception:
                PIPELINE_ERRORS.labels("downstream").inc()
                log.exception("rule stage failed on a batch of %d readings", len(result.new))
        return result.new

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
