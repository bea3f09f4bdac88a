-- A staged key is confirmed only by a JoinRequest that verifies under it (PROTOCOL.md §7), in the
-- join's own transaction: no join waits for a later confirmation, so its slot and DevAddr are no
-- longer kept.
ALTER TABLE devices DROP COLUMN last_join_slot;
ALTER TABLE devices DROP COLUMN last_join_dev_addr;
