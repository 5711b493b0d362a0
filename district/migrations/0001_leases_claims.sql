-- 0001: what lets several instances share one community's work.

-- The instances alive: each renews its row with every heartbeat; a row whose expires_at has
-- passed is a dead (or cut-off) instance. The number of live rows decides each one's share of
-- the partitions.
CREATE TABLE instances (
    instance_id  text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

-- One row per leased thing: kind 'partition' (a partition of the devices, district.partitions:
-- its holder evaluates their rules) or 'slot' (an MQTT session slot: its holder keeps that
-- session connected). holder has it until expires_at (database time), renewed by its
-- heartbeat. epoch goes up with every change of holder: a write fenced by (holder, epoch)
-- cannot come from a holder that lost the lease.
CREATE TABLE leases (
    kind        text NOT NULL CHECK (kind IN ('partition', 'slot')),
    number      integer NOT NULL CHECK (number >= 0),
    holder      text,
    epoch       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity',
    acquired_at timestamptz,
    PRIMARY KEY (kind, number)
);

-- Work that is due at a time and must be done once by one instance: escalation steps and
-- notifications. key is the work's identity (an alert's step, a delivery), added once.
-- A pending item is claimed by an instance until claim_expires_at; attempts counts claims and
-- is the claim's token: completing, retrying or extending a claim names the attempt it
-- holds, so an instance whose claim expired and was taken cannot complete it any more.
CREATE TABLE work_items (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL,
    key              text NOT NULL UNIQUE,
    community        text NOT NULL DEFAULT '',
    payload          jsonb NOT NULL DEFAULT '{}',
    due_at           timestamptz NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'done', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    claimed_by       text,
    claim_expires_at timestamptz,
    last_error       text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz,
    done_by          text
);
-- The claim query's path: pending items by due time (a claimed one is skipped until its
-- claim expires).
CREATE INDEX work_items_due ON work_items (due_at) WHERE state = 'pending';
