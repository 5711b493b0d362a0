-- 0014: where a write's readings lie far from the time it was written (ingest/journal_pg.py,
-- "The followers' days"; docs/district.md). Nearly every reading is stored on a day near the
-- moment its transaction writes it: its pts is the device's time, believed up to a day old
-- and two minutes ahead of its receive time, or the receive time itself. A follower therefore
-- reads only the day partitions near the moments its unread transactions wrote, not every day
-- retention keeps. A batch that does not fit (held through a database outage, an instance
-- with its clock far out) records its lowest and highest pts here in its own transaction, so
-- a follower that sees its rows sees this row too, and reads back to those days.
CREATE TABLE journal_outliers (
    xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    low  timestamptz NOT NULL,
    high timestamptz NOT NULL
);
CREATE INDEX journal_outliers_xid ON journal_outliers (xid);
