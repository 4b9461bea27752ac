//! `fusion generate`: the synthetic stream is reproducible, speaks exactly the
//! ingest wire format (DESIGN.md, "Events"; the checks below are written from
//! that contract, not from the generator), keeps its own story consistent
//! (no unfollow without a follow, no attendance without an occasion) and is
//! skewed the way real audiences are.

use std::collections::{HashMap, HashSet};
use std::process::Command;

use chrono::{DateTime, Utc};
use fusion::generate::{GenerateConfig, GenerateError, Generator, write_ndjson};
use serde_json::{Map, Value};

const TYPES: [&str; 14] = [
    "purchase",
    "brand_sales",
    "post",
    "mention",
    "review",
    "service",
    "endorsement",
    "audience",
    "follow",
    "unfollow",
    "occasion",
    "attendance",
    "cause",
    "consent",
];

fn config(seed: u64, events: u64) -> GenerateConfig {
    GenerateConfig {
        seed,
        events,
        ..GenerateConfig::default()
    }
}

fn generate(config: &GenerateConfig) -> Vec<u8> {
    let mut out = Vec::new();
    let written = write_ndjson(config, &mut out).expect("generation succeeds");
    assert_eq!(written, config.events);
    out
}

fn parse(stream: &[u8]) -> Vec<Map<String, Value>> {
    std::str::from_utf8(stream)
        .expect("the stream is UTF-8")
        .lines()
        .enumerate()
        .map(|(n, line)| match serde_json::from_str(line) {
            Ok(Value::Object(event)) => event,
            other => panic!("line {n} is not a JSON object: {other:?}: {line}"),
        })
        .collect()
}

/// Fields each type must have and may have, beyond `id`, `type`, `time`.
fn fields(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "purchase" => (&["person", "brand", "amount", "currency"], &[]),
        "brand_sales" => (&["brand", "amount"], &[]),
        "post" | "mention" => (&["person", "brand"], &["sentiment", "text"]),
        "review" => (&["person", "brand", "rating"], &["text"]),
        "service" => (
            &[
                "person",
                "brand",
                "channel",
                "csat",
                "effort",
                "resolved",
                "wait_seconds",
                "transfers",
            ],
            &[],
        ),
        "endorsement" => (&["person", "brand", "strength"], &[]),
        "audience" => (&["person", "followers"], &[]),
        "follow" => (&["person", "target"], &["strength"]),
        "unfollow" => (&["person", "target"], &[]),
        "occasion" => (&["occasion", "brand", "performers", "tags"], &[]),
        "attendance" => (&["person", "occasion"], &[]),
        "cause" => (&["brand", "tags", "amount"], &[]),
        "consent" => (&["person", "granted"], &[]),
        other => panic!("unknown event type {other}"),
    }
}

fn is_id(value: &Value, prefixes: &str) -> bool {
    value.as_str().is_some_and(|s| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| prefixes.contains(c))
            && !chars.as_str().is_empty()
            && chars.as_str().bytes().all(|b| b.is_ascii_digit())
    })
}

fn number_in(value: &Value, low: f64, high: f64) -> bool {
    value.as_f64().is_some_and(|x| (low..=high).contains(&x))
}

fn int_in(value: &Value, low: u64, high: u64) -> bool {
    value.as_u64().is_some_and(|x| (low..=high).contains(&x))
}

/// At most `decimals` digits after the point, as the contract's examples have.
fn decimals_at_most(value: &Value, decimals: usize) -> bool {
    let text = value.to_string();
    text.split_once('.')
        .is_none_or(|(_, frac)| frac.len() <= decimals)
}

/// Checks one event against the wire contract; `Err` says which field is off.
fn check(event: &Map<String, Value>) -> Result<(), String> {
    let kind = event["type"].as_str().ok_or("type is not a string")?;
    let (required, optional) = fields(kind);
    for name in required {
        if !event.contains_key(*name) {
            return Err(format!("{kind} lacks {name}"));
        }
    }
    for name in event.keys() {
        let common = ["id", "type", "time"].contains(&name.as_str());
        if !common && !required.contains(&name.as_str()) && !optional.contains(&name.as_str()) {
            return Err(format!("{kind} has a field it may not have: {name}"));
        }
    }
    let ok = |cond: bool, what: &str| {
        if cond {
            Ok(())
        } else {
            Err(format!("{kind}: bad {what}: {event:?}"))
        }
    };
    if let Some(person) = event.get("person") {
        let who = if kind == "endorsement" { "i" } else { "pi" };
        ok(is_id(person, who), "person")?;
    }
    if let Some(brand) = event.get("brand") {
        ok(is_id(brand, "b"), "brand")?;
    }
    if let Some(strength) = event.get("strength") {
        ok(
            number_in(strength, f64::MIN_POSITIVE, 1.0) && decimals_at_most(strength, 3),
            "strength",
        )?;
    }
    if let Some(amount) = event.get("amount") {
        ok(
            number_in(amount, 0.0, f64::MAX) && decimals_at_most(amount, 2),
            "amount",
        )?;
    }
    match kind {
        "purchase" => ok(
            matches!(event["currency"].as_str(), Some("USD" | "EUR")),
            "currency",
        )?,
        "post" | "mention" => {
            let sentiment = event.get("sentiment");
            let text = event.get("text");
            ok(sentiment.is_some() != text.is_some(), "sentiment xor text")?;
            if let Some(s) = sentiment {
                ok(
                    number_in(s, -1.0, 1.0) && decimals_at_most(s, 3),
                    "sentiment",
                )?;
            }
            if let Some(t) = text {
                ok(t.as_str().is_some_and(|t| !t.trim().is_empty()), "text")?;
            }
        }
        "review" => {
            ok(int_in(&event["rating"], 1, 5), "rating")?;
            if let Some(t) = event.get("text") {
                ok(t.as_str().is_some_and(|t| !t.trim().is_empty()), "text")?;
            }
        }
        "service" => {
            let channels = ["phone", "chat", "email", "social", "store"];
            ok(
                event["channel"]
                    .as_str()
                    .is_some_and(|c| channels.contains(&c)),
                "channel",
            )?;
            ok(int_in(&event["csat"], 1, 5), "csat")?;
            ok(int_in(&event["effort"], 1, 7), "effort")?;
            ok(event["resolved"].is_boolean(), "resolved")?;
            ok(event["wait_seconds"].is_u64(), "wait_seconds")?;
            ok(event["transfers"].is_u64(), "transfers")?;
        }
        "audience" => ok(event["followers"].is_u64(), "followers")?,
        "follow" | "unfollow" => ok(is_id(&event["target"], "pib"), "target")?,
        "occasion" => {
            ok(is_id(&event["occasion"], "o"), "occasion")?;
            let performers = event["performers"].as_array();
            ok(
                performers.is_some_and(|p| p.iter().all(|p| is_id(p, "i"))),
                "performers",
            )?;
            let tags = event["tags"].as_array();
            ok(tags.is_some_and(|t| t.iter().all(Value::is_string)), "tags")?;
        }
        "attendance" => ok(is_id(&event["occasion"], "o"), "occasion")?,
        "cause" => {
            let tags = event["tags"].as_array();
            ok(
                tags.is_some_and(|t| !t.is_empty() && t.iter().all(Value::is_string)),
                "tags",
            )?;
        }
        "consent" => ok(event["granted"].is_boolean(), "granted")?,
        _ => {}
    }
    Ok(())
}

fn time_of(event: &Map<String, Value>) -> DateTime<Utc> {
    let text = event["time"].as_str().expect("time is a string");
    // RFC 3339 UTC with whole seconds: 2026-01-03T14:05:09Z.
    assert_eq!(text.len(), 20, "time {text} is not YYYY-MM-DDTHH:MM:SSZ");
    DateTime::parse_from_rfc3339(text)
        .expect("time is RFC 3339")
        .with_timezone(&Utc)
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

#[test]
fn same_seed_gives_identical_bytes() {
    assert_eq!(generate(&config(7, 20_000)), generate(&config(7, 20_000)));
}

#[test]
fn different_seeds_give_different_streams() {
    assert_ne!(generate(&config(7, 2_000)), generate(&config(8, 2_000)));
}

#[test]
fn tiny_streams_have_exactly_the_requested_events() {
    let stream = generate(&config(3, 1));
    assert_eq!(parse(&stream).len(), 1);
    assert!(generate(&config(3, 0)).is_empty());
}

#[test]
fn every_event_type_appears_in_20000_events() {
    let events = parse(&generate(&config(11, 20_000)));
    let seen: HashSet<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let missing: Vec<&str> = TYPES
        .iter()
        .copied()
        .filter(|t| !seen.contains(t))
        .collect();
    assert!(missing.is_empty(), "missing types: {missing:?}");
    // Commerce and talk dominate; consent changes are rare.
    let count = |kind: &str| events.iter().filter(|e| e["type"] == kind).count();
    for common in ["purchase", "post", "mention", "follow"] {
        assert!(
            count(common) > count("review"),
            "{common} should outnumber review"
        );
    }
    assert!(
        count("consent") < 100,
        "consent should be rare: {}",
        count("consent")
    );
}

#[test]
fn every_event_is_valid_in_order_and_uniquely_identified() {
    let config = config(5, 20_000);
    let events = parse(&generate(&config));
    let end = config.start + chrono::Duration::days(i64::from(config.days));
    let mut ids = HashSet::new();
    let mut last = config.start;
    for (n, event) in events.iter().enumerate() {
        if let Err(reason) = check(event) {
            panic!("event {n} breaks the wire contract: {reason}");
        }
        let id = event["id"].as_str().expect("id is a string");
        assert!(is_id(&event["id"], "e"), "event id {id} is not e{{n}}");
        assert!(ids.insert(id.to_owned()), "duplicate id {id}");
        let time = time_of(event);
        assert!(time >= last, "event {n} goes back in time: {time} < {last}");
        assert!(time < end, "event {n} is past the end: {time}");
        last = time;
    }
}

#[test]
fn the_story_is_consistent() {
    let events = parse(&generate(&config(9, 20_000)));
    let mut follows: HashSet<(String, String)> = HashSet::new();
    let mut occasions: HashSet<String> = HashSet::new();
    let mut audience: HashMap<String, Vec<u64>> = HashMap::new();
    let mut structure_early = 0;
    for (n, event) in events.iter().enumerate() {
        let s = |field: &str| event[field].as_str().unwrap().to_owned();
        match event["type"].as_str().unwrap() {
            "follow" => {
                assert!(
                    follows.insert((s("person"), s("target"))),
                    "event {n} repeats a live follow"
                );
                assert_ne!(
                    s("person"),
                    s("target"),
                    "event {n}: a person follows themself"
                );
            }
            "unfollow" => {
                let pair = (s("person"), s("target"));
                assert!(
                    follows.remove(&pair),
                    "event {n} unfollows a follow that does not exist"
                );
            }
            "occasion" => assert!(
                occasions.insert(s("occasion")),
                "event {n} reuses an occasion id"
            ),
            "attendance" => {
                assert!(
                    occasions.contains(&s("occasion")),
                    "event {n} attends an unknown occasion"
                )
            }
            "audience" => audience
                .entry(s("person"))
                .or_default()
                .push(event["followers"].as_u64().unwrap()),
            _ => {}
        }
        if n < 500
            && ["follow", "endorsement", "occasion", "audience"]
                .contains(&event["type"].as_str().unwrap())
        {
            structure_early += 1;
        }
    }
    // The stream opens by registering structure, so later events have context.
    assert!(
        structure_early > 350,
        "only {structure_early} of the first 500 events register structure"
    );
    // Audience counts drift, mostly up, from one report to the next.
    let (mut ups, mut downs) = (0, 0);
    for series in audience.values() {
        for pair in series.windows(2) {
            if pair[1] > pair[0] {
                ups += 1;
            } else if pair[1] < pair[0] {
                downs += 1;
            }
        }
    }
    assert!(
        ups > 2 * downs,
        "audience drift should be mostly up: {ups} up, {downs} down"
    );
}

#[test]
fn reach_and_activity_are_heavy_tailed() {
    let events = parse(&generate(&config(13, 20_000)));
    let mut reach: HashMap<String, u64> = HashMap::new();
    let mut activity: HashMap<String, u64> = HashMap::new();
    for event in &events {
        let person = event.get("person").and_then(Value::as_str);
        if event["type"] == "audience" {
            reach.insert(
                person.unwrap().to_owned(),
                event["followers"].as_u64().unwrap(),
            );
        }
        if let Some(p) = person.filter(|p| p.starts_with('p')) {
            *activity.entry(p.to_owned()).or_default() += 1;
        }
    }
    let mut influencers: Vec<u64> = reach
        .iter()
        .filter(|(id, _)| id.starts_with('i'))
        .map(|(_, &f)| f)
        .collect();
    assert!(
        influencers.len() >= 50,
        "too few influencers reported an audience"
    );
    let max = *influencers.iter().max().unwrap();
    let median = median(&mut influencers);
    assert!(
        max > 50 * median,
        "influencer reach is not heavy-tailed: max {max}, median {median}"
    );

    // A few people produce many events: the top 1% of active people act in
    // far more than 1% of the events.
    let mut counts: Vec<u64> = activity.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = counts.iter().sum();
    let top: u64 = counts[..counts.len() / 100].iter().sum();
    assert!(
        top * 10 > total,
        "activity is not skewed: top 1% has {top} of {total}"
    );
}

#[test]
fn bad_settings_are_the_users_mistake() {
    for bad in [
        GenerateConfig {
            people: 0,
            ..GenerateConfig::default()
        },
        GenerateConfig {
            brands: 0,
            ..GenerateConfig::default()
        },
        GenerateConfig {
            days: 0,
            ..GenerateConfig::default()
        },
    ] {
        assert!(
            matches!(Generator::new(&bad), Err(GenerateError::InvalidConfig(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn the_binary_writes_the_library_stream() {
    let output = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args([
            "generate", "--seed", "17", "--events", "3000", "--people", "400",
        ])
        .args([
            "--influencers",
            "20",
            "--brands",
            "12",
            "--start",
            "2026-03-01T12:00:00+01:00",
            "--days",
            "3",
        ])
        .output()
        .expect("the fusion binary runs");
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = generate(&GenerateConfig {
        seed: 17,
        people: 400,
        influencers: 20,
        brands: 12,
        events: 3_000,
        start: "2026-03-01T11:00:00Z".parse().unwrap(),
        days: 3,
    });
    assert!(
        output.stdout == expected,
        "the binary's stream differs from the library's"
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args(["generate", "--people", "0"])
        .output()
        .expect("the fusion binary runs");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "bad arguments exit with status 2"
    );
}
