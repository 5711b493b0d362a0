-- 0003: the journal on PostgreSQL (ingest/journal_pg.py; docs/district.md, "The journal on
-- PostgreSQL"). The same rows as the SQLite journal's: kind and stream as one number (shape,
-- ingest.journal.SHAPES; + 16 when the payload is JSON text rather than ingest.rowcodec's
-- compact form), times as epoch seconds (float8: the compact payload reads its ts back from
-- the column, exactly), the duplicate key as ingest.journal.dedup_key makes it.
--
-- Partitioned by day on pts (the reading's event time: the device's ts when it was believed,
-- else its receive time; partitions made ahead by district.timeparts.ensure_ahead), so that
-- retention drops whole days. A unique index on a partitioned table must hold the partition
-- key: duplicates are dropped on (device_id, pts, dedup). partition is the device's
-- district.partitions.partition_of, xid the writing transaction (district.follow reads in
-- (xid, id) order, behind every open transaction).
CREATE TABLE readings (
    id        bigint GENERATED ALWAYS AS IDENTITY,
    partition smallint NOT NULL CHECK (partition >= 0),
    xid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    pts       timestamptz NOT NULL,
    device_id text NOT NULL,
    shape     smallint NOT NULL,
    ts        float8 NOT NULL,
    received  float8 NOT NULL,
    seq       bigint,
    dedup     bigint,
    event     text,
    ts_flag   text,
    payload   bytea NOT NULL
) PARTITION BY RANGE (pts);

-- Reads of a device by time, its last reading, and the duplicate drop, in one index.
CREATE UNIQUE INDEX readings_device_pts ON readings (device_id, pts, dedup);
-- Messages without the device's own time (ts = received) are duplicates by key alone, at any
-- time, as in the SQLite journal: the few such rows, looked up by key.
CREATE INDEX readings_untimed ON readings (device_id, dedup)
    WHERE ts = received AND dedup IS NOT NULL;
-- Readings stored on their receive time rather than their own (ingest/journal_pg.py: their
-- day was dropped, or their ts was not believable): found by device and ts all the same.
CREATE INDEX readings_moved ON readings (device_id, ts) WHERE pts <> to_timestamp(ts);
-- The followers' reads: one partition's rows after a cursor, in log order.
CREATE INDEX readings_follow ON readings (partition, xid, id);

-- Retention's floor: partitions ending at or before it were dropped; a reading whose day lies
-- there is stored on its receive time (counted), never in a partition made again.
CREATE TABLE journal_retention (
    id    integer PRIMARY KEY CHECK (id = 1),
    floor timestamptz NOT NULL
);

-- Dead letters are not partitioned: the journal keeps them (as the SQLite journal does), and
-- they are few. A monthly partitioning is a later migration when they are not.
CREATE TABLE dead_letters (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received float8 NOT NULL,
    topic    text NOT NULL,
    reason   text NOT NULL,
    detail   text NOT NULL,
    payload  bytea NOT NULL
);
CREATE INDEX dead_letters_received ON dead_letters (received);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received);

CREATE TABLE devices (
    device_id   text PRIMARY KEY,
    kind        text NOT NULL,
    community   text,
    compound    text,
    building    text,
    unit        text,
    floor       integer,
    room        text,
    resident_id text,
    name        text,
    registered  boolean NOT NULL DEFAULT false,
    first_seen  float8,
    last_seen   float8,
    online      boolean,
    state_since float8,
    fw          text,
    battery     float8
);
CREATE INDEX devices_building ON devices (building, kind);

CREATE TABLE store_probe (
    id integer PRIMARY KEY CHECK (id = 1),
    at float8 NOT NULL
);
