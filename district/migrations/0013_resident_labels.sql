-- 0013: the names caretakers give their residents (registry/labels.py) in the database, so
-- that a name given through one instance of a district shows on every instance's console
-- (resident_labels.db in a data directory is one instance's). One instance on SQLite keeps the
-- file, as before. Never logged; shown only to the resident's caretakers, managers and admins.

CREATE TABLE resident_labels (
    resident_id text PRIMARY KEY,
    label       text NOT NULL,
    set_by      text NOT NULL,
    set_at      double precision NOT NULL
);
