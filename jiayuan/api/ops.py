"""``/api/ops/summary``: the operators' figures as JSON, read from the same Prometheus registry
that ``/metrics`` exposes, so the console and Prometheus never disagree.

Counters are totals since the process started; a rate is the difference of two samples
divided by the difference of their ``at``. For admins, managers and operators.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime

from fastapi import APIRouter
from prometheus_client import REGISTRY
from pydantic import BaseModel, Field

from ingest.payloads import REASONS
from jiayuan.api.deps import allow
from jiayuan.api.times import utc

router = APIRouter(
    prefix="/api/ops",
    tags=["operations"],
    dependencies=[allow("admin", "manager", "district_manager", "operator")],
)


class OpsSummary(BaseModel):
    at: datetime = Field(description="When the figures were read.")
    at_epoch: float = Field(description="The same, in epoch seconds, for computing rates.")
    mqtt_connected: bool | None
    messages_received_total: float = Field(description="`jiayuan_messages_received_total`.")
    messages_received: dict[str, float] = Field(description="By `kind/stream`.")
    duplicates_total: float
    dead_letters_total: float = Field(description="Since the process started.")
    dead_letters: dict[str, float] = Field(description="By reason, since the process started.")
    journal_commit_lag_seconds: float | None
    journal_commit_seconds_mean: float | None = Field(description="Mean time to commit a batch.")
    journal_batches_total: float
    ingest_queue_depth: float | None
    ingest_errors_total: float
    alerts: dict[str, float] = Field(description="Alerts in the store by status.")
    stream_clients: float | None


def read_samples() -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every ``jiayuan_*`` sample of the default registry: name → [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name.startswith("jiayuan_"):
                out[s.name].append((dict(s.labels), float(s.value)))
    return out


@router.get("/summary", response_model=OpsSummary, summary="Ingestion and alert figures")
def get_ops_summary() -> OpsSummary:
    now = time.time()
    samples = read_samples()

    def total(name: str) -> float:
        return sum(v for _, v in samples.get(name, ()))

    def one(name: str) -> float | None:
        values = samples.get(name)
        return values[0][1] if values else None

    def by(name: str, *labels: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for lab, v in samples.get(name, ()):
            out["/".join(lab.get(k, "") for k in labels)] += v
        return dict(out)

    commits = total("jiayuan_journal_commit_seconds_count")
    connected = one("jiayuan_mqtt_connected")
    return OpsSummary(
        at=utc(now),
        at_epoch=now,
        mqtt_connected=None if connected is None else connected >= 1,
        messages_received_total=total("jiayuan_messages_received_total"),
        messages_received=by("jiayuan_messages_received_total", "kind", "stream"),
        duplicates_total=total("jiayuan_duplicates_total"),
        dead_letters_total=total("jiayuan_dead_letters_total"),
        dead_letters=dict.fromkeys(REASONS, 0.0) | by("jiayuan_dead_letters_total", "reason"),
        journal_commit_lag_seconds=one("jiayuan_journal_commit_lag_seconds"),
        journal_commit_seconds_mean=(
            total("jiayuan_journal_commit_seconds_sum") / commits if commits else None
        ),
        journal_batches_total=commits,
        ingest_queue_depth=one("jiayuan_ingest_queue_depth"),
        ingest_errors_total=total("jiayuan_ingest_errors_total"),
        alerts=by("jiayuan_alerts", "status"),
        stream_clients=one("jiayuan_stream_clients"),
    )
