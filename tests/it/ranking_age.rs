//! The served ranking's age and lag (task h46, issue #11 item 2): readers
//! never wait for a ranking build, so each listing or summary of now says
//! in `/metrics` how far behind the folded log its ranking was. Owns only
//! these metrics' meaning through a real server; must not time anything.

use serde_json::json;

use crate::ops::{metric, scrape};
use crate::support::Server;

fn position_of(r: &crate::support::Reply) -> u64 {
    r.header("fusion-position")
        .expect("an answer carries Fusion-Position")
        .parse()
        .unwrap()
}

/// Each listing or summary read of now is one sample of
/// `fusion_ranking_age_seconds`, and `fusion_ranking_lag_events` is the
/// folded events its ranking did not reflect: the ingest's position minus
/// the listing's, whether the maintainer had rebuilt by then or not.
#[test]
fn each_ranking_read_records_how_far_its_ranking_lagged() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--staleness", "1"]);
    let t = "2026-11-01T10:00:00Z";
    let bought = |id: &str, person: &str| json!({"id": id, "type": "purchase", "time": t, "person": person, "brand": "acme", "amount": 3});
    let r = s.post_json("/v1/events", &json!([bought("a1", "ann")]));
    assert_eq!(r.status, 200, "{}", r.body);
    let before = scrape(&s);
    let first = s.get("/v1/brands/acme/relationships");
    assert_eq!(first.status, 200, "{}", first.body);
    let r = s.post_json(
        "/v1/events",
        &json!([bought("b1", "bob"), bought("c1", "cy")]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let acked = position_of(&r);
    let summary = s.get("/v1/brands/acme");
    assert_eq!(summary.status, 200, "{}", summary.body);
    let after = scrape(&s);
    let reads = metric(&after, "fusion_ranking_age_seconds_count", &[])
        - metric(&before, "fusion_ranking_age_seconds_count", &[]);
    assert_eq!(reads, 2.0, "one sample per read");
    let lag = acked - position_of(&summary).min(acked);
    assert_eq!(metric(&after, "fusion_ranking_lag_events", &[]), lag as f64);
}
