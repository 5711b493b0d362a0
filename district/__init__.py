"""The district: several jiayuan instances sharing one PostgreSQL (issue 12).

What every stage of a multi-instance installation shares, below them all (only ``base`` is
imported here), so that the journal's, the rules worker's and the notifier's PostgreSQL
backends can use it:

- :mod:`district.pg` — connections and the pool, with the keepalive settings a lease needs;
- :mod:`district.migrate` — the versioned SQL files in ``migrations/``, applied at start;
- :mod:`district.partitions` — a device's partition (a stable hash);
- :mod:`district.leases` — partitions and MQTT session slots held by lease rows, renewed by a
  heartbeat, balanced across the live instances, fenced by an epoch;
- :mod:`district.follow` — reading a log that several instances write, skipping nothing, with
  per-partition cursors;
- :mod:`district.claims` — due work (escalation steps, notifications) claimed with
  ``FOR UPDATE SKIP LOCKED`` and a claim that expires with its holder.
- :mod:`district.live` — LISTEN/NOTIFY: committed changes heard by every instance;
- :mod:`district.timeparts` — tables partitioned by day or month, retention by dropping them.

docs/district.md is the design, and the measurements behind it.
"""
