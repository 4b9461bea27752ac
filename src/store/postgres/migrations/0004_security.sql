-- API keys, the service's own secrets and the erasure audit (issue 12).
-- Every server on the database reads the same keys; each polls api_keys
-- every couple of seconds, so a revocation reaches all of them within seconds.

CREATE TABLE api_keys (
    id            text COLLATE "C" PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('ingest', 'read', 'admin')),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    created       timestamptz NOT NULL,
    expires       timestamptz,
    revoked       timestamptz,
    last_used     timestamptz
);

COMMENT ON TABLE api_keys IS
    'Fusion API keys (fusion keys create/list/revoke). The secret itself is never stored.';
COMMENT ON COLUMN api_keys.role IS 'ingest, read or admin; admin includes the others.';
COMMENT ON COLUMN api_keys.secret_sha256 IS 'SHA-256 of the key''s secret (32 random bytes, so no KDF is needed).';
COMMENT ON COLUMN api_keys.created IS 'When the key was created.';
COMMENT ON COLUMN api_keys.expires IS 'After this the key is refused; NULL: never expires.';
COMMENT ON COLUMN api_keys.revoked IS 'When the key was revoked; NULL: not revoked.';
COMMENT ON COLUMN api_keys.last_used IS 'Last use, written at most once a minute per key.';

CREATE TABLE fusion_secrets (
    name    text PRIMARY KEY,
    value   bytea NOT NULL CHECK (length(value) = 32),
    created timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE fusion_secrets IS
    'Secrets every Fusion server on this database shares: the session signing key, the erasure-audit salt. Keep private.';
COMMENT ON COLUMN fusion_secrets.name IS 'sessions or erasure-salt.';
COMMENT ON COLUMN fusion_secrets.value IS '32 random bytes, created by the first server that needed them.';
COMMENT ON COLUMN fusion_secrets.created IS 'When the secret was created.';

CREATE TABLE erasure_audit (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL,
    key_id       text,
    subject_hash text NOT NULL,
    events       bigint
);

COMMENT ON TABLE erasure_audit IS
    'Every erasure (DELETE /v1/entities/{id}): who, when, how many events. Written before the erasure runs.';
COMMENT ON COLUMN erasure_audit.at IS 'When the erasure was asked for.';
COMMENT ON COLUMN erasure_audit.key_id IS 'The API key that asked (public id); NULL when the service ran without keys.';
COMMENT ON COLUMN erasure_audit.subject_hash IS 'HMAC-SHA256 of the erased id under the erasure-salt secret, hex; never the id itself.';
COMMENT ON COLUMN erasure_audit.events IS 'Events removed; NULL if the erasure did not complete.';
