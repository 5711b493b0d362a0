-- 0009: a third kind of lease, 'urgent-slot': the MQTT session slots of the urgent streams
-- (falls, SOS, alarms), leased apart from the telemetry slots so that every instance's share
-- is balanced per kind (docs/district.md, "session slots"; jiayuan/slots.py).
ALTER TABLE leases DROP CONSTRAINT leases_kind_check;
ALTER TABLE leases ADD CONSTRAINT leases_kind_check
    CHECK (kind IN ('partition', 'slot', 'urgent-slot'));
