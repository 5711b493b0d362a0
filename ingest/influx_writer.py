"""Writing line protocol to InfluxDB: the :class:`Writer` interface the sink talks to, its one
implementation over influxdb-client's synchronous write API, and :class:`WriteError`, which
says whether a failure may pass (retry) or is the data's fault (set the points aside).

Why the synchronous write, with the library's retries off (measured with
``python -m bench.sink --drain-only --library-batching``):

- its batching mode (``WriteOptions(batch_size=…)``) returns from ``write()`` before the server
  has answered, re-cuts the data into its own batches, retries on a background thread and,
  once ``max_retries`` or ``max_retry_time`` is spent, drops the batch with an error callback
  that carries bytes, not journal ids. The sink's one promise, "the cursor moves only after
  the server accepted the batch", would have to be rebuilt from those callbacks. Nor is it
  faster here: handed 5,000-line strings it drained the same journal at about 0.9 times the
  sink's rate (slower in 8 of 11 paired runs), handed one item a line at about half of it
  (its Rx pipeline works per item);
- its retries (``WritesRetry``, urllib3 underneath) sleep inside ``write()``: the sink could
  neither report the outage (health, the trouble alert) nor stop while they run, and they end.
  The sink retries as a journal follower, with base.retry's backoff, for as long as it takes;
- it takes line protocol strings, but a list of them costs a serialisation call per line
  (about 1.4 µs each, measured): the sink joins the lines of a batch and hands over one body.
  ``Point`` objects cost several times the hand-written lines (:mod:`ingest.lineproto`).
"""

from __future__ import annotations

import json
from typing import Protocol

from ingest.lineproto import PRECISION

REFUSED = frozenset({400, 413, 422})
"""Statuses that say "this data, never": split the batch and set the culprits aside."""


class WriteError(Exception):
    """A write that did not go through. ``status`` None: no HTTP answer (connection refused,
    reset, timed out)."""

    def __init__(self, status: int | None, reason: str, retry_after: float | None = None):
        super().__init__(f"{status or 'no answer'}: {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after

    @property
    def refused(self) -> bool:
        return self.status in REFUSED

    @property
    def kind(self) -> str:
        s = self.status
        if s is None:
            return "connection"
        if s in REFUSED:
            return "refused"
        if s == 429:
            return "throttled"
        if s in (401, 403):
            return "auth"
        return "server" if s >= 500 else "client"


class Writer(Protocol):
    def write(self, body: bytes) -> None:
        """Send line protocol; raise :class:`WriteError` unless the server accepted it all."""

    def close(self) -> None: ...


class InfluxWriter:
    """:class:`Writer` over influxdb-client's synchronous write API, without its retries (the
    sink has its own, which never give up)."""

    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.domain.write_precision import WritePrecision

        # an empty token sends no Authorization header (a server without authentication)
        self._client = InfluxDBClient(
            url=url, token=token, org=org, timeout=int(timeout_s * 1000), retries=False
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket = bucket
        self._org = org
        self._precision = getattr(WritePrecision, PRECISION.upper())

    def write(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self._api.write(self._bucket, self._org, body, write_precision=self._precision)
        except ApiException as e:
            raise WriteError(e.status, _reason(e.body, e.reason), _retry_after(e.headers)) from e
        except (HTTPError, OSError) as e:
            raise WriteError(None, f"{type(e).__name__}: {e}") from e

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]


def _reason(body: object, fallback: object) -> str:
    """The server's message: InfluxDB answers ``{"code": …, "message": …}``."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])
    return text.strip() or str(fallback or "")


def _retry_after(headers: object) -> float | None:
    get = getattr(headers, "get", None)
    value = get("Retry-After") if callable(get) else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None
