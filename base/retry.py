"""The one retry policy: capped exponential backoff with jitter, from tenacity.

Two kinds of users:

- loops that sleep between attempts (the ingest store retry, the InfluxDB sink) hold a
  :class:`Backoff` and ask :meth:`Backoff.delay` for attempt ``n``, or hand :meth:`Backoff.wait`
  to a ``tenacity.Retrying``;
- work whose next attempt is written down rather than slept on (a notification in the outbox)
  stores ``now + Backoff.delay(n)``.

Either way the arithmetic is tenacity's ``wait_exponential_jitter`` (``initial * 2**(n-1)``,
capped at ``max``, plus up to ``jitter`` seconds), not written again here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenacity import RetryCallState, wait_exponential_jitter


@dataclass(frozen=True)
class Backoff:
    """``first_s`` before the second attempt, doubling up to ``max_s``; ``jitter`` is the
    fraction of the delay added at random (0 for deterministic delays, as the outbox wants)."""

    first_s: float
    max_s: float
    jitter: float = 0.0

    def wait(self) -> wait_exponential_jitter:
        return wait_exponential_jitter(
            multiplier=self.first_s, max=self.max_s, jitter=self.jitter * self.first_s
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempt)
        return float(self.wait()(state))
