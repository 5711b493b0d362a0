-- 0006: escalation steps and deliveries claimed by one instance at a time (alerts/claims.py).
-- A due timer or an open delivery is claimed with FOR UPDATE SKIP LOCKED (timers) or a
-- conditional UPDATE of its row (deliveries): claimed_by holds it until claim_until (epoch
-- seconds, the database's clock); claims counts the claims and is the claim's token: the
-- step's compare-and-set and the delivery's receipt name it, so an instance whose claim
-- expired and was taken by another cannot complete it any more. SQLite (one instance) has the
-- same columns and leaves them empty.
ALTER TABLE escalations
    ADD COLUMN claimed_by  text,
    ADD COLUMN claim_until double precision,
    ADD COLUMN claims      integer NOT NULL DEFAULT 0;

ALTER TABLE deliveries
    ADD COLUMN claimed_by  text,
    ADD COLUMN claim_until double precision,
    ADD COLUMN claims      integer NOT NULL DEFAULT 0;
