-- Snapshots in chunks (issue 10, task h32): a snapshot is as large as the
-- scoring state (over 3 GB at 10M events of the issue's shape), so its
-- bytes are written and read a chunk at a time, never as one value. A
-- snapshot row is kept only once all its chunks are in (one transaction).
-- Rows of the older format held their bytes whole; a start would ignore
-- them (another format version), so they go.

DELETE FROM snapshots;
ALTER TABLE snapshots DROP COLUMN snapshot;

CREATE TABLE snapshot_chunks (
    snapshot bigint NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    seq      integer NOT NULL,
    bytes    bytea NOT NULL,
    PRIMARY KEY (snapshot, seq)
);

COMMENT ON TABLE snapshot_chunks IS
    'The bytes of each snapshot, in order of seq (at most 1 MiB each); deleted with it.';
