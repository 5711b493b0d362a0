"""What Mosquitto does with a shared subscription's messages when a member dies, measured with
two MQTT 5 sessions (QoS 1, manual acknowledgement) on ``$share/district/exp/#`` — and the
district's way of stranding nothing: a survivor adopts the dead member's session.

Each test publishes 20 messages while both members live (``a*``: 10 each, round robin), kills
one member without a DISCONNECT (``b*`` are published after), and looks at where everything
went. Sentinels (``s*``) published last mark the point by which the broker has dealt with the
death: what a member was going to get from before, it has by then. docs/district.md records
the figures and the design. The assertions pin Mosquitto's behaviour: if a new version starts
handing a dead member's messages on, these tests say so.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.broker import Broker
from tests.mqtt import Publisher, wait_for
from tests.shared_members import Member

pytestmark = pytest.mark.network

A = [f"a{i}" for i in range(20)]
B = [f"b{i}" for i in range(20)]


@pytest.fixture
def pub(broker: Broker) -> Iterator[Publisher]:
    p = Publisher(broker, "pub")
    try:
        yield p
    finally:
        p.close()


def publish(pub: Publisher, payloads: list[str]) -> None:
    for x in payloads:
        pub.publish(f"exp/{x[0]}/{x}", x)
    pub.wait_acked()


def two_members(
    broker: Broker, pub: Publisher, expiry_s: int, m2_acks: bool
) -> tuple[Member, Member]:
    m1 = Member(broker, "m1", expiry_s=expiry_s)
    m2 = Member(broker, "m2", expiry_s=expiry_s, acking=m2_acks)
    publish(pub, A)
    wait_for(lambda: len(m1.received()) + len(m2.received()) == len(A))
    assert len(m1.received()) == len(m2.received()) == 10  # round robin
    return m1, m2


def only(prefix: str, got: list[str]) -> set[str]:
    return {x for x in got if x.startswith(prefix)}


def test_a_dead_members_persistent_session_keeps_being_fed_its_share(
    broker: Broker, pub: Publisher
) -> None:
    m1, m2 = two_members(broker, pub, expiry_s=3600, m2_acks=True)
    m2.kill()
    publish(pub, B)
    wait_for(lambda: len(only("b", m1.received())) == 10)
    publish(pub, ["s0", "s1", "s2", "s3"])
    wait_for(lambda: len(only("s", m1.received())) == 2)  # half the sentinels went to m2 too
    assert len(only("b", m1.received())) == 10  # the other 10 wait for m2
    back = Member(broker, "m2", expiry_s=3600, clean=False)
    wait_for(lambda: len(back.received()) == 12)
    assert back.session_present
    assert only("b", back.received()) | only("b", m1.received()) == set(B)
    back.close()
    m1.close()


def test_without_a_session_the_survivor_gets_everything_but_in_flight_messages_are_lost(
    broker: Broker, pub: Publisher
) -> None:
    m1, m2 = two_members(broker, pub, expiry_s=0, m2_acks=False)
    in_flight = only("a", m2.received())  # 10, never acknowledged
    m2.kill()
    publish(pub, [*B, "s0", "s1", "s2", "s3"])
    wait_for(lambda: len(m1.received()) == 10 + 20 + 4)  # every b and s: no session to feed
    assert only("a", m1.received()).isdisjoint(in_flight)  # m2's unacknowledged: dropped
    back = Member(broker, "m2", expiry_s=0, clean=False)
    assert not back.session_present and back.received() == []
    back.close()
    m1.close()


def test_a_short_session_expiry_loses_what_was_queued_for_the_dead_member(
    broker: Broker, pub: Publisher
) -> None:
    m1, m2 = two_members(broker, pub, expiry_s=2, m2_acks=False)
    in_flight = only("a", m2.received())
    m2.kill()
    publish(pub, B)  # within the 2 s: half of them are queued for m2's session
    rounds = iter(range(10_000))

    def session_gone() -> bool:  # both of a pair reach m1: nobody else in the group
        n = next(rounds)
        publish(pub, [f"s{n}x", f"s{n}y"])
        wait_for(lambda: len(only(f"s{n}", m1.received())) >= 1)
        return {f"s{n}x", f"s{n}y"} <= set(m1.received())

    wait_for(session_gone, timeout=60, interval=0.5)
    got = set(m1.received())
    assert len(got & set(B)) == 10  # the other 10 b went down with the session
    assert got.isdisjoint(in_flight)
    back = Member(broker, "m2", expiry_s=2, clean=False)
    assert not back.session_present and back.received() == []
    back.close()
    m1.close()


def test_adopting_a_dead_members_session_strands_nothing(broker: Broker, pub: Publisher) -> None:
    """The district's design: sessions are slots leased in PostgreSQL, persistent; when a
    slot's holder dies, a survivor takes the slot's lease and resumes its session
    (clean_start=False): it gets the queued share and the unacknowledged messages again
    (flagged DUP; the journal drops what it had stored already)."""
    m1, m2 = two_members(broker, pub, expiry_s=3600, m2_acks=False)
    in_flight = only("a", m2.received())
    m2.kill()
    publish(pub, B)
    adopted = Member(broker, "m2", expiry_s=3600, clean=False)  # a survivor, for the dead slot
    assert adopted.session_present
    publish(pub, ["s0", "s1", "s2", "s3"])
    everything = set(A) | set(B) | {"s0", "s1", "s2", "s3"}
    wait_for(lambda: set(m1.received()) | set(adopted.received()) == everything)
    assert only("a", adopted.received()) == in_flight
    assert adopted.dups == len(in_flight)
    adopted.close()
    m1.close()
