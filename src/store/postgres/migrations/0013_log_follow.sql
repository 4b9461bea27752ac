-- Two servers on one database converge (issue #11, item 4): each server
-- follows the log that the others append to (`src/engine/follow.rs`).
--
-- Appends: positions are already commit-ordered (migration 0005: the
-- `log_head` row lock is held from numbering to commit), so a server that
-- has seen every position up to p misses nothing by reading `pos > p`.
-- What is added here is only the wake-up: every statement that inserts
-- into `events` notifies the channel `fusion_log` (delivered at commit,
-- once per transaction), so a follower reads the tail at once instead of
-- at its next poll. A lost notification only delays: servers also poll.
--
-- Context: a registration or an erasure changes how every event scores,
-- so the other servers must build their state again. `log_context.epoch`
-- counts such changes; the store bumps it in the same transaction as the
-- change (and notifies `fusion_log`), and a follower that finds it moved
-- by another server rebuilds.

CREATE TABLE log_context (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch bigint NOT NULL
);
INSERT INTO log_context (epoch) VALUES (0);

COMMENT ON TABLE log_context IS
    'Changes of the log''s context (registrations, erasures) so far, by any server: a server that sees it move rebuilds its state.';

CREATE FUNCTION fusion_log_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fusion_log', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_appended AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION fusion_log_appended();

COMMENT ON FUNCTION fusion_log_appended() IS
    'Wakes the servers following the log (LISTEN fusion_log) when events are committed.';
