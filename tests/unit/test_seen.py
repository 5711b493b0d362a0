"""The last-seen bookkeeping both journals share (:mod:`ingest.seen`): what waits for a write of
``devices``, when it is due, and the device states a batch reports."""

from __future__ import annotations

from ingest.payloads import Reading
from ingest.seen import SEEN_FLUSH_S, SeenDevices, device_states
from tests.clock import FakeClock


def _reading(device: str, received: float, **kw: object) -> Reading:
    values = {"battery": kw.pop("battery")} if "battery" in kw else {}
    return Reading("y", "wearable", device, "telemetry", received, received, None, values, **kw)  # type: ignore[arg-type]


def test_the_latest_time_and_battery_of_each_device_wait_until_taken_by_device_id() -> None:
    seen = SeenDevices(clock=FakeClock())
    seen.note([_reading("w-2", 10.0, battery=80), _reading("w-1", 12.0)])
    seen.note([_reading("w-2", 9.0), _reading("w-2", 11.0, battery=79), _reading("w-1", 11.0)])
    assert len(seen) == 2
    assert seen.take() == [
        ("w-1", "wearable", "y", 12.0, None),
        ("w-2", "wearable", "y", 11.0, 79.0),
    ]
    assert len(seen) == 0 and seen.take() == []


def test_a_write_is_due_after_the_interval_or_when_too_many_devices_wait() -> None:
    clock = FakeClock()
    seen = SeenDevices(most=3, clock=clock)
    seen.note([_reading("w-1", 1.0), _reading("w-2", 1.0)])
    assert not seen.due() and seen.waiting() and not seen.waiting(if_due=True)
    clock.advance(SEEN_FLUSH_S + 0.1)
    assert seen.due() and seen.waiting(if_due=True)
    seen.take()
    assert not seen.due() and not seen.waiting()
    seen.note([_reading(f"w-{i}", 2.0) for i in range(3)])
    assert seen.due()


def test_states_come_by_device_each_in_arrival_order() -> None:
    def status(device: str, at: float, event: str, fw: str | None = None) -> Reading:
        return Reading(
            "y", "smoke", device, "status", at, at, None, {}, event=event,
            attrs={"fw": fw} if fw else {},
        )  # fmt: skip

    batch = [
        status("s-2", 1.0, "online"),
        _reading("s-1", 1.5),
        status("s-1", 2.0, "offline", "1.2"),
        status("s-2", 3.0, "offline"),
    ]
    assert device_states(batch) == [
        ("s-1", False, 2.0, "1.2"),
        ("s-2", True, 1.0, None),
        ("s-2", False, 3.0, None),
    ]
