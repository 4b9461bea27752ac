-- A change of the log's context (a registration, an erasure) takes a log
-- position of its own (red team h33, finding 3): the change feed's ids are
-- log positions, and an erasure's rebuild used to publish its moves at the
-- largest position left in the log, lower than ids already served when the
-- erased entity's events were the latest. The store now takes the next
-- position from `log_head` for such a change, in its transaction (no event
-- holds it, as an erased event's), and records it here: a state built from
-- the store reads it first and publishes at or after it.

ALTER TABLE log_context ADD COLUMN pos bigint;

COMMENT ON COLUMN log_context.pos IS
    'The log position the latest registration or erasure took (NULL: none since migration 0015); no event holds it.';
