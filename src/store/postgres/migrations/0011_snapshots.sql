-- Snapshots of the derived state (issue 10): a start loads the latest one
-- and folds only the log after `position`. The bytes are the whole
-- snapshot, header included (its own checksum); the columns repeat what
-- its header says, for operators. An erasure deletes every row.

CREATE TABLE snapshots (
    id       bigserial PRIMARY KEY,
    position bigint NOT NULL,
    events   bigint NOT NULL,
    format   integer NOT NULL,
    model    bytea NOT NULL,
    snapshot bytea NOT NULL,
    created  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX snapshots_newest ON snapshots (position DESC, id DESC);

COMMENT ON TABLE snapshots IS
    'Snapshots of the scoring state (the newest 2 are kept); deleted by every erasure.';
COMMENT ON COLUMN snapshots.position IS 'The largest log position the snapshot covers.';
COMMENT ON COLUMN snapshots.model IS 'SHA-256 of the scoring model it was made with.';
