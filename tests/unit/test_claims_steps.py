"""Escalation steps have a claim of their own, shorter than a delivery's: a dead instance's due
steps are taken over while the messages it was sending are still its own (two dispatchers on one
PostgreSQL, as in tests/unit/test_claims.py)."""

from __future__ import annotations

import threading
import time

from alerts.config import EscalationConfig, NotifyConfig
from jiayuan.settings import Settings
from tests.alerting import FakeClock
from tests.unit.test_claims import (
    ON_POSTGRESQL,
    N,
    falls_hung_in_sending,
    open_deliveries,
    residents,
    rows,
    steps_taken,
    two,
    until,
)


def test_the_step_claim_comes_from_the_settings() -> None:
    assert Settings(_env_file=None).escalation.claim_s == 5.0
    assert EscalationConfig.model_validate({"claim_s": "2.5"}).claim_s == 2.5


@ON_POSTGRESQL
def test_a_dead_instances_steps_are_taken_over_before_its_messages(alerts_at: str) -> None:
    clock, hang = FakeClock(), threading.Event()
    try:
        with two(alerts_at, clock, residents(), notify=NotifyConfig(workers=4)) as (a, sa, b, sb):
            # instance a hangs in every send: its 4 workers hold 4 messages (claimed for 30 s)
            alert_ids = falls_hung_in_sending(a, sa, hang, clock)
            # step 2 comes due; a claims every step (5 s, the default) and dies before taking them
            clock.advance(180)
            assert len(a.timers.due(clock())) == N
            assert b.poll() == 0  # claimed: b leaves them alone while the claims last
            t0 = time.monotonic()
            until(
                lambda: all(steps_taken(b, i)[-1:] == ["step 2/4"] for i in alert_ids),
                lambda: b.poll(),
            )
            waited = time.monotonic() - t0
            # ... while the messages a handed to its channel are still a's: nobody sends them
            # again before the delivery claim (30 s) runs out
            held = rows(
                b,
                "SELECT count(*) FROM deliveries WHERE claimed_by = 'a'"
                " AND claim_until > extract(epoch from clock_timestamp())"
                " AND status IN ('pending', 'retrying')",
            )
            assert held[0][0] == 4
            assert not any(k in sa.keys for k in sb.keys)
            print(f"\nthe dead instance's steps taken over {waited:.1f} s after (step claim 5 s)")
            hang.set()
            until(lambda: open_deliveries(b) == 0, lambda: b.poll())
            assert a.wait_idle(10) and b.wait_idle(10)
    finally:
        hang.set()
