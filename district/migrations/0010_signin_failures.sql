-- 0010: failed sign-ins counted in the database, so that every instance of a district counts
-- the same failures (jiayuan/auth/limiter.py, SharedSignInLimiter): an attacker spreading
-- password guesses over N instances gets the free attempts once, not N times. One row per
-- account and per client address; times are epoch seconds of the database's clock, so the
-- instances' clocks do not matter. Rows idle for longer than the limiter forgets (15 min) are
-- deleted by the hourly retention (AuthStore.prune). One instance on SQLite keeps the counts in
-- memory, as before.

CREATE TABLE signin_failures (
    kind         text NOT NULL CHECK (kind IN ('account', 'address')),
    key          text NOT NULL,
    failures     integer NOT NULL,
    last         double precision NOT NULL,
    locked_until double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, key)
);
CREATE INDEX signin_failures_last ON signin_failures (last);
