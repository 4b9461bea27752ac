-- Log positions and the reads of issue #10 (events out of the engine's
-- memory): every event gets a position, assigned at commit in commit order
-- under the one-row lock of `log_head`, so positions are a commit-ordered
-- sequence the same for every server (a sequence alone would hand out
-- values in one order and commit them in another).
--
-- Rows stored before this migration get positions in arrival order (`seq`).
--
-- Indexes, each paid for on every ingested row (docs/postgres.md has the
-- figures, measured with benches/pg_ingest.sh before and after):
-- - `events_pos` (unique): an explanation's events, the tail of the log;
-- - `events_canonical` (time, id): the replay reads the log in canonical
--   order a chunk at a time instead of sorting all of it in memory;
-- - `entity_events` (entity, time, id): an entity's events newest first
--   (timelines, the 360° view) and erasure, without scanning the log.

ALTER TABLE events ADD COLUMN pos bigint;

UPDATE events e SET pos = n.pos
FROM (SELECT id, row_number() OVER (ORDER BY seq) - 1 AS pos FROM events) n
WHERE e.id = n.id;

ALTER TABLE events ALTER COLUMN pos SET NOT NULL;
CREATE UNIQUE INDEX events_pos ON events (pos);
CREATE INDEX events_canonical ON events (time, id);

COMMENT ON COLUMN events.pos IS
    'Log position: assigned at commit, in commit order, from 0; never reused (an erased event leaves a gap).';

CREATE TABLE log_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    pos  bigint NOT NULL
);
INSERT INTO log_head (pos) SELECT coalesce(max(pos) + 1, 0) FROM events;

COMMENT ON TABLE log_head IS
    'The next log position. Every append locks this row to number its events, so positions commit in order.';

CREATE TABLE entity_events (
    entity text COLLATE "C" NOT NULL,
    time   timestamptz NOT NULL,
    id     text COLLATE "C" NOT NULL,
    PRIMARY KEY (entity, time, id)
);
INSERT INTO entity_events (entity, time, id)
SELECT DISTINCT r, time, id FROM events, unnest(refs) AS r;

COMMENT ON TABLE entity_events IS
    'Every (entity, event) pair: an entity''s events in canonical order (time, id).';

COMMENT ON COLUMN events.body IS
    'The whole validated event in the stored format of src/store/body.rs: {"v":1,...} since issue #10; rows without v are v0 (the domain Event''s JSON before), read as v1.';
