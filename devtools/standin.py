"""A stand-in district instance for the tests and the lease measurements, run as a real process:
it holds partitions by lease and works through the claimable queue, as ``jiayuan run`` will on
PostgreSQL until the service is wired to district/ (docs/district.md).

    python -m devtools.standin URL INSTANCE_ID --partitions 8 --ttl 2 --claim 3 [--hold N]
        [--advisory KEY] [--slots K --mqtt-port PORT --slot-accounts FILE]

Each claimed ``notification`` is "sent" by inserting a row into ``sent`` in the transaction that
completes the claim (the receipt commits with the completion). ``--hold N``: claim up to N items
once and never finish them, extending each claim as a slow send does (an instance that dies in
the middle of sending), while the lease heartbeat goes on. ``--advisory KEY``: also take the
session advisory lock KEY on a connection of its own and keep it (to compare the two ways of
holding a partition).

``--slots K``: also hold MQTT session slots by lease (docs/district.md, "session slots") and keep
one persistent MQTT 5 session per held slot on ``$share/jiayuan/exp/#`` (Mosquitto on
127.0.0.1:PORT; FILE maps each slot number to its account, whose name is the client id). Each
message is stored in ``stored`` (unique payload: the journal's duplicate drop) and logged in
``standin_deliveries``, in one transaction, and acknowledged after the commit; every connection is
logged in ``slot_connects`` with the broker's session-present flag.

It prints ``ready`` once it holds what it was asked to, and runs until killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg_pool import ConnectionPool

from district.claims import WorkQueue
from district.leases import SLOT, Changes, LeaseKeeper
from district.pg import connect, open_pool

SENT_TABLE = (
    "CREATE TABLE IF NOT EXISTS sent ("
    " key text NOT NULL, by_instance text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
)


SLOT_TABLES = (
    "CREATE TABLE IF NOT EXISTS stored (payload text PRIMARY KEY, by_instance text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS standin_deliveries (payload text NOT NULL, slot integer NOT NULL,"
    " by_instance text NOT NULL, dup boolean NOT NULL);"
    "CREATE TABLE IF NOT EXISTS slot_connects (slot integer NOT NULL, by_instance text NOT NULL,"
    " session_present boolean NOT NULL, at timestamptz NOT NULL DEFAULT now())"
)
SLOT_FILTER = "$share/jiayuan/exp/#"
SESSION_EXPIRY_S = 86_400


class SlotSessions:
    """The MQTT sessions of the slots this instance holds, following its slot leases."""

    def __init__(
        self, pool: ConnectionPool, instance_id: str, port: int, accounts: dict[int, list[str]]
    ) -> None:
        self.pool = pool
        self.instance_id = instance_id
        self.port = port
        self.accounts = accounts
        self.clients: dict[int, mqtt.Client] = {}
        self._lock = threading.Lock()

    def on_change(self, changes: Changes) -> None:
        for n in changes.lost:
            self.close(n)
        for lease in changes.gained:
            self.open(lease.number)

    def before_release(self, numbers: list[int]) -> None:
        for n in numbers:  # unacknowledged messages stay in the session for the next holder
            self.close(n)

    def open(self, slot: int) -> None:
        user, password = self.accounts[slot]
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=user,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        c.username_pw_set(user, password)
        c.on_connect = lambda cl, _u, flags, _rc, _p: self._connected(slot, cl, flags)
        c.on_message = lambda cl, _u, msg: self._message(slot, cl, msg)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        c.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        c.loop_start()
        with self._lock:
            self.clients[slot] = c

    def close(self, slot: int) -> None:
        with self._lock:
            c = self.clients.pop(slot, None)
        if c is not None:
            c.disconnect()
            c.loop_stop()

    def _connected(self, slot: int, c: mqtt.Client, flags: object) -> None:
        present = bool(getattr(flags, "session_present", False))
        with self.pool.connection() as db:
            db.execute(
                "INSERT INTO slot_connects (slot, by_instance, session_present)"
                " VALUES (%s, %s, %s)",
                (slot, self.instance_id, present),
            )
        if not present:
            c.subscribe(SLOT_FILTER, qos=1)

    def _message(self, slot: int, c: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        payload = msg.payload.decode()
        with self.pool.connection() as db, db.transaction():
            db.execute(
                "INSERT INTO stored (payload, by_instance) VALUES (%s, %s)"
                " ON CONFLICT (payload) DO NOTHING",
                (payload, self.instance_id),
            )
            db.execute(
                "INSERT INTO standin_deliveries (payload, slot, by_instance, dup)"
                " VALUES (%s, %s, %s, %s)",
                (payload, slot, self.instance_id, bool(msg.dup)),
            )
        c.ack(msg.mid, msg.qos)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("instance_id")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--ttl", type=float, default=2.0)
    p.add_argument("--claim", type=float, default=3.0)
    p.add_argument("--hold", type=int, default=0)
    p.add_argument("--advisory", type=int, default=None)
    p.add_argument("--slots", type=int, default=0)
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--slot-accounts", type=Path, default=None)
    args = p.parse_args(argv)
    pool = open_pool(args.url, name=args.instance_id, max_size=3 + args.slots)
    if args.advisory is not None:
        locked = connect(args.url, name=f"{args.instance_id}-advisory", autocommit=True)
        locked.execute("SELECT pg_advisory_lock(%s)", (args.advisory,))
    with pool.connection() as db:
        db.execute(SENT_TABLE)
        if args.slots:
            db.execute(SLOT_TABLES)
    if args.slots:
        accounts = {int(k): v for k, v in json.loads(args.slot_accounts.read_text()).items()}
        sessions = SlotSessions(pool, args.instance_id, args.mqtt_port, accounts)
        LeaseKeeper(
            pool,
            args.instance_id,
            count=args.slots,
            kind=SLOT,
            ttl_s=args.ttl,
            before_release=sessions.before_release,
            on_change=sessions.on_change,
        ).start()
    keeper = LeaseKeeper(pool, args.instance_id, count=args.partitions, ttl_s=args.ttl)
    keeper.start()
    queue = WorkQueue(pool, args.instance_id, claim_s=args.claim)
    if args.hold:
        while not (held := queue.claim(["notification"], limit=args.hold)):
            time.sleep(0.05)
        print("ready", flush=True)
        # holding the claims as a slow send holds them (extended well within ``--claim``), the
        # lease heartbeat going on: killed in the middle of the send. Without the extension the
        # claims lapse after ``--claim`` seconds and another instance sends them while this one
        # is still alive (what a slow machine made of the takeover test once).
        while True:
            time.sleep(args.claim / 3)
            for c in held:
                if not queue.extend(c):
                    raise SystemExit(f"{args.instance_id}: lost the claim on {c.key}")
    print("ready", flush=True)
    while True:
        claims = queue.claim(["notification"], limit=5)
        for c in claims:
            with pool.connection() as db, db.transaction():
                if queue.complete(c, db):
                    db.execute(
                        "INSERT INTO sent (key, by_instance) VALUES (%s, %s)",
                        (c.key, args.instance_id),
                    )
        if not claims:
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
