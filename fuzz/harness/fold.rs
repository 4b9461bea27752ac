//! The `fold` harness: the fold of validated events (issue #9, item 1).
//! Run by the cargo-fuzz target `fold` and, over the committed corpus, by
//! the test suite (`tests/it/fuzz_corpus.rs`).
//!
//! `arbitrary` builds wire events of every type (times anywhere in and
//! around the accepted range, numbers at and past their bounds, texts,
//! entities in several roles) -> `ingest::validate_all` -> role checks (as
//! the engine does) -> `ScoreState::build` in one go, and the same events
//! applied in a fuzzed arrival order and batching (numbered in arrival
//! order, as a store does; a batch the state declines builds it again from
//! the log so far, as the engine does). It asserts no panic,
//! finite scores in [0, 100], and that both states serve the same bits
//! (the determinism invariant: the state is a function of the event set).
//! Half of the inputs use the shortest half-lives the model loader accepts,
//! so the live series' forward-decay landmark moves often.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use chrono::{DateTime, Duration, Utc};
use fusion::domain::{Event, Logged};
use fusion::score::{MIN_HALF_LIFE_DAYS, ScoreState, ScoringModel};
use serde_json::{Value, json};

/// One fuzz input, built by `arbitrary` from raw bytes.
#[derive(Arbitrary, Debug)]
pub struct Input {
    short_half_lives: bool,
    events: Vec<Wire>,
    /// Swaps that make the arrival order.
    order: Vec<(u8, u8)>,
    /// Sizes of the arrival batches.
    batches: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// 1900-01-01 or the last second before 2200.
    End(bool),
    /// Seconds after 1900-01-01, times three: 1900 to about 2308.
    After1900(u32),
    /// Minutes around 2026-01-01: ordinary traffic, dense.
    Near2026(i16),
    Raw(i64),
}

#[derive(Arbitrary, Debug)]
struct Wire {
    kind: u8,
    time: Time,
    a: u8,
    b: u8,
    amount: f64,
    x: f64,
    small: u8,
    followers: u64,
    text: Option<String>,
    raw_numbers: bool,
    flag: bool,
}

const EARLIEST: i64 = -2_208_988_800; // 1900-01-01T00:00:00Z
const LATEST: i64 = 7_258_118_399; // 2199-12-31T23:59:59Z

fn time(t: &Time) -> Option<String> {
    let secs = match *t {
        Time::End(first) => {
            if first {
                EARLIEST
            } else {
                LATEST
            }
        }
        Time::After1900(s) => EARLIEST + 3 * i64::from(s),
        Time::Near2026(m) => 1_767_225_600 + 60 * i64::from(m),
        Time::Raw(s) => s,
    };
    DateTime::<Utc>::from_timestamp(secs, 0).map(|t| t.to_rfc3339())
}

/// A number in [0, hi) unless the input asks for the raw bits.
fn bounded(x: f64, hi: f64, raw: bool) -> f64 {
    if raw {
        x
    } else if x.is_finite() {
        x.abs() % hi
    } else {
        0.0
    }
}

impl Wire {
    fn to_json(&self, id: usize) -> Option<Value> {
        let time = time(&self.time)?;
        let raw = self.raw_numbers;
        let person = format!("p{}", self.a % 8);
        let other = format!("p{}", self.b % 8);
        let influencer = format!("i{}", self.a % 3);
        let brand = format!("b{}", self.b % 4);
        let occasion = format!("o{}", self.a % 2);
        let amount = bounded(self.amount, 1e12, raw);
        let unit = if raw {
            self.x
        } else {
            bounded(self.x, 2.0, false) - 1.0
        };
        let strength = if raw {
            self.x
        } else {
            bounded(self.x, 1.0, false).max(1e-9)
        };
        let small = u64::from(self.small);
        let mut v = match self.kind % 14 {
            0 => json!({"type": "purchase", "person": person, "brand": brand, "amount": amount}),
            1 => json!({"type": "brand_sales", "brand": brand, "amount": amount}),
            2 => json!({"type": "post", "person": influencer, "brand": brand, "sentiment": unit}),
            3 => json!({"type": "mention", "person": person, "brand": brand, "sentiment": unit}),
            4 => json!({"type": "review", "person": person, "brand": brand, "rating": small % 6}),
            5 => json!({"type": "service", "person": person, "brand": brand,
                        "csat": 1 + small % 5, "effort": 1 + small % 7, "resolved": self.flag,
                        "wait_seconds": bounded(self.amount, 4e7, raw), "transfers": small}),
            6 => json!({"type": "endorsement", "person": influencer, "brand": brand,
                        "strength": strength}),
            7 => json!({"type": "audience", "person": influencer,
                        "followers": if raw { self.followers } else { self.followers % 100_000_000_001 }}),
            8 => {
                let target = if self.flag { brand } else { influencer };
                json!({"type": "follow", "person": person, "target": target, "strength": strength})
            }
            9 => json!({"type": "unfollow", "person": person, "target": other}),
            10 => json!({"type": "occasion", "occasion": occasion, "brand": brand,
                         "performers": [influencer]}),
            11 => json!({"type": "attendance", "person": person, "occasion": occasion}),
            12 => json!({"type": "cause", "brand": brand, "tags": ["wool", "climate"],
                         "amount": amount}),
            _ => json!({"type": "consent", "person": person, "granted": self.flag}),
        };
        v["id"] = format!("f{id}").into();
        v["time"] = time.into();
        if let Some(text) = &self.text
            && matches!(self.kind % 14, 2..=4)
        {
            v["text"] = text.clone().into();
        }
        Some(v)
    }
}

fn models() -> &'static [Arc<ScoringModel>; 2] {
    static MODELS: OnceLock<[Arc<ScoringModel>; 2]> = OnceLock::new();
    MODELS.get_or_init(|| {
        let mut short = String::new();
        let mut in_half_lives = false;
        for line in fusion::score::DEFAULT_MODEL.lines() {
            if line.starts_with('[') {
                in_half_lives = line.trim() == "[half_life_days]";
            }
            match line.split_once('=') {
                Some((key, _)) if in_half_lives => {
                    short.push_str(&format!("{} = {MIN_HALF_LIFE_DAYS:?}\n", key.trim()))
                }
                _ => {
                    short.push_str(line);
                    short.push('\n');
                }
            }
        }
        [
            Arc::new(ScoringModel::default_model()),
            Arc::new(ScoringModel::from_toml(&short).expect("a model within the bounds")),
        ]
    })
}

/// What a reader sees of a state, as text (`{:?}` of an f64 round-trips,
/// so equal text is equal bits), with every score checked.
fn served(state: &ScoreState, times: &[DateTime<Utc>]) -> Vec<String> {
    let mut synced = state.clone();
    assert!(synced.sync_live(|| false));
    let mut out = Vec::new();
    for &at in times {
        let batch = state.batch(at);
        for (k, s) in &batch.scores {
            assert!(
                s.score.is_finite() && (0.0..=100.0).contains(&s.score),
                "{k:?} at {at}: {s:?}"
            );
            assert!(s.components.iter().all(|c| c.is_finite()), "{k:?}: {s:?}");
        }
        out.push(format!("{:?}", batch.scores));
        let live = synced.live_components_at(at);
        for (k, c) in live.iter().flatten() {
            assert!(c.iter().all(|x| x.is_finite()), "live {k:?} at {at}: {c:?}");
        }
        out.push(format!("{live:?}"));
    }
    out
}

/// Raw bytes as libFuzzer gives them, read as an [`Input`] the way
/// `fuzz_target!(|input: Input| ..)` reads them.
pub fn run_bytes(data: &[u8]) {
    if let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
        run(input);
    }
}

/// One input; panics where the fold is wrong.
pub fn run(input: Input) {
    if input.events.len() > 64 {
        return;
    }
    let values: Vec<Value> = input
        .events
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.to_json(i))
        .collect();
    // The engine's role checks: an id keeps the kind its first role gives.
    let model = &models()[usize::from(input.short_half_lives)];
    let good = fusion::ingest::validate_all(&values, &model.currency).good;
    let fresh = ScoreState::new(Arc::clone(model));
    let mut kinds = HashMap::new();
    let events: Vec<Event> = good
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| fresh.check_roles(e, &mut kinds).is_ok())
        .collect();
    let Some(latest) = events.iter().map(|e| e.time).max() else {
        return;
    };
    let times = [latest, latest + Duration::days(400)];

    let whole = ScoreState::build(Arc::clone(model), Vec::new(), events.clone());
    let expected = served(&whole, &times);

    let mut arriving = events;
    for &(i, j) in &input.order {
        let n = arriving.len();
        arriving.swap(usize::from(i) % n, usize::from(j) % n);
    }
    // As a store numbers them: log positions in arrival order.
    let arriving: Vec<Logged> = arriving
        .into_iter()
        .enumerate()
        .map(|(i, event)| Logged {
            position: i as u64,
            event,
        })
        .collect();
    let mut state = ScoreState::new(Arc::clone(model));
    let mut sizes = input
        .batches
        .iter()
        .map(|&b| usize::from(b % 8) + 1)
        .cycle();
    let mut done = 0;
    while done < arriving.len() {
        let k = if input.batches.is_empty() {
            arriving.len() - done
        } else {
            sizes.next().unwrap_or(1).min(arriving.len() - done)
        };
        // A batch the state declines (late events) builds it again from
        // the log so far, as the engine does from its store.
        if !state.apply(arriving[done..done + k].to_vec()) {
            state =
                ScoreState::from_log(Arc::clone(model), Vec::new(), arriving[..done + k].to_vec());
        }
        done += k;
    }
    assert_eq!(served(&state, &times), expected, "incremental vs batch");
}
