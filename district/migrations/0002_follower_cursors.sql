-- 0002: where each follower of a shared log (the rules worker over the journal, say) has got
-- to, per partition: the (xid, id) of the last row it committed the effects of. Written in the
-- transaction that writes those effects, after district.leases.fence.
CREATE TABLE follower_cursors (
    follower   text NOT NULL,
    partition  integer NOT NULL CHECK (partition >= 0),
    xid        xid8 NOT NULL DEFAULT '0',
    id         bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower, partition)
);
