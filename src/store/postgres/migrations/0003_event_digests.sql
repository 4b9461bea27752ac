-- Content digests (issue #9, item 4): an id names one event, so an event
-- re-sent under a stored id is a duplicate when its content is the stored
-- event's and a conflict when it is not. The digest says which without
-- reading the stored body. Rows stored before this migration get theirs
-- when the service connects (computed from `body`); until then a NULL
-- digest is computed from the body where it is needed.

ALTER TABLE events ADD COLUMN digest bytea;

COMMENT ON COLUMN events.digest IS
    'SHA-256 of the event''s content (type, time, fields; not id or attributes), 16 bytes, then 8 bytes of the attributes''; computed by Fusion (src/store/digest.rs).';
