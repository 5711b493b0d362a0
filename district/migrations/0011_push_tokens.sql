-- 0011: the push integrations' token digests (jiayuan/integrations.py, PushTokens) in the
-- database, so that a token issued by `jiayuan push token` on one instance is taken by every
-- instance of a district (push_tokens.json in a data directory is one instance's). Digests
-- only: a token is a 256-bit random value, shown once at issue. One instance on SQLite keeps
-- the file, as before.

CREATE TABLE push_tokens (
    integration text PRIMARY KEY,
    digest      text NOT NULL,
    hint        text NOT NULL,
    issued_at   double precision NOT NULL
);
