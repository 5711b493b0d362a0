"""The hand-over between the listener and the pipeline: a queue that hands out urgent messages
(events and status, from the urgent session) before telemetry.

A subclass of :class:`queue.Queue` in the way :class:`queue.PriorityQueue` is one: the locking,
blocking and ``get(timeout=)``, ``get_nowait()``, ``qsize()`` are the standard library's; only
the order differs. Within each class of message the order is arrival order, so each session's
messages stay in the order the broker sent them.
"""

from __future__ import annotations

import queue
from collections import deque

from ingest.listener import Inbound


class Inbox(queue.Queue[Inbound]):
    """Unbounded: each MQTT session sends at most its receive maximum of unacknowledged
    messages, and blocking paho's loop thread would also block the acknowledgements."""

    def _init(self, maxsize: int) -> None:
        self.queue: deque[Inbound] = deque()
        self._urgent: deque[Inbound] = deque()

    def _qsize(self) -> int:
        return len(self._urgent) + len(self.queue)

    def _put(self, item: Inbound) -> None:
        (self._urgent if item.urgent else self.queue).append(item)

    def _get(self) -> Inbound:
        return self._urgent.popleft() if self._urgent else self.queue.popleft()

    def put_many(self, items: list[Inbound]) -> None:
        """Put ``items`` in order, under one lock (what the MQTT loop read in one pass). Their
        class is read once when they all came on one session, as they do from the listener."""
        if items:
            with self.mutex:
                if len({m.session for m in items}) == 1:
                    (self._urgent if items[0].urgent else self.queue).extend(items)
                else:
                    for item in items:
                        self._put(item)
                self.unfinished_tasks += len(items)
                self.not_empty.notify(len(items))

    def get_many(self, most: int) -> list[Inbound]:
        """Up to ``most`` of the messages waiting now, in the order :meth:`get` gives them,
        under one lock; none waiting: an empty list (it does not wait)."""
        out: list[Inbound] = []
        with self.mutex:
            for q in (self._urgent, self.queue):
                n = min(most - len(out), len(q))
                if n == len(q):  # all of it (the usual case): no pop per message
                    out.extend(q)
                    q.clear()
                elif n > 0:
                    pop = q.popleft
                    out.extend([pop() for _ in range(n)])
            if out:
                self.not_full.notify()
        return out

    def urgent_waiting(self) -> int:
        """Urgent messages received and not yet taken by the pipeline."""
        with self.mutex:
            return len(self._urgent)

    def oldest_received(self) -> float | None:
        """Receive time of the oldest message waiting (urgent or not), None when none is."""
        with self.mutex:
            heads = [q[0].received for q in (self._urgent, self.queue) if q]
        return min(heads) if heads else None
