-- The event log and entity registrations: the source of truth.
-- Ids compare byte-wise (COLLATE "C") so the canonical order (time, id) is the
-- same as the embedded store's whatever the database's locale.

CREATE TABLE events (
    id   text COLLATE "C" PRIMARY KEY,
    time timestamptz NOT NULL,
    type text NOT NULL,
    refs text[] COLLATE "C" NOT NULL,
    body jsonb NOT NULL,
    seq  bigserial NOT NULL
);

-- No index besides the primary key here: every index is paid for on each
-- ingested row (measured on 300,000 rows, an index on (time, id) and a GIN
-- index on refs each made a bare insert 40-85% slower). Revised by
-- 0005_log_positions (issue #10): once the events left the service's
-- memory, reads need `pos`, (time, id) and entity -> events indexes; end to
-- end `fusion ingest` pays about 15% for them (docs/postgres.md).

COMMENT ON TABLE events IS
    'Fusion event log: every accepted event once, idempotent by id. Append-only except for erasure.';
COMMENT ON COLUMN events.id IS 'The sender''s event id (idempotency key).';
COMMENT ON COLUMN events.time IS 'Event time (when it happened, not when it arrived).';
COMMENT ON COLUMN events.type IS 'Event type as on the wire: purchase, post, review, service, follow, ...';
COMMENT ON COLUMN events.refs IS 'Every entity id the event names, in any role (person, brand, target, occasion, performers).';
COMMENT ON COLUMN events.body IS 'The whole validated event as Fusion stores it (JSON of the domain Event).';
COMMENT ON COLUMN events.seq IS 'Arrival order; not used for scoring, which follows (time, id).';

CREATE TABLE entities (
    id   text COLLATE "C" PRIMARY KEY,
    kind text NOT NULL,
    body jsonb NOT NULL
);

COMMENT ON TABLE entities IS 'Explicitly registered entities (PUT /v1/entities/{id}).';
COMMENT ON COLUMN entities.kind IS 'consumer, influencer, brand or occasion.';
COMMENT ON COLUMN entities.body IS 'The whole registration (JSON of the domain Entity).';
