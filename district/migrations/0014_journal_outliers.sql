-- 0014: where a statement's readings lie far from the time it wrote them (ingest/journal_pg.py,
-- DayBound; docs/district.md, "The days a follower reads"). Nearly every reading is stored on
-- a day near the moment its transaction writes it: its pts is the device's time, believed up
-- to a day old and two minutes ahead of its receive time, or the receive time itself. A
-- follower therefore reads only the day partitions near the moments its unread transactions
-- wrote, not every day retention keeps. A statement whose readings do not all fit (a batch
-- held through a database outage, an instance whose clock is far out) records their lowest
-- and highest pts here in its own transaction, so a follower that sees its rows sees this row
-- too, and reads back (or ahead) to those days.
--
-- A trigger, not the journal's statement: every statement that writes through readings
-- records it, an instance of the previous release during a rolling upgrade and a bulk COPY
-- included. (PostgreSQL fires it only for statements on readings itself: nothing may write a
-- day partition directly, nor attach one that holds rows.) The intervals are
-- ingest.journal_pg.LATE_S (a day and an hour) and EARLY_S (a day), checked by
-- tests/integration/test_journal_pg_days.py. The clock is read once the statement's rows are
-- in, after its transaction took its id.
CREATE TABLE journal_outliers (
    xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    low  timestamptz NOT NULL,
    high timestamptz NOT NULL
);
CREATE INDEX journal_outliers_xid ON journal_outliers (xid);

CREATE FUNCTION journal_outliers() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO journal_outliers (low, high)
    SELECT min(pts), max(pts) FROM written
    HAVING min(pts) < clock_timestamp() - interval '90000 seconds'
        OR max(pts) > clock_timestamp() + interval '86400 seconds';
    RETURN NULL;
END
$$;

CREATE TRIGGER readings_outliers AFTER INSERT ON readings
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION journal_outliers();
