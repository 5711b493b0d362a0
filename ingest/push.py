"""Messages pushed over HTTP, handed to the same pipeline as MQTT's, with their commit told back.

A device platform's push becomes :class:`~ingest.listener.Inbound` messages on the pipeline's
inbox — urgent ones (events, status) in the urgent lane, so a fall pushed during a telemetry
backlog is taken first — and :meth:`PushIntake.submit` returns a :class:`Pushed` that completes
once every one of them is committed to the journal (as a reading, a duplicate or a dead
letter). The pipeline calls :meth:`PushIntake.ack` where it acknowledges MQTT messages: after
the commit, never before. The HTTP answer waits for that, so a 2xx means journaled.

Nothing here knows HTTP: the API (``jiayuan/api/push.py``) maps bodies, waits and answers.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ingest.listener import PUSH, PUSH_SESSIONS, PUSH_URGENT, Inbound
from ingest.payloads import DeadLetter, DeadLetterReason
from ingest.topics import TopicError, parse_topic


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a push, as a native device would publish it."""

    topic: str
    payload: bytes
    key: str | None = None
    """The journal's duplicate key: the platform's message id, qualified by the integration."""
    refused: tuple[DeadLetterReason, str] | None = None
    """Refused before decoding (the body could not be mapped): stored as this dead letter."""


def is_urgent(topic: str) -> bool:
    """Whether a message on ``topic`` goes by the urgent lane (events and status, as the MQTT
    urgent session's subscriptions); a topic that is not a reading's goes by the other."""
    try:
        return parse_topic(topic).stream != "telemetry"
    except TopicError:
        return False


class Pushed:
    """One push's messages on their way to the journal."""

    def __init__(self, n: int, on_commit: Callable[[], None] | None) -> None:
        self.refused: dict[int, str] = {}
        """Index in the push → why the journal refused that message (it is then a
        ``journal_refused`` dead letter, not a reading): complete once :attr:`committed`."""
        self._left = n
        self._done = threading.Event()
        self._on_commit = on_commit
        if n == 0:
            self._done.set()

    @property
    def committed(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _one(self) -> None:
        """One more of its messages committed (pipeline thread)."""
        self._left -= 1
        if self._left == 0:
            self._done.set()
            if self._on_commit is not None:
                self._on_commit()


class PushIntake:
    def __init__(self, inbox: queue.Queue[Inbound], *, max_pending: int = 20_000) -> None:
        """``max_pending``: pushed messages not yet committed at most; past it a push is
        refused (:class:`PushBusy`), never queued without bound."""
        self.inbox = inbox
        self.max_pending = max_pending
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[Pushed, int]] = {}
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Messages pushed and not yet committed."""
        with self._lock:
            return len(self._waiting)

    def submit(
        self, messages: Sequence[Message], on_commit: Callable[[], None] | None = None
    ) -> Pushed:
        """Hand ``messages`` to the pipeline. ``on_commit`` is called (from the pipeline's
        thread, once, quickly) when the last of them is committed. Raises :class:`PushBusy`
        when too many pushed messages wait already."""
        pushed = Pushed(len(messages), on_commit)
        now = time.time()
        inbound = []
        with self._lock:
            if len(self._waiting) + len(messages) > self.max_pending:
                raise PushBusy(len(self._waiting))
            for index, m in enumerate(messages):
                mid = next(self._ids)
                self._waiting[mid] = (pushed, index)
                session = PUSH_URGENT if is_urgent(m.topic) else PUSH
                inbound.append(
                    Inbound(m.topic, m.payload, mid, 0, False, now, session, m.key, m.refused)
                )
        for i in inbound:
            self.inbox.put(i)
        return pushed

    def ack(self, batch: Iterable[Inbound]) -> None:
        """The pipeline committed ``batch``: complete the pushes whose messages it held (the
        others are MQTT's, acknowledged by the listener)."""
        done: list[Pushed] = []
        with self._lock:
            for m in batch:
                if m.session in PUSH_SESSIONS:
                    waiting = self._waiting.pop(m.mid, None)
                    if waiting is not None:
                        done.append(waiting[0])
        for p in done:
            p._one()

    def refused(self, m: Inbound, letter: DeadLetter) -> None:
        """The journal refused pushed message ``m`` (the pipeline's ``on_refused``): its push
        answers it as a dead letter, not as accepted."""
        if m.session not in PUSH_SESSIONS:
            return
        with self._lock:
            p = self._waiting.get(m.mid)
            if p is not None:
                p[0].refused[p[1]] = letter.detail


class PushBusy(Exception):
    def __init__(self, pending: int) -> None:
        super().__init__(f"{pending} pushed messages are waiting for the journal")
        self.pending = pending


def acknowledge_both(
    mqtt: Callable[[Iterable[Inbound]], None], push: PushIntake
) -> Callable[[Iterable[Inbound]], None]:
    """The pipeline's ``ack``: PUBACKs for MQTT messages, completion for pushed ones."""

    def ack(batch: Iterable[Inbound]) -> None:
        batch = list(batch)
        try:
            mqtt(batch)
        finally:
            push.ack(batch)

    return ack
