-- Alerts (issue 13, item 2): rules, each relationship's phase in a rule's
-- state machine (armed is the default and has no row), the alerts fired and
-- the webhook outbox. An alert and its delivery are written in one
-- transaction; deleting a rule removes everything of it (ON DELETE CASCADE).

CREATE TABLE alert_rules (
    id         bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL,
    rule       jsonb NOT NULL,
    secret     text NOT NULL
);

COMMENT ON TABLE alert_rules IS 'Alert rules (POST /v1/alerts).';
COMMENT ON COLUMN alert_rules.rule IS 'The rule as given: brand, kind, metric, direction, threshold, rearm, dwell_seconds, webhook_url.';
COMMENT ON COLUMN alert_rules.secret IS
    'The webhook signing secret, kept as given: an HMAC signature needs the secret itself. Shown to the API once, at creation.';

CREATE TABLE alert_phases (
    rule_id bigint NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    person  text NOT NULL,
    brand   text NOT NULL,
    phase   jsonb NOT NULL,
    PRIMARY KEY (rule_id, person, brand)
);

COMMENT ON TABLE alert_phases IS 'Relationships that are pending or fired under a rule; armed ones have no row.';

CREATE TABLE alert_events (
    id      bigserial PRIMARY KEY,
    rule_id bigint NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    alert   jsonb NOT NULL
);

CREATE INDEX alert_events_rule ON alert_events (rule_id, id);

COMMENT ON TABLE alert_events IS 'Alerts fired (GET /v1/alerts/{id}/events); each is the body of its webhook.';

CREATE TABLE alert_deliveries (
    id           bigserial PRIMARY KEY,
    rule_id      bigint NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    state        text NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    next_attempt timestamptz NOT NULL,
    delivery     jsonb NOT NULL
);

CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt) WHERE state = 'pending';
CREATE INDEX alert_deliveries_rule ON alert_deliveries (rule_id, id);

COMMENT ON TABLE alert_deliveries IS
    'The webhook outbox (GET /v1/alerts/{id}/deliveries): at least once, retried with backoff until delivered or dead.';
