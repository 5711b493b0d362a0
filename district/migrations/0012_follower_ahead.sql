-- 0012: urgent rows evaluated ahead of the horizon (district/follow.py, ingest/journal_pg.py
-- JournalFollower; docs/district.md, "The journal follower on PostgreSQL"). A follower reads a
-- partition behind pg_snapshot_xmin, so a fall committed while an older telemetry transaction
-- is still open would wait for it; the rules worker reads committed urgent rows (events and
-- statuses) above that horizon at once, and records each row it evaluated so in the
-- transaction that commits their effects. The horizon-ordered read skips them when it reaches
-- them; the entries go once the follower's cursor has passed them (the same transaction).
CREATE TABLE follower_ahead (
    follower  text NOT NULL,
    partition integer NOT NULL CHECK (partition >= 0),
    xid       xid8 NOT NULL,
    id        bigint NOT NULL,
    PRIMARY KEY (follower, partition, xid, id)
);

-- The urgent rows of the journal (shape & 3: the stream, 0 telemetry, 1 event, 2 status), by
-- writing transaction: the read above the horizon looks at these few rows only.
CREATE INDEX readings_urgent ON readings (xid) INCLUDE (partition, id) WHERE shape & 3 <> 0;
