"""A world for API tests that reach the edges: the community of tests/alerting.py with
alerting running, stored readings of every kind, and payloads a journal may hold from before
decode refused them (a 400-digit ``steps``, a 5,000-digit one past Python's int limit,
``1e400``, arrays nested 2,000 deep); its registry kept in files and changeable through the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any, Final

from alerts import AlertStore
from alerts.dispatch import Config, Dispatcher
from base.datadir import DataDir
from ingest.inbox import Inbox
from ingest.journal import Journal
from ingest.payloads import DeadLetter, Reading, decode
from ingest.pipeline import Pipeline
from ingest.profiles import shipped_profiles
from ingest.push import PushIntake, acknowledge_both
from ingest.push_native import push_profiles
from ingest.ways import WaysIn
from jiayuan.auth.audit import AuditLog
from jiayuan.auth.store import AuthStore
from jiayuan.context import AppContext
from jiayuan.integrations import Integration, PushSetup, PushTokens
from jiayuan.registry_admin import RegistryAdmin
from jiayuan.registry_files import RegistryFiles
from jiayuan.settings import Settings
from tests.alerting import RULES, T0, FakeClock, FakeSender, community, fire
from tests.staff import ADMIN_TOKEN


def msg(device: str, kind: str, stream: str, at: float, **body: Any) -> Reading | DeadLetter:
    topic = f"community/y/{kind}/{device}/{stream}"
    return decode(topic, json.dumps({"ts": int(at * 1000), **body}).encode(), at + 1)


def stored(device: str, at: float, payload: bytes, seq: int) -> Reading:
    """A reading as an older version might have journaled it, payload and all."""
    return Reading(
        community="y",
        kind="wearable",
        device_id=device,
        stream="telemetry",
        ts=at,
        received=at + 1,
        seq=seq,
        values={},
        payload=payload,
    )


def world(data: Path, stack: ExitStack) -> AppContext:
    """The world, its alerting not started yet (see :func:`running`); what it opens is closed
    with ``stack``."""
    registry = community()
    journal = stack.enter_context(closing(Journal(data / "journal.db", synchronous="NORMAL")))
    journal.sync_registry(registry)
    decoded = [
        msg("wr-1", "wearable", "telemetry", T0, heart_rate=70, steps=10, seq=1),
        msg("wr-1", "wearable", "telemetry", T0 + 60, heart_rate=80, steps=20, seq=2),
        msg("wr-1", "wearable", "event", T0 + 100, event="fall", seq=3),
        msg("wr-1", "wearable", "status", T0, state="online", fw="1.2"),
        msg("smk-101", "smoke", "telemetry", T0, obscuration_pct_m=0.1, battery=88),
        msg("w-9", "wearable", "telemetry", T0, heart_rate=66),
        decode("community/y/wearable/wr-1/telemetry", b"{not json", T0 + 5),
    ]
    readings = [r for r in decoded if isinstance(r, Reading)]
    readings += [stored("wr-1", T0 + 120 + i, p, 10 + i) for i, p in enumerate(HUGE)]
    journal.write_batch(readings, [d for d in decoded if isinstance(d, DeadLetter)])
    clock = FakeClock(T0 + 7200)
    store = stack.enter_context(closing(AlertStore(data / "alerts.db", clock=clock)))
    d = Dispatcher(store, registry, RULES, Config(sender=FakeSender()), clock)
    store.apply(fire("wearable_heart_rate_high", "wr-1", T0))
    store.apply(fire("smoke_alarm", "smk-101", T0))
    files = RegistryFiles(data / "registry", registry.community)
    (data / "registry").mkdir()
    files.write(registry)  # the registry can be changed through the API, for real
    auth = AuthStore(DataDir(data).auth)
    ctx = AppContext(
        settings=Settings(data_dir=data, admin_token=ADMIN_TOKEN),
        journal=journal,
        alerts=d.store,
        registry=registry,
        alerting=d,
        auth=auth,
        registry_admin=RegistryAdmin(registry, files, audit=AuditLog(auth)),
    )
    admin = ctx.registry_admin
    assert admin is not None
    admin.subscribe("journal devices", journal.sync_registry)
    admin.subscribe("routing and paging", d.set_registry)
    admin.subscribe("API", lambda r: setattr(ctx, "registry", r))
    return ctx


HUGE: Final = [
    b'{"steps": ' + b"9" * 400 + b"}",
    b'{"steps": ' + b"9" * 5000 + b"}",
    b'{"heart_rate": 1e400}',
    b'{"heart_rate": -1e400, "spo2": 1e-400}',
    b'{"steps": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"x": ' + b"[" * 300 + b"]" * 300 + b"}",  # parses, but past the serializer's depth
]
"""Payloads a journal may hold from before decode refused them."""


@contextmanager
def running(ctx: AppContext) -> Iterator[AppContext]:
    """``ctx`` with its alerting started (silences, escalation), stopped afterwards."""
    d = ctx.alerting
    assert d is not None
    d.start()
    try:
        yield ctx
    finally:
        d.stop()
    assert d.errors == 0 and d.notifier.errors == 0, "an exception was only logged"


PUSH_INTEGRATION: Final = "ctwing"


def with_push(ctx: AppContext, stack: ExitStack) -> dict[str, str]:
    """Give ``ctx`` the push endpoint's parts: the integration :data:`PUSH_INTEGRATION`
    (native profile) and a real pipeline journaling into ``ctx.journal``, stopped with
    ``stack``. Returns the integration's ``Authorization`` header."""
    inbox = Inbox()
    intake = PushIntake(inbox)
    ctx.ways = WaysIn(ctx.registry)  # each device's one way in, as the service wires it
    if ctx.registry_admin is not None:
        ctx.registry_admin.subscribe("ways in", ctx.ways.set_registry)
    pipeline = Pipeline(
        inbox,
        ctx.journal,
        acknowledge_both(lambda _batch: None, intake),
        on_refused=intake.refused,
        ways=ctx.ways,
    )
    pipeline.start()
    stack.callback(pipeline.stop)
    tokens = PushTokens(ctx.settings.data_dir)
    token = tokens.issue(PUSH_INTEGRATION)
    ctx.push = PushSetup(
        {PUSH_INTEGRATION: Integration(id=PUSH_INTEGRATION, devices=["*"])},
        tokens,
        intake,
        lambda: pipeline.store_health().ok,
        push_profiles(shipped_profiles("y")),
    )
    return {"Authorization": f"Bearer {token}"}
