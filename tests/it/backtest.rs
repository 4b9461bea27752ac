//! `fusion backtest` (issue #15, item 1): the metrics on a tiny hand-made log
//! whose every figure is worked out by hand below, the absence of outcomes
//! the data cannot contain, and no leakage from the future.

use std::process::Command;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use fusion::domain::Event;
use fusion::score::ScoringModel;
use fusion::validity::backtest::{BacktestReport, OutcomeReport};
use fusion::validity::{BacktestSpec, Bootstrap, NamedModel, Outcome, backtest};

pub fn events(lines: &[&str]) -> Vec<Event> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("test line is JSON");
            fusion::ingest::validate(&v).expect("test event is valid")
        })
        .collect()
}

pub fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test time")
}

/// Brand `shop`; cut 2026-01-10, horizon 10 days.
/// Before the cut: alice buys twice (40, 60), bob once (20, on the 5th),
/// carol once (20, on the 1st, so decayed more than bob), erin follows the
/// shop, dave posts angrily. In the horizon: alice and carol buy, dave
/// posts angrily again, bob has an unresolved service contact, erin
/// unfollows. After the horizon (never counted): alice complains, frank buys.
const TINY: &[&str] = &[
    r#"{"id":"a1","type":"purchase","time":"2026-01-02T10:00:00Z","person":"alice","brand":"shop","amount":40,"currency":"USD"}"#,
    r#"{"id":"a2","type":"purchase","time":"2026-01-08T10:00:00Z","person":"alice","brand":"shop","amount":60,"currency":"USD"}"#,
    r#"{"id":"b1","type":"purchase","time":"2026-01-05T10:00:00Z","person":"bob","brand":"shop","amount":20,"currency":"USD"}"#,
    r#"{"id":"c1","type":"purchase","time":"2026-01-01T10:00:00Z","person":"carol","brand":"shop","amount":20,"currency":"USD"}"#,
    r#"{"id":"d1","type":"post","time":"2026-01-09T10:00:00Z","person":"dave","brand":"shop","sentiment":-0.8}"#,
    r#"{"id":"e1","type":"follow","time":"2026-01-03T10:00:00Z","person":"erin","target":"shop"}"#,
    r#"{"id":"a3","type":"purchase","time":"2026-01-12T10:00:00Z","person":"alice","brand":"shop","amount":50,"currency":"USD"}"#,
    r#"{"id":"c2","type":"purchase","time":"2026-01-15T10:00:00Z","person":"carol","brand":"shop","amount":30,"currency":"USD"}"#,
    r#"{"id":"d2","type":"post","time":"2026-01-11T10:00:00Z","person":"dave","brand":"shop","sentiment":-0.5}"#,
    r#"{"id":"b2","type":"service","time":"2026-01-14T10:00:00Z","person":"bob","brand":"shop","csat":4,"resolved":false}"#,
    r#"{"id":"e2","type":"unfollow","time":"2026-01-13T10:00:00Z","person":"erin","target":"shop"}"#,
    r#"{"id":"a4","type":"service","time":"2026-01-25T10:00:00Z","person":"alice","brand":"shop","csat":1}"#,
    r#"{"id":"f1","type":"purchase","time":"2026-01-26T10:00:00Z","person":"frank","brand":"shop","amount":10,"currency":"USD"}"#,
];

fn spec(replicates: usize) -> BacktestSpec {
    BacktestSpec {
        cut: t("2026-01-10T00:00:00Z"),
        horizon_days: 10.0,
        brand: None,
        bootstrap: Bootstrap {
            replicates,
            seed: 1,
        },
    }
}

fn default_model() -> Vec<NamedModel> {
    vec![NamedModel {
        name: "fusion".into(),
        model: Arc::new(ScoringModel::default_model()),
    }]
}

fn run(lines: &[&str], replicates: usize) -> BacktestReport {
    backtest(
        &[],
        &events(lines),
        &default_model(),
        &[],
        &spec(replicates),
    )
    .expect("backtest runs")
}

fn outcome(r: &BacktestReport, o: Outcome) -> &OutcomeReport {
    r.outcomes.iter().find(|x| x.outcome == o).unwrap()
}

/// (AUC, lift) of a predictor for an outcome.
fn metric(r: &BacktestReport, o: Outcome, predictor: &str) -> (f64, Option<f64>) {
    let m = outcome(r, o)
        .metrics
        .iter()
        .find(|m| m.predictor == predictor)
        .unwrap();
    (m.auc.unwrap(), m.lift)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn metrics_on_a_tiny_log_match_the_hand_computation() {
    let r = run(TINY, 20);
    assert_eq!(
        r.relationships, 5,
        "alice, bob, carol, dave, erin (not frank)"
    );

    // The order of the Fusion scores at the cut, by the default model:
    // alice (two recent purchases) > erin (a follow, 0.3 engagement) >
    // bob (20 on the 5th) > carol (20 on the 1st) > dave (angry post).
    // Worked out: 58.8, 53.4, 52.5, 52.3, 46.4; the table checks the bands.
    let bands = &r
        .calibration
        .iter()
        .find(|c| c.predictor == "fusion" && c.bands_by == "score_band")
        .unwrap()
        .bands;
    assert_eq!(bands[4].items, 1, "dave in 40-50");
    assert_eq!(bands[5].items, 4, "the others in 50-60");
    // Purchase rate by band: 0 of 1 in 40-50, 2 of 4 (alice, carol) in 50-60.
    assert_eq!(bands[4].rates[0], Some(0.0));
    assert_eq!(bands[5].rates[0], Some(0.5));

    // Purchase (alice, carol positive; erin, bob, dave negative), high
    // scores should buy. Fusion ranks alice > erin > bob > carol > dave:
    // alice beats all 3 negatives, carol beats dave only: 4 of 6 pairs.
    assert!(close(metric(&r, Outcome::Purchase, "fusion").0, 4.0 / 6.0));
    // Recency (days since the last purchase: alice 2, bob 5, carol 9,
    // dave and erin never, tied lowest): alice 3, carol beats the tie 2: 5/6.
    assert!(close(metric(&r, Outcome::Purchase, "recency").0, 5.0 / 6.0));
    // Frequency 2, 1, 1, 0, 0: carol ties bob (½) and beats dave and erin.
    assert!(close(
        metric(&r, Outcome::Purchase, "frequency").0,
        5.5 / 6.0
    ));
    assert!(close(
        metric(&r, Outcome::Purchase, "monetary").0,
        5.5 / 6.0
    ));
    // Top decile of 5 is half a relationship: half of alice, who bought:
    // rate 1 over the base rate 2/5.
    assert!(close(
        metric(&r, Outcome::Purchase, "fusion").1.unwrap(),
        2.5
    ));

    // Churn, defined for alice, bob and carol (they bought before); bob
    // churned. Low scores should churn: bob is below alice, above carol: ½.
    let churn = outcome(&r, Outcome::Churn);
    assert_eq!((churn.relationships, churn.positives), (3, 1));
    assert!(close(metric(&r, Outcome::Churn, "fusion").0, 0.5));
    assert!(close(metric(&r, Outcome::Churn, "recency").0, 0.5));
    // Frequency: bob (1) below alice (2), tied with carol (1): 0.75.
    assert!(close(metric(&r, Outcome::Churn, "frequency").0, 0.75));
    // Bottom decile (0.3 of a relationship) by frequency: the bob-carol tie,
    // 0.15 of bob who churned: rate 0.5 over 1/3, lift 1.5. By Fusion:
    // carol, who did not churn: 0.
    assert!(close(
        metric(&r, Outcome::Churn, "frequency").1.unwrap(),
        1.5
    ));
    assert!(close(metric(&r, Outcome::Churn, "fusion").1.unwrap(), 0.0));

    // Negative: dave only (his post in the horizon). Fusion has him lowest:
    // 1. The baselines tie him with erin (no purchases): 3.5 of 4.
    assert!(close(metric(&r, Outcome::Negative, "fusion").0, 1.0));
    assert!(close(metric(&r, Outcome::Negative, "recency").0, 0.875));

    // Unfollow: erin. Fusion ranks her second: below alice only, 1 of 4.
    assert!(close(metric(&r, Outcome::Unfollow, "fusion").0, 0.25));
    assert!(close(metric(&r, Outcome::Unfollow, "frequency").0, 0.875));

    // Complaint: bob (unresolved; alice's CSAT 1 is after the horizon).
    // Fusion: bob below alice and erin of 4: ½. Recency: below alice only.
    let complaint = outcome(&r, Outcome::Complaint);
    assert_eq!(complaint.positives, 1);
    assert!(close(metric(&r, Outcome::Complaint, "fusion").0, 0.5));
    assert!(close(metric(&r, Outcome::Complaint, "recency").0, 0.25));

    // Spearman with the amount spent (alice 50, carol 30, the rest 0):
    // Fusion ranks (alice 5, bob 3, carol 2, dave 1, erin 4) against
    // (5, 2, 4, 2, 2): covariance 4, variances 10 and 8: 4/√80.
    let amount = r
        .amount
        .metrics
        .iter()
        .find(|m| m.predictor == "fusion")
        .unwrap();
    assert!(close(amount.spearman.unwrap(), 4.0 / 80f64.sqrt()));
    assert_eq!(r.amount.purchasers, 2);
    assert!(close(r.amount.total, 80.0));
}

#[test]
fn an_outcome_the_data_never_contains_is_absent_not_zero() {
    // Purchases only: no talk, no unfollows, no service.
    let purchases: Vec<&str> = TINY
        .iter()
        .copied()
        .filter(|l| l.contains("\"purchase\""))
        .collect();
    let r = run(&purchases, 10);
    for o in [Outcome::Negative, Outcome::Unfollow, Outcome::Complaint] {
        let report = outcome(&r, o);
        assert!(!report.present, "{o:?} should be absent");
        assert!(report.metrics.is_empty() && report.rate.is_none());
    }
    assert!(outcome(&r, Outcome::Purchase).present);
    let json = serde_json::to_value(&r).unwrap();
    let unfollow = json["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outcome"] == "unfollow")
        .unwrap();
    assert_eq!(unfollow["present"], false);
    assert!(r.to_text().contains("unfollow   absent"), "{}", r.to_text());
}

/// No leakage from the future. Events after the horizon change nothing at
/// all; events after the cut change no predictor, even an event that would
/// change the fold's context at the cut if the full log were evaluated
/// there (a purchase that reveals a followed id to be a brand).
#[test]
fn events_after_the_cut_change_no_predictor() {
    let base = run(TINY, 20);
    let mut later: Vec<&str> = TINY.to_vec();
    later.extend([
        // Before the cut erin follows `newshop`, taken for a person: no
        // relationship. After the cut a purchase names it as a brand.
        r#"{"id":"x0","type":"follow","time":"2026-01-04T10:00:00Z","person":"erin","target":"newshop"}"#,
        r#"{"id":"x1","type":"purchase","time":"2026-01-11T10:00:00Z","person":"gus","brand":"newshop","amount":10,"currency":"USD"}"#,
        r#"{"id":"x2","type":"post","time":"2026-01-30T10:00:00Z","person":"bob","brand":"shop","sentiment":-1}"#,
        r#"{"id":"x3","type":"brand_sales","time":"2026-02-01T10:00:00Z","brand":"shop","amount":1000}"#,
    ]);
    let with = run(&later, 20);
    assert_eq!(
        serde_json::to_value(&base).unwrap(),
        serde_json::to_value(&with).unwrap(),
        "the follow of a brand revealed after the cut leaked into the scores"
    );

    // A purchase after the horizon changes nothing either.
    let after_horizon: Vec<&str> = TINY
        .iter()
        .copied()
        .chain([r#"{"id":"y1","type":"purchase","time":"2026-03-01T00:00:00Z","person":"bob","brand":"shop","amount":500,"currency":"USD"}"#])
        .collect();
    assert_eq!(
        serde_json::to_value(run(&after_horizon, 20)).unwrap(),
        serde_json::to_value(&base).unwrap()
    );
}

#[test]
fn the_binary_prints_a_table_and_json_and_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.ndjson");
    std::fs::write(&file, TINY.join("\n")).unwrap();
    let fusion = env!("CARGO_BIN_EXE_fusion");
    let args = [
        "backtest",
        "--cut",
        "2026-01-10T00:00:00Z",
        "--horizon",
        "10",
        "--replicates",
        "20",
        "--events",
    ];
    let out = Command::new(fusion)
        .args(args)
        .arg(&file)
        .output()
        .expect("fusion runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("5 relationships"), "{text}");
    assert!(
        text.contains("calibration of fusion by score band"),
        "{text}"
    );

    let out = Command::new(fusion)
        .args(args)
        .arg(&file)
        .args(["--json", "--brand", "shop"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["relationships"], 5);
    assert_eq!(json["brand"], "shop");

    let bad = Command::new(fusion)
        .args(["backtest", "--cut", "yesterday", "--horizon", "10"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a bad time is a bad argument");
    let bad = Command::new(fusion)
        .args([
            "backtest",
            "--cut",
            "2026-01-10T00:00:00Z",
            "--horizon",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an empty horizon is a bad argument"
    );
}
