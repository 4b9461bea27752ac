-- Materialised relationship scores, for SQL readers (BI tools, analysts).
-- Derived data: the service rewrites it in batches from the event log.

CREATE TABLE relationship_scores (
    person      text COLLATE "C" NOT NULL,
    brand       text COLLATE "C" NOT NULL,
    score       double precision NOT NULL,
    raw         double precision NOT NULL,
    sentiment   double precision NOT NULL,
    sales       double precision NOT NULL,
    service     double precision NOT NULL,
    engagement  double precision NOT NULL,
    influence   double precision NOT NULL,
    values_     double precision NOT NULL,
    as_of       timestamptz NOT NULL,
    PRIMARY KEY (person, brand)
);

-- "Top advocates of a brand" and "who is at risk" read one brand in score order.
CREATE INDEX relationship_scores_brand_score ON relationship_scores (brand, score DESC);

COMMENT ON TABLE relationship_scores IS
    'Current Fusion Score of every person-brand relationship, refreshed in batches by the service. Read-only for everyone else.';
COMMENT ON COLUMN relationship_scores.person IS 'Person (consumer or influencer) id.';
COMMENT ON COLUMN relationship_scores.brand IS 'Brand id.';
COMMENT ON COLUMN relationship_scores.score IS 'Fusion Score, 0 to 100; 50 is neutral: 50 + 50 tanh(raw / spread).';
COMMENT ON COLUMN relationship_scores.raw IS 'Sum of the decayed, propagated components before the tanh mapping.';
COMMENT ON COLUMN relationship_scores.sentiment IS 'Component: what the person says about the brand (posts, mentions, reviews).';
COMMENT ON COLUMN relationship_scores.sales IS 'Component: purchases and attributed sales lift.';
COMMENT ON COLUMN relationship_scores.service IS 'Component: quality and effort of support contacts.';
COMMENT ON COLUMN relationship_scores.engagement IS 'Component: attendance at the brand''s occasions.';
COMMENT ON COLUMN relationship_scores.influence IS 'Component: endorsements and audience reach.';
COMMENT ON COLUMN relationship_scores.values_ IS 'Component: the brand''s causes matching the person''s interests.';
COMMENT ON COLUMN relationship_scores.as_of IS 'Event time the score was computed at.';
