"""Test helpers for the alerting stages: a small community with a duty roster, a fake clock, a
recording sender, and transitions as the rule engine would raise them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from alerts import AlertStore
from alerts.dispatch import Config, Dispatcher
from alerts.notify import SendResult
from registry.cells import parse_shift
from registry.models import Building, Device, Registry, Resident, Staff
from rules.model import builtin_pack, load_rules
from rules.transitions import Transition
from tests import clock

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=TZ).timestamp()
"""A Wednesday, 10:00 in Lanzhou: the day shifts are on."""
NIGHT = datetime(2026, 11, 25, 23, 0, tzinfo=TZ).timestamp()
RULES = load_rules([builtin_pack()])


class FakeClock(clock.FakeClock):
    def __init__(self, t: float = T0) -> None:
        super().__init__(t)


@dataclass
class FakeSender:
    """Records what would be sent. ``results[url]``: outcomes to give, in order (then ok);
    ``block[url]``: an event the send waits for (a hung channel)."""

    results: dict[str, list[SendResult]] = field(default_factory=dict)
    block: dict[str, threading.Event] = field(default_factory=dict)
    sent: list[tuple[str, str, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    """The idempotency key of each message sent (the delivery's id), in order."""
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, url: str, title: str, body: str, *, key: str = "") -> SendResult:
        with self.cond:
            self.calls.append(url)
        gate = self.block.get(url)
        if gate is not None:
            gate.wait(30)
        with self.cond:
            queue = self.results.get(url)
            result = queue.pop(0) if queue else SendResult(True)
            if result.ok:
                self.sent.append((url, title, body))
                self.keys.append(key)
            self.cond.notify_all()
            return result

    def to(self, staff_id: str) -> list[tuple[str, str, str]]:
        with self.cond:
            return [s for s in self.sent if s[0] == f"fake://{staff_id}"]

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"sender: condition not met; sent {self.sent}")
                self.cond.wait(left)


def staff(sid: str, role: str, shifts: tuple[str, ...] = (), **kw: Any) -> Staff:
    return Staff(
        staff_id=sid,
        name=f"{role} {sid}",
        role=role,
        channels=kw.pop("channels", (f"fake://{sid}",)),
        shifts=tuple(parse_shift(s) for s in shifts),
        **kw,
    )


def community() -> Registry:
    """B01, B02 in compound C01; B03 in C02. Residents r-1, r-2 (B01, floor 1), r-3 (B03)."""
    day = ("daily 08:00-17:00",)
    return Registry(
        "y",
        buildings=[
            Building(building="B01", compound="C01"),
            Building(building="B02", compound="C01"),
            Building(building="B03", compound="C02"),
        ],
        devices=[
            Device(device_id="wr-1", kind="wearable", compound="C01", building="B01",
                   unit="1-1-101", floor=1, resident_id="r-1"),
            Device(device_id="wr-2", kind="wearable", compound="C01", building="B01",
                   unit="1-1-102", floor=1, resident_id="r-2"),
            Device(device_id="wr-3", kind="wearable", compound="C02", building="B03",
                   unit="3-1-101", floor=1, resident_id="r-3"),
            *[Device(device_id=f"smk-{u}", kind="smoke", compound="C01", building="B01",
                     unit=f"1-1-{u}", floor=int(u[0])) for u in ("101", "102", "201")],
            *[Device(device_id=f"smk-B02-{i}", kind="smoke", compound="C01", building="B02",
                     unit=f"2-1-{i}01", floor=i) for i in range(1, 9)],
            Device(device_id="gate-C01-main", kind="gate", compound="C01"),
        ],
        residents=[
            Resident(resident_id="r-1", building="B01", unit="1-1-101", floor=1,
                     caretakers=("care-1", "care-2", "care-night")),
            Resident(resident_id="r-2", building="B01", unit="1-1-102", floor=1,
                     caretakers=("care-2",)),
            Resident(resident_id="r-3", building="B03", unit="3-1-101", floor=1,
                     caretakers=("care-3",)),
        ],
        staff=[
            staff("care-1", "caretaker", day, buildings=("B01",), compounds=("C01",)),
            staff("care-2", "caretaker", day, buildings=("B01",), compounds=("C01",)),
            staff("care-3", "caretaker", day, buildings=("B03",), compounds=("C02",)),
            staff("care-night", "caretaker", ("daily 17:00-08:00",), buildings=("B01", "B02"),
                  compounds=("C01",)),
            staff("sec-C01", "security", ("daily 00:00-24:00",), buildings=("B01", "B02"),
                  compounds=("C01",)),
            staff("sec-C02", "security", ("daily 00:00-24:00",), buildings=("B03",),
                  compounds=("C02",)),
            staff("sec-desk", "security"),
            staff("mgr-1", "manager", ("Mon-Fri 08:30-17:30",)),
            staff("mgr-2", "manager", ("Mon-Fri 17:30-08:30", "Sat-Sun 00:00-24:00")),
            staff("ops-1", "operator"),
        ],
    )  # fmt: skip


def labels(device_id: str, registry: Registry | None = None) -> dict[str, str]:
    d = (registry or community()).device(device_id)
    if d is None:
        return {"community": "y"}
    out = {"community": "y", "compound": d.compound}
    for k, v in (("building", d.building), ("unit", d.unit), ("resident_id", d.resident_id)):
        if v:
            out[k] = v
    return out


def fire(rule_id: str, device_id: str, at: float = T0, action: str = "fire") -> Transition:
    """A transition of a rule of the built-in pack, as the engine would raise it."""
    rule = next(r for r in RULES if r.id == rule_id)
    return Transition(
        action="fire" if action == "fire" else "clear",
        rule_id=rule.id,
        device_id=device_id,
        kind=rule.kind,
        severity=rule.severity,
        signal=rule.signal,
        route=rule.route,
        at=at,
        summary=rule.summary,
        value=88.0,
        labels=labels(device_id),
    )


def clear(rule_id: str, device_id: str, at: float = T0) -> Transition:
    return fire(rule_id, device_id, at, action="clear")


@contextmanager
def dispatcher(
    path: Path | str,
    clock: FakeClock,
    sender: FakeSender,
    registry: Registry | None = None,
    **config: Any,
) -> Iterator[Dispatcher]:
    """A started dispatcher over an alert store at ``path`` (a SQLite file's path or a PostgreSQL
    URL: the ``alerts_at`` fixture's; both closed afterwards)."""
    store = AlertStore(path, clock=clock)
    d = Dispatcher(store, registry or community(), RULES, Config(sender=sender, **config), clock)
    d.start()
    try:
        yield d
    finally:
        d.stop()
        store.close()
    assert d.errors == 0 and d.notifier.errors == 0, "an exception was only logged"


def settle(d: Dispatcher, timeout: float = 10.0) -> None:
    """Every queued change handled and every due message sent (a deadline, not a timing)."""
    assert d.wait_idle(timeout), "dispatcher did not settle"


def notes(d: Dispatcher, alert_id: int, *actions: str) -> list[str]:
    return [h.note for h in d.store.get(alert_id).history if not actions or h.action in actions]


def sse(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Server-sent events from a line stream (``{"comment": …}`` for comment lines)."""
    event: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line == "":
            if event.keys() - {"retry"}:
                yield event
            event = {}
        else:
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")
