"""The one retry policy: what an operator reads in the settings is what the service waits."""

from base.retry import Backoff


def test_delays_double_from_the_first_and_stop_at_the_cap() -> None:
    b = Backoff(first_s=2.0, max_s=120.0)
    assert [b.delay(n) for n in range(1, 9)] == [2, 4, 8, 16, 32, 64, 120, 120]


def test_jitter_only_adds_and_never_passes_the_cap() -> None:
    b = Backoff(first_s=1.0, max_s=30.0, jitter=0.5)
    for n in range(1, 40):
        d = b.delay(n)
        assert min(30.0, 2.0 ** (n - 1)) <= d <= 30.0
