"""When every recent notification attempt to several people failed, health says nobody can be
reached; one person's broken phone, or an old failure, does not."""

from __future__ import annotations

from alerts.outbox import RECENT_S, failing_for_everyone

NOW = 1_700_000_000.0


def test_nobody_reached_recently_is_a_problem_and_one_success_is_not() -> None:
    failed = [
        ("failed", NOW - 10, "sec-1"),
        ("retrying", NOW - 20, "care-1"),
        ("failed", NOW - 30, "sec-1"),
    ]
    reason = failing_for_everyone(failed, NOW)
    assert reason == "3 attempts to 2 people in 10 min, none sent"
    assert failing_for_everyone([("sent", NOW - 5, "mgr-1"), *failed], NOW) is None


def test_one_person_or_old_failures_or_nothing_attempted_are_not() -> None:
    one = [("failed", NOW - i, "sec-1") for i in range(5)]
    assert failing_for_everyone(one, NOW) is None
    old = [("failed", NOW - RECENT_S - i, f"s{i}") for i in range(1, 6)]
    assert failing_for_everyone(old, NOW) is None
    assert failing_for_everyone([], NOW) is None
