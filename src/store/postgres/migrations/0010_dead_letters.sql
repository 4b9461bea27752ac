-- The dead-letter store (issue 16): every rejected event and malformed body,
-- kept for inspection and replay (GET/POST/DELETE /v1/rejected). Bounded by
-- a retention (count and age) that each write applies; what it dropped is
-- counted in dead_letter_counters.

CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    route       text NOT NULL,
    key_id      text,
    reason      text NOT NULL CHECK (reason IN ('malformed', 'unmapped', 'invalid', 'conflict')),
    fields      text[] NOT NULL,
    letter      jsonb NOT NULL
);

CREATE INDEX dead_letters_received_at ON dead_letters (received_at);

COMMENT ON TABLE dead_letters IS
    'Rejected events and malformed bodies (GET /v1/rejected). Never holds an API key.';
COMMENT ON COLUMN dead_letters.received_at IS 'When the request came in.';
COMMENT ON COLUMN dead_letters.route IS 'The route pattern (/v1/events, /v1/batch, ...) or fusion ingest.';
COMMENT ON COLUMN dead_letters.key_id IS 'Public id of the API key used; NULL without keys.';
COMMENT ON COLUMN dead_letters.reason IS 'malformed, unmapped, invalid or conflict.';
COMMENT ON COLUMN dead_letters.fields IS 'The fields its errors name.';
COMMENT ON COLUMN dead_letters.letter IS 'The whole letter: raw text as sent (redacted), errors, request, context.';

CREATE TABLE dead_letter_counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);

COMMENT ON TABLE dead_letter_counters IS
    'dropped: letters the retention removed; not_kept: rejections past 1,000 in one request.';
