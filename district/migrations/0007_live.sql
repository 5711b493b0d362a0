-- 0007: the live stream's commit-ordered log of the alert history (alerts/live.py,
-- docs/district.md "The live stream across instances"). Identity values of alert_history are
-- taken when a row is inserted, not when its transaction commits, so another instance reading
-- "id > last seen" can skip an entry committed late. Here every entry gets a `seq` at COMMIT
-- time instead: a deferred constraint trigger runs as its transaction commits, takes a
-- transaction-scoped advisory lock (held until the commit is visible) and numbers the entry,
-- so `seq` order is commit order and a reader of "seq > cursor" never skips one. The trigger
-- also wakes every instance's listener (pg_notify, sent on commit only, never on rollback),
-- and keeps the alert as its transaction left it (`alert`: row_to_json of the alerts row), so
-- another instance shows each change with the alert as it was then, as the writer's own
-- subscribers do, and a catch-up replays the same events the live stream sent.

CREATE TABLE live_changes (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    history_id bigint NOT NULL UNIQUE REFERENCES alert_history (id) ON DELETE CASCADE,
    alert      json NOT NULL
);

-- the entries from before this migration, in id order (one writer committed them in it),
-- with their alerts as they are now
INSERT INTO live_changes (history_id, alert)
SELECT h.id, row_to_json(a) FROM alert_history h JOIN alerts a ON a.id = h.alert_id ORDER BY h.id;

CREATE FUNCTION live_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- 0x6A6C697665 "jlive": one numbering at a time, until this transaction's commit is seen
    PERFORM pg_advisory_xact_lock(457085384293);
    INSERT INTO live_changes (history_id, alert)
    SELECT NEW.id, row_to_json(a) FROM alerts a WHERE a.id = NEW.alert_id;
    -- one wake-up per transaction (PostgreSQL folds identical notifications of one transaction)
    PERFORM pg_notify('jiayuan_live', '{"kind":"alert_history"}');
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER alert_history_live AFTER INSERT ON alert_history
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION live_change();
