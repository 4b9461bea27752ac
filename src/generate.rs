//! A synthetic, reproducible event stream in the ingest wire format (NDJSON).
//!
//! Owns the population model (power-law reach, activity and brand popularity,
//! a follow graph grown by preferential attachment) and the encoding of each
//! event as one JSON line. It does no IO of its own (it writes into any
//! `io::Write`) and never reads the clock: the same [`GenerateConfig`] gives
//! byte-identical output on every machine, which is what benches and fixtures
//! rely on.
//!
//! Memory stays O(people + influencers + brands + live follows + occasions),
//! whatever the number of events: the stream is produced one line at a time.
//! Times are non-decreasing without buffering because they are drawn as sorted
//! uniforms one by one (Bentley & Saxe, "Generating sorted lists of random
//! numbers", ACM TOMS 1980), then warped into a daily rhythm.
//!
//! With ground truth ([`Generator::with_truth`], `fusion generate --truth`)
//! a latent health per relationship drives its purchases, sentiment, service
//! and churn, and some occasions carry a planted effect on sales; the truth
//! is written out after the stream ([`Generator::write_truth`],
//! docs/validity.md). Without it the stream is byte-identical to the one
//! before ground truth existed (`tests/it/truth.rs` pins its hash): every
//! truth-only draw and decision sits behind `self.truth`.

use crate::domain::EventType;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::io::{self, Write};

use chrono::{DateTime, Utc};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The largest population of one kind: ids of all kinds share one 32-bit
/// follow-target code with two bits of kind.
pub const MAX_POPULATION: u32 = (1 << 30) - 1;

/// What to generate. `Default` gives the CLI's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateConfig {
    /// Seed of the ChaCha8 stream; the only source of randomness.
    pub seed: u64,
    /// Consumers `p0..`.
    pub people: u32,
    /// Influencers `i0..` (they act as persons: post, endorse, gain followers).
    pub influencers: u32,
    /// Brands `b0..`.
    pub brands: u32,
    /// Number of events `e0..` to write.
    pub events: u64,
    /// Event time of the stream's start (truncated to whole seconds).
    pub start: DateTime<Utc>,
    /// Length of the stream in days of event time.
    pub days: u32,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            seed: 42,
            people: 10_000,
            influencers: 100,
            brands: 50,
            events: 100_000,
            start: DateTime::from_timestamp(1_767_225_600, 0).expect("2026-01-01 is representable"),
            days: 90,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The user's mistake: a setting out of range.
    #[error("invalid generator setting: {0}")]
    InvalidConfig(String),
    /// The sink failed (a closed pipe, a full disk).
    #[error("failed to write the event stream")]
    Io(#[from] io::Error),
}

/// Steady-state mix, in parts per 10,000: commerce and talk dominate, as in
/// any consumer data set; consent changes are rare.
const MIX: [(EventType, u32); 14] = [
    (EventType::Purchase, 3_090),
    (EventType::Post, 1_800),
    (EventType::Follow, 1_400),
    (EventType::Mention, 1_200),
    (EventType::Review, 500),
    (EventType::Service, 500),
    (EventType::Audience, 400),
    (EventType::Attendance, 400),
    (EventType::Unfollow, 250),
    (EventType::BrandSales, 200),
    (EventType::Endorsement, 100),
    (EventType::Occasion, 50),
    (EventType::Cause, 100),
    (EventType::Consent, 10),
];

/// Mix of the first 5% of the stream: it registers structure (follows,
/// endorsements, occasions, audience sizes) so later events have context.
const WARMUP_MIX: [(EventType, u32); 5] = [
    (EventType::Follow, 5_000),
    (EventType::Audience, 2_300),
    (EventType::Endorsement, 1_500),
    (EventType::Occasion, 500),
    (EventType::Purchase, 700),
];

/// Share of the stream spent in warm-up, as a divisor of the event count.
const WARMUP_DIVISOR: u64 = 20;

const CHANNELS: [&str; 5] = ["phone", "chat", "email", "social", "store"];
/// Median wait per channel, seconds: email is answered in hours, a store at once.
const CHANNEL_WAIT_MEDIAN: [f64; 5] = [240.0, 45.0, 14_400.0, 1_800.0, 120.0];
const CHANNEL_WEIGHT: [u32; 5] = [30, 30, 15, 10, 15];

const OCCASION_TAGS: [&str; 8] = [
    "concert", "launch", "popup", "festival", "sports", "charity", "meetup", "fashion",
];
const CAUSE_TAGS: [&str; 8] = [
    "climate",
    "education",
    "health",
    "equality",
    "animals",
    "local",
    "ocean",
    "arts",
];

/// Text templates as (before, after) the brand id, grouped by tone so that a
/// sentiment scorer has something to find.
const POSITIVE_TEXT: [(&str, &str); 5] = [
    ("love the new ", " drop"),
    ("", " customer service sorted me out in minutes"),
    ("obsessed with my ", " order"),
    ("shoutout to ", " for the fast delivery"),
    ("", " never misses, great quality"),
];
const NEGATIVE_TEXT: [(&str, &str); 5] = [
    ("worst service ever at ", ""),
    ("", " lost my order again"),
    ("not impressed with ", " lately"),
    ("", " prices are getting ridiculous"),
    ("never buying from ", " again, awful"),
];
const NEUTRAL_TEXT: [(&str, &str); 3] = [
    ("anyone tried ", "?"),
    ("thinking about switching to ", ""),
    ("just saw an ad for ", ""),
];

/// Ground truth: which of the scoring model's components (sentiment,
/// sales, service, engagement, influence, values) the latent health drives
/// (1) and which it does not (0). Health moves sentiment (posts, mentions,
/// reviews), purchases (and so sales) and service; it does not move
/// follows, attendance, endorsements, audiences or causes. How much weight
/// each driven component needs in a model depends on its scale, which is
/// not planted.
pub const PLANTED_WEIGHTS: [f64; 6] = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
/// Ground truth: each attendee of a planted occasion buys once more from
/// the host, for this amount (USD), 1 to 5 days after attending.
pub const PLANTED_SALES_EFFECT: f64 = 80.0;
/// Ground truth: every this many occasions one is featured (it draws half
/// of the attendances in its first [`FEATURED_DAYS`]); featured ones
/// alternate between a planted effect and none (a placebo), starting with
/// an effect.
pub const FEATURED_EVERY: u64 = 8;
/// Ground truth: a featured occasion is attended only in its first this
/// many days, so its planted purchases (1 to 5 days after attending) all
/// fall within 10 days of it: an after window of 10 days or more sees the
/// whole planted effect, [`PLANTED_SALES_EFFECT`] per attendee.
pub const FEATURED_DAYS: i64 = 5;
/// Ground truth: a relationship that churns declines linearly to health
/// −1 over this many days before it stops buying.
pub const DECLINE_DAYS: i64 = 30;
/// Ground truth: the chance that a relationship churns during the stream
/// is `CHURN_RATE · (1 − health) / 2`.
pub const CHURN_RATE: f64 = 0.6;

/// The latent health of a relationship at `at`, from its planted health
/// and churn time (as the truth file gives them): the planted health, then
/// a straight decline to −1 over [`DECLINE_DAYS`] before the churn, and −1
/// from the churn on.
pub fn effective_health(health: f64, churn_at: Option<DateTime<Utc>>, at: DateTime<Utc>) -> f64 {
    decline(health, churn_at.map(|c| c.timestamp()), at.timestamp())
}

fn decline(health: f64, churn: Option<i64>, t: i64) -> f64 {
    let Some(churn) = churn else {
        return health;
    };
    let span = DECLINE_DAYS * 86_400;
    let start = churn - span;
    if t >= churn {
        -1.0
    } else if t <= start {
        health
    } else {
        health + (-1.0 - health) * (t - start) as f64 / span as f64
    }
}

/// What ground truth keeps while the stream is written.
#[derive(Debug, Default)]
struct Truth {
    /// Relationships named by a person–brand event: (who key, brand).
    seen: BTreeSet<(u64, u32)>,
    /// Featured occasions, in order.
    featured: Vec<Featured>,
    /// First attendances of featured occasions.
    attendees: BTreeMap<u64, BTreeSet<u32>>,
    /// Planted purchases owed, earliest due first.
    owed: BinaryHeap<Reverse<Owed>>,
}

/// A featured occasion.
#[derive(Debug, Clone, Copy)]
struct Featured {
    id: u64,
    brand: u32,
    /// Whether an effect is planted (else a placebo).
    planted: bool,
    /// When it was announced (seconds since the start).
    offset: i64,
}

impl Featured {
    fn open(&self, now: i64) -> bool {
        now - self.offset <= FEATURED_DAYS * 86_400
    }
}

/// A purchase an attendee of a planted occasion owes its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Owed {
    /// Offset (seconds since the start) from which it is due; first field,
    /// so the heap orders by it.
    due: i64,
    person: u32,
    brand: u32,
    occasion: u64,
}

impl Truth {
    fn occasion(&mut self, id: u64, brand: u32, offset: i64) {
        if id.is_multiple_of(FEATURED_EVERY) {
            self.featured.push(Featured {
                id,
                brand,
                planted: (id / FEATURED_EVERY).is_multiple_of(2),
                offset,
            });
        }
    }

    fn featured(&self, occasion: u64) -> Option<&Featured> {
        // Featured ids are multiples of FEATURED_EVERY, in order.
        if !occasion.is_multiple_of(FEATURED_EVERY) {
            return None;
        }
        self.featured.get((occasion / FEATURED_EVERY) as usize)
    }

    fn attend(&mut self, occasion: u64, person: u32, host: u32, due: i64) {
        let Some(&Featured { planted, .. }) = self.featured(occasion) else {
            return;
        };
        if self.attendees.entry(occasion).or_default().insert(person) && planted {
            self.owed.push(Reverse(Owed {
                due,
                person,
                brand: host,
                occasion,
            }));
        }
    }

    /// A planted purchase due by `offset`, if any.
    fn due(&mut self, offset: i64) -> Option<Owed> {
        match self.owed.peek() {
            Some(Reverse(owed)) if owed.due <= offset => self.owed.pop().map(|Reverse(o)| o),
            _ => None,
        }
    }
}

/// Who acts: a consumer or an influencer (both are persons on the wire).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Person(u32),
    Influencer(u32),
}

/// Target kinds packed into the top two bits of a follow-target code.
const TARGET_INFLUENCER: u32 = 0;
const TARGET_PERSON: u32 = 1;
const TARGET_BRAND: u32 = 2;

/// The stream, one line at a time. Build with [`Generator::new`], then call
/// [`Generator::next_line`] until it returns `false`.
pub struct Generator {
    rng: ChaCha8Rng,
    seed: u64,
    people: u32,
    influencers: u32,
    events: u64,
    emitted: u64,
    warmup: u64,
    mix: Vec<(EventType, u32)>,
    warmup_mix: Vec<(EventType, u32)>,

    start_unix: i64,
    span_secs: i64,
    days: f64,
    /// Bentley–Saxe running product: 1 - sorted_uniform.
    sorted_complement: f64,
    last_offset: i64,
    cached_day: i64,
    date_prefix: Vec<u8>,

    /// Who acts, by activity (Pareto): a few people produce most events.
    activity: AliasTable,
    /// Which influencer acts or performs, by sqrt(reach): big accounts post more.
    influencer_pick: AliasTable,
    /// Brand popularity (Zipf over a random ranking).
    brand_pick: AliasTable,
    brand_weight: Vec<f64>,

    /// Current follower totals, reported by audience events.
    person_followers: Vec<u64>,
    influencer_followers: Vec<u64>,
    /// Offset (seconds since start) of each account's last audience report.
    person_reported: Vec<u32>,
    influencer_reported: Vec<u32>,
    /// Followers + 1 per account, for preferential attachment of new follows.
    person_attach: Fenwick,
    influencer_attach: Fenwick,

    /// Live follows as `follower << 32 | target code`, for unfollow and dedup.
    follows: Vec<u64>,
    follow_set: HashSet<u64>,
    /// Host brand of each occasion `o{n}`.
    occasions: Vec<u32>,
    /// Influencers who endorsed each brand (bounded), to pick performers.
    endorsers: Vec<Vec<u32>>,
    /// Ground truth, when asked for; `None` leaves the plain stream untouched.
    truth: Option<Truth>,
}

impl Generator {
    pub fn new(config: &GenerateConfig) -> Result<Generator, GenerateError> {
        for (name, value) in [
            ("--people", config.people),
            ("--influencers", config.influencers),
            ("--brands", config.brands),
        ] {
            if value == 0 || value > MAX_POPULATION {
                return Err(GenerateError::InvalidConfig(format!(
                    "{name} must be between 1 and {MAX_POPULATION}, got {value}"
                )));
            }
        }
        if config.days == 0 || config.days > 36_500 {
            return Err(GenerateError::InvalidConfig(format!(
                "--days must be between 1 and 36500, got {}",
                config.days
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);

        // Activity: Pareto with alpha 1.2 (heavy tail, finite mean), capped so
        // one account cannot swallow the whole stream of a small population.
        let activity: Vec<f64> = (0..config.people)
            .map(|_| pareto(&mut rng, 1.0, 1.2).min(5_000.0))
            .collect();

        // Consumer reach: Pareto, median ~35 followers, a long tail of locally
        // known people.
        let person_followers: Vec<u64> = (0..config.people)
            .map(|_| pareto(&mut rng, 20.0, 1.3).min(2_000_000.0) as u64)
            .collect();

        // Influencer reach: Zipf over a random ranking (rank r has ~5M/r^1.4)
        // above a base of ~1,000 (the micro-influencers of a large roster),
        // with log-normal noise so equal ranks do not look manufactured.
        let ranks = shuffled(&mut rng, config.influencers);
        let influencer_followers: Vec<u64> = ranks
            .iter()
            .map(|&rank| {
                let zipf = 5_000_000.0 / f64::from(rank + 1).powf(1.4) + 1_000.0;
                (zipf * (0.25 * normal(&mut rng)).exp()) as u64
            })
            .collect();

        // Brand popularity: Zipf s = 1.07 over a random ranking.
        let brand_ranks = shuffled(&mut rng, config.brands);
        let brand_weight: Vec<f64> = brand_ranks
            .iter()
            .map(|&rank| 1.0 / f64::from(rank + 1).powf(1.07))
            .collect();

        let influencer_sqrt: Vec<f64> = influencer_followers
            .iter()
            .map(|&f| (f as f64).sqrt())
            .collect();
        let person_attach = Fenwick::from_weights(person_followers.iter().map(|&f| f + 1));
        let influencer_attach = Fenwick::from_weights(influencer_followers.iter().map(|&f| f + 1));

        let start_unix = config.start.timestamp();
        let generator = Generator {
            rng,
            seed: config.seed,
            people: config.people,
            influencers: config.influencers,
            events: config.events,
            emitted: 0,
            warmup: config.events / WARMUP_DIVISOR,
            mix: cumulative(&MIX),
            warmup_mix: cumulative(&WARMUP_MIX),
            start_unix,
            span_secs: i64::from(config.days) * 86_400,
            days: f64::from(config.days),
            sorted_complement: 1.0,
            last_offset: 0,
            cached_day: i64::MIN,
            date_prefix: Vec::with_capacity(16),
            activity: AliasTable::new(&activity),
            influencer_pick: AliasTable::new(&influencer_sqrt),
            brand_pick: AliasTable::new(&brand_weight),
            brand_weight,
            person_reported: vec![0; person_followers.len()],
            influencer_reported: vec![0; influencer_followers.len()],
            person_followers,
            influencer_followers,
            person_attach,
            influencer_attach,
            follows: Vec::new(),
            follow_set: HashSet::new(),
            occasions: Vec::new(),
            endorsers: vec![Vec::new(); config.brands as usize],
            truth: None,
        };
        // Fail on an unrepresentable end time now, not halfway through a stream.
        if DateTime::from_timestamp(start_unix + generator.span_secs, 0).is_none() {
            return Err(GenerateError::InvalidConfig(
                "--start plus --days is out of the representable time range".into(),
            ));
        }
        Ok(generator)
    }

    /// The stream with ground truth planted (module doc): the same
    /// population, but latent health drives purchases, sentiment, service
    /// and churn, and featured occasions draw crowds, half of them with a
    /// planted effect on sales.
    pub fn with_truth(config: &GenerateConfig) -> Result<Generator, GenerateError> {
        let mut generator = Generator::new(config)?;
        generator.truth = Some(Truth::default());
        Ok(generator)
    }

    /// How many events are still to come.
    pub fn remaining(&self) -> u64 {
        self.events - self.emitted
    }

    /// Appends the next event, as one JSON object and a `\n`, to `line`.
    /// Returns `false` (appending nothing) once the stream is exhausted.
    pub fn next_line(&mut self, line: &mut Vec<u8>) -> bool {
        if self.emitted >= self.events {
            return false;
        }
        let n = self.emitted;
        self.emitted += 1;
        let offset = self.next_offset();
        if let Some(owed) = self.truth.as_mut().and_then(|t| t.due(offset)) {
            self.push_head(line, n, EventType::Purchase, offset);
            self.planted_purchase(line, owed);
            line.extend_from_slice(b"}\n");
            return true;
        }

        // Resolve the kind before writing anything: some need context that
        // may not exist yet, and then fall back to the event that creates it.
        let mut kind = self.pick_kind(n);
        if kind == EventType::Unfollow && self.follows.is_empty() {
            kind = EventType::Follow;
        }
        if kind == EventType::Attendance && self.occasions.is_empty() {
            kind = EventType::Occasion;
        }
        let mut follow = None;
        if kind == EventType::Follow {
            follow = self.choose_follow();
            if follow.is_none() {
                kind = EventType::Purchase;
            }
        }

        self.push_head(line, n, kind, offset);
        match kind {
            EventType::Purchase => self.purchase(line),
            EventType::BrandSales => self.brand_sales(line),
            EventType::Post => self.talk(line, 0.30),
            EventType::Mention => self.talk(line, 0.15),
            EventType::Review => self.review(line),
            EventType::Service => self.service(line),
            EventType::Endorsement => self.endorsement(line),
            EventType::Audience => self.audience(line),
            EventType::Follow => {
                let (follower, target) = follow.expect("a follow was chosen above");
                self.follow(line, follower, target);
            }
            EventType::Unfollow => self.unfollow(line),
            EventType::Occasion => self.occasion(line),
            EventType::Attendance => self.attendance(line),
            EventType::Cause => self.cause(line),
            EventType::Consent => self.consent(line),
        }
        line.extend_from_slice(b"}\n");
        true
    }
}

impl Generator {
    /// `{"id":"e<n>","type":"<kind>","time":"<time>"`.
    fn push_head(&mut self, line: &mut Vec<u8>, n: u64, kind: EventType, offset: i64) {
        line.extend_from_slice(b"{\"id\":\"e");
        push_u64(line, n);
        line.extend_from_slice(b"\",\"type\":\"");
        line.extend_from_slice(kind.as_str().as_bytes());
        line.extend_from_slice(b"\",\"time\":\"");
        self.push_time(line, offset);
        line.push(b'"');
    }
}

/// Writes the whole stream of `config` into `out` and returns the number of
/// events written. `out` should be buffered; lines are handed over in
/// batches of about 64 KiB.
pub fn write_ndjson<W: Write>(config: &GenerateConfig, out: W) -> Result<u64, GenerateError> {
    write_stream(&mut Generator::new(config)?, out)
}

/// As [`write_ndjson`], with ground truth planted ([`Generator::with_truth`]);
/// the truth goes to `truth` once the stream is written.
pub fn write_ndjson_with_truth<W: Write, T: Write>(
    config: &GenerateConfig,
    out: W,
    mut truth: T,
) -> Result<u64, GenerateError> {
    let mut generator = Generator::with_truth(config)?;
    let written = write_stream(&mut generator, out)?;
    generator.write_truth(&mut truth)?;
    truth.flush()?;
    Ok(written)
}

fn write_stream<W: Write>(generator: &mut Generator, mut out: W) -> Result<u64, GenerateError> {
    let mut batch = Vec::with_capacity(1 << 17);
    let mut written = 0;
    while generator.next_line(&mut batch) {
        written += 1;
        if batch.len() >= 1 << 16 {
            out.write_all(&batch)?;
            batch.clear();
        }
    }
    out.write_all(&batch)?;
    out.flush()?;
    Ok(written)
}

/// Choosing who and what: the population model.
impl Generator {
    /// Seconds since the start for the next event, non-decreasing.
    fn next_offset(&mut self) -> i64 {
        // Bentley–Saxe: the running product of U^(1/k), k = n, n-1, .., is
        // the complement of the next uniform in sorted order.
        let k = (self.events - self.emitted + 1) as f64;
        let u = 1.0 - self.rng.random::<f64>();
        self.sorted_complement *= u.powf(1.0 / k);
        let day = (1.0 - self.sorted_complement) * self.days;
        // Daily rhythm: a monotone warp that maps whole days onto themselves
        // and puts the density peak at 18:00 and the trough at 06:00.
        const AMPLITUDE: f64 = 0.6;
        const PHASE: f64 = 0.25;
        let tau = std::f64::consts::TAU;
        let warped = day
            + AMPLITUDE * (tau * (day - PHASE)).sin() / tau
            + AMPLITUDE * (tau * PHASE).sin() / tau;
        let offset = ((warped * 86_400.0) as i64).clamp(0, self.span_secs - 1);
        // Guard against rounding ever stepping back.
        self.last_offset = self.last_offset.max(offset);
        self.last_offset
    }

    fn pick_kind(&mut self, n: u64) -> EventType {
        let table = if n < self.warmup {
            &self.warmup_mix
        } else {
            &self.mix
        };
        let total = table.last().map_or(1, |&(_, c)| c);
        let r = self.rng.random_range(0..total);
        table
            .iter()
            .find(|&&(_, c)| r < c)
            .map_or(EventType::Purchase, |&(k, _)| k)
    }

    fn active_person(&mut self) -> u32 {
        // Mostly by activity, with a uniform share so the long tail shows up.
        if self.rng.random::<f64>() < 0.8 {
            self.activity.sample(self.rng.next_u64()) as u32
        } else {
            self.rng.random_range(0..self.people)
        }
    }

    /// Who follows or attends: by activity in the plain stream; with ground
    /// truth, anyone alike, so that engagement and influence (which health
    /// does not drive) carry no trace of how much a person buys either, and
    /// the planted weights are the whole truth about what predicts what.
    fn engaged_person(&mut self) -> u32 {
        if self.truth.is_some() {
            self.rng.random_range(0..self.people)
        } else {
            self.active_person()
        }
    }

    fn active_influencer(&mut self) -> u32 {
        self.influencer_pick.sample(self.rng.next_u64()) as u32
    }

    fn popular_brand(&mut self) -> u32 {
        self.brand_pick.sample(self.rng.next_u64()) as u32
    }

    /// An actor: a consumer, or with `influencer_share` an influencer.
    fn actor(&mut self, influencer_share: f64) -> Who {
        if self.rng.random::<f64>() < influencer_share {
            Who::Influencer(self.active_influencer())
        } else {
            Who::Person(self.active_person())
        }
    }

    /// The brand an actor deals with: usually one of three "home" brands
    /// (a stable function of the seed and the actor, so it costs no memory),
    /// otherwise any brand by popularity. Repeat relationships are what
    /// scores are made of.
    fn brand_for(&mut self, who: Who) -> u32 {
        if self.rng.random::<f64>() < 0.6 {
            let slot = self.rng.random_range(0..3u64);
            let h = mix64(self.seed ^ 0x686f_6d65, who_key(who), slot);
            self.brand_pick.sample(h) as u32
        } else {
            self.popular_brand()
        }
    }

    /// A stable attitude of an actor towards a brand, in [-0.4, 0.8]: most
    /// relationships are mildly positive, some are sour.
    ///
    /// With ground truth the attitude is the relationship's health now,
    /// on the same scale: `0.2 + 0.6 · health`.
    fn bias(&self, who: Who, brand: u32) -> f64 {
        if self.truth.is_some() {
            return 0.2 + 0.6 * self.health_now(who, brand);
        }
        let h = mix64(self.seed ^ 0x6269_6173, who_key(who), u64::from(brand));
        -0.4 + 1.2 * unit(h)
    }

    /// A new (follower, target code) pair, or `None` when repeated draws hit
    /// existing follows (a saturated small population).
    fn choose_follow(&mut self) -> Option<(u32, u32)> {
        for _ in 0..4 {
            let follower = self.engaged_person();
            let r = self.rng.random::<f64>();
            // Preferential attachment: accounts are followed in proportion to
            // the followers they already have, so the rich get richer.
            let target = if r < 0.60 {
                let i = self.influencer_attach.sample(&mut self.rng);
                TARGET_INFLUENCER << 30 | i as u32
            } else if r < 0.85 {
                TARGET_BRAND << 30 | self.popular_brand()
            } else {
                let p = self.person_attach.sample(&mut self.rng) as u32;
                if p == follower {
                    continue;
                }
                TARGET_PERSON << 30 | p
            };
            let key = u64::from(follower) << 32 | u64::from(target);
            if self.follow_set.insert(key) {
                self.follows.push(key);
                return Some((follower, target));
            }
        }
        None
    }

    /// Moves an account's follower total by `delta`, keeping the attachment
    /// weights in step.
    fn add_followers(&mut self, target: u32, delta: i64) {
        let index = (target & MAX_POPULATION) as usize;
        let (totals, tree) = match target >> 30 {
            TARGET_INFLUENCER => (&mut self.influencer_followers, &mut self.influencer_attach),
            TARGET_PERSON => (&mut self.person_followers, &mut self.person_attach),
            _ => return,
        };
        let old = totals[index];
        let new = old.saturating_add_signed(delta);
        totals[index] = new;
        tree.add(index, new as i64 - old as i64);
    }
}

/// Ground truth: latent health, churn, and the truth file.
impl Generator {
    /// A relationship's planted health in [−1, 1] and churn offset, if it
    /// churns: stable functions of the seed and the pair, so they cost no
    /// memory and no draws from the stream's generator.
    fn latent(&self, who: Who, brand: u32) -> (f64, Option<i64>) {
        let (k, b) = (who_key(who), u64::from(brand));
        let health = 2.0 * unit(mix64(self.seed ^ 0x6865_616c_7468, k, b)) - 1.0;
        let churns =
            unit(mix64(self.seed ^ 0x0063_6875_726e, k, b)) < CHURN_RATE * (1.0 - health) / 2.0;
        let at = unit(mix64(self.seed ^ 0x6368_7572_6e74, k, b)) * self.span_secs as f64;
        (health, churns.then_some(at as i64))
    }

    /// Effective health of a relationship at the current offset.
    fn health_now(&self, who: Who, brand: u32) -> f64 {
        let (health, churn) = self.latent(who, brand);
        decline(health, churn, self.last_offset)
    }

    fn saw(&mut self, who: Who, brand: u32) {
        if let Some(truth) = &mut self.truth {
            truth.seen.insert((who_key(who), brand));
        }
    }

    /// A purchase's (person, brand) when health drives purchases: draws as
    /// the plain stream does and keeps a draw with probability
    /// `(1 + health) / 2`, so a churned relationship (health −1) never buys.
    fn healthy_purchase(&mut self) -> (u32, u32) {
        let mut pick = (0, 0);
        // 64 rejections in a row happen with probability below 1e-10 unless
        // nearly every relationship has churned; then the last draw stands.
        for _ in 0..64 {
            let person = self.active_person();
            let brand = self.brand_for(Who::Person(person));
            pick = (person, brand);
            let health = self.health_now(Who::Person(person), brand);
            if self.rng.random::<f64>() < (1.0 + health) / 2.0 {
                break;
            }
        }
        self.saw(Who::Person(pick.0), pick.1);
        pick
    }

    /// The purchase an attendee of a planted occasion owes; its attributes
    /// name the occasion (attributes are never scored), so checks can tell
    /// it from the purchases health drives.
    fn planted_purchase(&mut self, line: &mut Vec<u8>, owed: Owed) {
        self.saw(Who::Person(owed.person), owed.brand);
        push_who(line, Who::Person(owed.person));
        push_id(line, "brand", b'b', owed.brand);
        push_fixed(line, "amount", (PLANTED_SALES_EFFECT * 100.0) as i64, 2);
        push_str(line, "currency", "USD");
        line.extend_from_slice(b",\"attributes\":{\"planted\":\"o");
        push_u64(line, owed.occasion);
        line.extend_from_slice(b"\"}");
    }

    /// Writes the ground truth as NDJSON (docs/validity.md): one `model`
    /// line (what is planted), one `relationship` line per person–brand pair
    /// the stream named (planted health and churn time), one `occasion` line
    /// per featured occasion (planted effect, attendees).
    pub fn write_truth<W: Write>(&self, out: &mut W) -> Result<(), GenerateError> {
        let Some(truth) = &self.truth else {
            return Err(GenerateError::InvalidConfig(
                "this stream has no ground truth: build it with Generator::with_truth".into(),
            ));
        };
        let w = PLANTED_WEIGHTS;
        writeln!(
            out,
            "{{\"kind\":\"model\",\"planted_weights\":{{\"sentiment\":{},\"sales\":{},\"service\":{},\"engagement\":{},\"influence\":{},\"values\":{}}},\"churn_rate\":{CHURN_RATE},\"decline_days\":{DECLINE_DAYS},\"planted_sales_effect\":{PLANTED_SALES_EFFECT:.2},\"featured_every\":{FEATURED_EVERY},\"featured_days\":{FEATURED_DAYS}}}",
            w[0], w[1], w[2], w[3], w[4], w[5]
        )?;
        for &(key, brand) in &truth.seen {
            let who = if key >> 40 == 1 {
                Who::Influencer(key as u32)
            } else {
                Who::Person(key as u32)
            };
            let (health, churn) = self.latent(who, brand);
            let mut line = Vec::with_capacity(128);
            line.extend_from_slice(b"{\"kind\":\"relationship\"");
            push_who(&mut line, who);
            push_id(&mut line, "brand", b'b', brand);
            push_fixed(&mut line, "health", (health * 1e6).round() as i64, 6);
            push_key(&mut line, "churn_at");
            match churn {
                None => line.extend_from_slice(b"null"),
                Some(offset) => {
                    let at = DateTime::from_timestamp(self.start_unix + offset, 0)
                        .expect("checked in Generator::new: the whole span is representable");
                    write!(line, "\"{}\"", at.format("%Y-%m-%dT%H:%M:%SZ"))?;
                }
            }
            line.extend_from_slice(b"}\n");
            out.write_all(&line)?;
        }
        for &Featured {
            id, brand, planted, ..
        } in &truth.featured
        {
            let effect = if planted { PLANTED_SALES_EFFECT } else { 0.0 };
            let attendees = truth.attendees.get(&id).map_or(0, BTreeSet::len);
            writeln!(
                out,
                "{{\"kind\":\"occasion\",\"occasion\":\"o{id}\",\"brand\":\"b{brand}\",\"planted_sales_effect\":{effect:.2},\"attendees\":{attendees}}}"
            )?;
        }
        Ok(())
    }
}

/// Writing each kind's fields: exactly the fields the wire format allows.
impl Generator {
    fn purchase(&mut self, line: &mut Vec<u8>) {
        let (person, brand) = if self.truth.is_some() {
            self.healthy_purchase()
        } else {
            let person = self.active_person();
            (person, self.brand_for(Who::Person(person)))
        };
        // Each brand has its own price level (15..120 median), purchases
        // spread log-normally around it.
        let level = 15.0 * 8f64.powf(unit(mix64(self.seed ^ 0x7072_6963, u64::from(brand), 0)));
        let amount = (level * (0.9 * normal(&mut self.rng)).exp()).clamp(1.0, 5_000.0);
        // A quarter of consumers pay in euros, always the same quarter.
        let eur = mix64(self.seed ^ 0x0065_7572, u64::from(person), 0).is_multiple_of(4);
        push_who(line, Who::Person(person));
        push_id(line, "brand", b'b', brand);
        push_fixed(line, "amount", (amount * 100.0).round() as i64, 2);
        push_str(line, "currency", if eur { "EUR" } else { "USD" });
    }

    fn brand_sales(&mut self, line: &mut Vec<u8>) {
        let brand = self.popular_brand();
        // The top brand (weight 1, rank 0) sells ~200k a period.
        let share = self.brand_weight[brand as usize].powf(0.8);
        let amount = (200_000.0 * share * (0.25 * normal(&mut self.rng)).exp()).max(100.0);
        push_id(line, "brand", b'b', brand);
        push_fixed(line, "amount", (amount * 100.0).round() as i64, 2);
    }

    /// A post or a mention; about 20% carry text instead of a sentiment.
    fn talk(&mut self, line: &mut Vec<u8>, influencer_share: f64) {
        let who = self.actor(influencer_share);
        let brand = self.brand_for(who);
        self.saw(who, brand);
        // tanh keeps the draw inside [-1, 1] without a pile-up at the ends.
        let sentiment = (1.2 * self.bias(who, brand) + 0.5 * normal(&mut self.rng)).tanh();
        push_who(line, who);
        push_id(line, "brand", b'b', brand);
        if self.rng.random::<f64>() < 0.2 {
            let tone = if sentiment > 0.2 {
                &POSITIVE_TEXT[..]
            } else if sentiment < -0.2 {
                &NEGATIVE_TEXT[..]
            } else {
                &NEUTRAL_TEXT[..]
            };
            let template = tone[self.rng.random_range(0..tone.len())];
            push_text(line, template, brand);
        } else {
            push_fixed(line, "sentiment", (sentiment * 1000.0).round() as i64, 3);
        }
    }

    fn review(&mut self, line: &mut Vec<u8>) {
        let person = self.active_person();
        let who = Who::Person(person);
        let brand = self.brand_for(who);
        self.saw(who, brand);
        let mood = self.bias(who, brand) + 0.4 * normal(&mut self.rng);
        let rating = (3.0 + 2.2 * mood).round().clamp(1.0, 5.0) as u64;
        push_who(line, who);
        push_id(line, "brand", b'b', brand);
        push_uint(line, "rating", rating);
        if self.rng.random::<f64>() < 0.35 {
            let tone = match rating {
                4..=5 => &POSITIVE_TEXT[..],
                1..=2 => &NEGATIVE_TEXT[..],
                _ => &NEUTRAL_TEXT[..],
            };
            let template = tone[self.rng.random_range(0..tone.len())];
            push_text(line, template, brand);
        }
    }

    /// A support contact whose KPIs hang together: long waits and transfers
    /// go with unresolved cases, low CSAT and high effort.
    fn service(&mut self, line: &mut Vec<u8>) {
        let person = self.active_person();
        let brand = self.brand_for(Who::Person(person));
        self.saw(Who::Person(person), brand);
        // Ground truth: healthy relationships get their problems solved
        // more often and rate the contact higher.
        let (resolve_shift, csat_shift) = if self.truth.is_some() {
            let h = self.health_now(Who::Person(person), brand);
            (0.15 * h, 0.8 * h)
        } else {
            (0.0, 0.0)
        };
        let channel = weighted_index(&CHANNEL_WEIGHT, self.rng.random_range(0..100));
        let wait = CHANNEL_WAIT_MEDIAN[channel] * (0.8 * normal(&mut self.rng)).exp();
        let mut transfers = 0u64;
        while transfers < 6 && self.rng.random::<f64>() < 0.3 {
            transfers += 1;
        }
        let slow = (wait / CHANNEL_WAIT_MEDIAN[channel]).ln().max(0.0);
        let resolved =
            self.rng.random::<f64>() < 0.85 - 0.1 * transfers as f64 - 0.1 * slow + resolve_shift;
        let base = if resolved { 4.3 } else { 2.2 } + csat_shift;
        let csat = (base - 0.4 * slow - 0.3 * transfers as f64 + 0.6 * normal(&mut self.rng))
            .round()
            .clamp(1.0, 5.0) as u64;
        let effort = (2.0
            + transfers as f64
            + if resolved { 0.0 } else { 2.0 }
            + 0.5 * slow
            + 0.8 * normal(&mut self.rng))
        .round()
        .clamp(1.0, 7.0) as u64;
        push_who(line, Who::Person(person));
        push_id(line, "brand", b'b', brand);
        push_str(line, "channel", CHANNELS[channel]);
        push_uint(line, "csat", csat);
        push_uint(line, "effort", effort);
        push_bool(line, "resolved", resolved);
        push_uint(line, "wait_seconds", wait.round() as u64);
        push_uint(line, "transfers", transfers);
    }

    fn endorsement(&mut self, line: &mut Vec<u8>) {
        let influencer = self.active_influencer();
        let brand = self.popular_brand();
        let endorsers = &mut self.endorsers[brand as usize];
        if endorsers.len() < 16 && !endorsers.contains(&influencer) {
            endorsers.push(influencer);
        }
        let strength = 200 + self.rng.random_range(0..=800);
        push_who(line, Who::Influencer(influencer));
        push_id(line, "brand", b'b', brand);
        push_fixed(line, "strength", strength, 3);
    }

    /// A new follower total drifting from the last report of that account.
    /// Gains and losses accrue per day since that report (not per report),
    /// so totals stay plausible however often an account is reported: about
    /// +0.2%/day for influencers, +0.35%/day for consumers, net of losses,
    /// plus a rare jump (a post that went viral).
    fn audience(&mut self, line: &mut Vec<u8>) {
        let (who, target, gain_rate, loss_rate) = if self.rng.random::<f64>() < 0.7 {
            let i = self.rng.random_range(0..self.influencers);
            (
                Who::Influencer(i),
                TARGET_INFLUENCER << 30 | i,
                0.003,
                0.001,
            )
        } else {
            let p = self.active_person();
            (Who::Person(p), TARGET_PERSON << 30 | p, 0.005, 0.0015)
        };
        let index = (target & MAX_POPULATION) as usize;
        let (old, reported) = match who {
            Who::Influencer(_) => (
                self.influencer_followers[index],
                &mut self.influencer_reported[index],
            ),
            Who::Person(_) => (
                self.person_followers[index],
                &mut self.person_reported[index],
            ),
        };
        let now = self.last_offset as u32;
        let days = f64::from(now - *reported) / 86_400.0;
        *reported = now;

        let old_f = old as f64;
        let gain = old_f * gain_rate * days * (0.5 * normal(&mut self.rng)).exp();
        let loss = old_f * loss_rate * days * (0.5 * normal(&mut self.rng)).exp();
        let mut new = old_f + gain - loss;
        if self.rng.random::<f64>() < (0.01 * days).min(0.5) {
            new *= 1.2 + self.rng.random::<f64>();
        }
        // Stochastic rounding keeps small accounts drifting on average
        // instead of rounding every change of a fraction away; the cap is
        // above any real account and keeps the sums far from overflow.
        let new = (new + self.rng.random::<f64>()).floor().clamp(0.0, 2e9) as u64;
        self.add_followers(target, new as i64 - old as i64);
        push_who(line, who);
        push_uint(line, "followers", new);
    }

    fn follow(&mut self, line: &mut Vec<u8>, follower: u32, target: u32) {
        self.add_followers(target, 1);
        push_who(line, Who::Person(follower));
        push_target(line, target);
        if self.rng.random::<f64>() < 0.6 {
            let strength = 1 + self.rng.random_range(0..1000);
            push_fixed(line, "strength", strength, 3);
        }
    }

    fn unfollow(&mut self, line: &mut Vec<u8>) {
        let index = self.rng.random_range(0..self.follows.len());
        let key = self.follows.swap_remove(index);
        self.follow_set.remove(&key);
        let (follower, target) = ((key >> 32) as u32, key as u32);
        self.add_followers(target, -1);
        push_who(line, Who::Person(follower));
        push_target(line, target);
    }

    fn occasion(&mut self, line: &mut Vec<u8>) {
        let id = self.occasions.len() as u64;
        let brand = self.popular_brand();
        self.occasions.push(brand);
        let now = self.last_offset;
        if let Some(truth) = &mut self.truth {
            truth.occasion(id, brand, now);
        }
        // 0..3 performers, preferably influencers who endorse the host.
        let count = weighted_index(&[25, 40, 25, 10], self.rng.random_range(0..100));
        let mut performers = [0u32; 3];
        let mut chosen = 0;
        for _ in 0..count {
            let endorsers = &self.endorsers[brand as usize];
            let candidate = if !endorsers.is_empty() && self.rng.random::<f64>() < 0.7 {
                endorsers[self.rng.random_range(0..endorsers.len())]
            } else {
                self.active_influencer()
            };
            if !performers[..chosen].contains(&candidate) {
                performers[chosen] = candidate;
                chosen += 1;
            }
        }
        line.extend_from_slice(b",\"occasion\":\"o");
        push_u64(line, id);
        line.push(b'"');
        push_id(line, "brand", b'b', brand);
        line.extend_from_slice(b",\"performers\":[");
        for (k, &p) in performers[..chosen].iter().enumerate() {
            if k > 0 {
                line.push(b',');
            }
            line.extend_from_slice(b"\"i");
            push_u64(line, u64::from(p));
            line.push(b'"');
        }
        line.push(b']');
        self.push_tags(line, &OCCASION_TAGS);
    }

    fn attendance(&mut self, line: &mut Vec<u8>) {
        // Attendance follows the occasion: pick among the most recent ones.
        let recent = self.occasions.len().min(32);
        let mut occasion = self.occasions.len() - 1 - self.rng.random_range(0..recent);
        let person = self.engaged_person();
        if let Some(truth) = &self.truth {
            let now = self.last_offset;
            // A featured occasion is attended only in its first days; later
            // picks of it go to the newest occasion.
            if truth
                .featured(occasion as u64)
                .is_some_and(|f| !f.open(now))
            {
                occasion = self.occasions.len() - 1;
            }
            // The newest open featured occasion draws half the crowd.
            if let Some(f) = truth.featured.last()
                && f.open(now)
                && self.rng.random::<f64>() < 0.5
            {
                occasion = f.id as usize;
            }
            // A planted effect: one purchase 1 to 5 days after attending.
            let delay = 86_400.0 * (1.0 + 4.0 * self.rng.random::<f64>());
            let due = self.last_offset + delay as i64;
            let host = self.occasions[occasion];
            if let Some(truth) = &mut self.truth {
                truth.attend(occasion as u64, person, host, due);
            }
        }
        push_who(line, Who::Person(person));
        line.extend_from_slice(b",\"occasion\":\"o");
        push_u64(line, occasion as u64);
        line.push(b'"');
    }

    fn cause(&mut self, line: &mut Vec<u8>) {
        let brand = self.popular_brand();
        let amount = 25_000.0 * (1.0 * normal(&mut self.rng)).exp();
        push_id(line, "brand", b'b', brand);
        self.push_tags(line, &CAUSE_TAGS);
        push_fixed(line, "amount", (amount * 100.0).round() as i64, 2);
    }

    fn consent(&mut self, line: &mut Vec<u8>) {
        let person = self.rng.random_range(0..self.people);
        let granted = self.rng.random::<f64>() < 0.85;
        push_who(line, Who::Person(person));
        push_bool(line, "granted", granted);
    }

    /// `"tags":[..]` with one or two distinct tags from `pool`.
    fn push_tags(&mut self, line: &mut Vec<u8>, pool: &[&str]) {
        let first = self.rng.random_range(0..pool.len());
        line.extend_from_slice(b",\"tags\":[\"");
        line.extend_from_slice(pool[first].as_bytes());
        line.push(b'"');
        if self.rng.random::<f64>() < 0.4 {
            let second = (first + 1 + self.rng.random_range(0..pool.len() - 1)) % pool.len();
            line.extend_from_slice(b",\"");
            line.extend_from_slice(pool[second].as_bytes());
            line.push(b'"');
        }
        line.push(b']');
    }

    /// RFC 3339 UTC with seconds; the date part is formatted once per day.
    fn push_time(&mut self, line: &mut Vec<u8>, offset: i64) {
        let secs = self.start_unix + offset;
        let day = secs.div_euclid(86_400);
        if day != self.cached_day {
            let midnight = DateTime::from_timestamp(day * 86_400, 0)
                .expect("checked in Generator::new: the whole span is representable");
            self.date_prefix.clear();
            write!(self.date_prefix, "{}T", midnight.format("%Y-%m-%d"))
                .expect("writing to a Vec cannot fail");
            self.cached_day = day;
        }
        line.extend_from_slice(&self.date_prefix);
        let sod = secs.rem_euclid(86_400) as u64;
        for (k, part) in [sod / 3600, sod / 60 % 60, sod % 60]
            .into_iter()
            .enumerate()
        {
            if k > 0 {
                line.push(b':');
            }
            line.push(b'0' + (part / 10) as u8);
            line.push(b'0' + (part % 10) as u8);
        }
        line.push(b'Z');
    }
}

/// Walker's alias method (Vose's construction): O(1) draws from a fixed
/// discrete distribution, from one 64-bit random word.
struct AliasTable {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl AliasTable {
    fn new(weights: &[f64]) -> AliasTable {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut prob: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| prob[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u32;
            prob[l] -= 1.0 - prob[s];
            if prob[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers are 1 up to rounding.
        for i in small.into_iter().chain(large) {
            prob[i] = 1.0;
        }
        AliasTable { prob, alias }
    }

    /// High 32 bits pick the column, low 32 bits toss the coin.
    fn sample(&self, h: u64) -> usize {
        let column = (((h >> 32) * self.prob.len() as u64) >> 32) as usize;
        if unit(h << 32) < self.prob[column] {
            column
        } else {
            self.alias[column] as usize
        }
    }
}

/// A Fenwick tree of integer weights: draws proportional to weights that
/// change as the stream goes (followers gained and lost), in O(log n).
struct Fenwick {
    tree: Vec<u64>,
    total: u64,
}

impl Fenwick {
    fn from_weights(weights: impl Iterator<Item = u64>) -> Fenwick {
        let mut tree: Vec<u64> = std::iter::once(0).chain(weights).collect();
        let n = tree.len() - 1;
        for i in 1..=n {
            let parent = i + (i & i.wrapping_neg());
            if parent <= n {
                tree[parent] += tree[i];
            }
        }
        // The prefix sum up to n: the nodes on n's binary decomposition.
        let mut total = 0;
        let mut i = n;
        while i > 0 {
            total += tree[i];
            i &= i - 1;
        }
        Fenwick { tree, total }
    }

    fn add(&mut self, index: usize, delta: i64) {
        let n = self.tree.len() - 1;
        let mut i = index + 1;
        while i <= n {
            self.tree[i] = self.tree[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
        self.total = self.total.wrapping_add_signed(delta);
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let mut r = rng.random_range(0..self.total);
        let n = self.tree.len() - 1;
        let mut pos = 0;
        let mut step = if n == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        while step > 0 {
            if pos + step <= n && self.tree[pos + step] <= r {
                pos += step;
                r -= self.tree[pos];
            }
            step >>= 1;
        }
        pos
    }
}

fn cumulative(mix: &[(EventType, u32)]) -> Vec<(EventType, u32)> {
    let mut sum = 0;
    mix.iter()
        .map(|&(kind, weight)| {
            sum += weight;
            (kind, sum)
        })
        .collect()
}

/// Index of the bucket holding `r` in cumulative order of `weights`.
fn weighted_index(weights: &[u32], mut r: u32) -> usize {
    for (i, &w) in weights.iter().enumerate() {
        if r < w {
            return i;
        }
        r -= w;
    }
    weights.len() - 1
}

/// A random permutation of 0..n (Fisher–Yates), for ranks that carry no
/// relation to ids.
fn shuffled(rng: &mut ChaCha8Rng, n: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}

/// Pareto(x_m, alpha) by inversion.
fn pareto(rng: &mut ChaCha8Rng, scale: f64, alpha: f64) -> f64 {
    let u = 1.0 - rng.random::<f64>();
    scale * u.powf(-1.0 / alpha)
}

/// A standard normal draw (Box–Muller, one of the pair).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// SplitMix64 finaliser over three words: stable per-entity traits (home
/// brands, attitudes, price levels) without storing them.
fn mix64(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a
        .wrapping_add(b.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(c.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The high 53 bits of `h` as a float in [0, 1).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn who_key(who: Who) -> u64 {
    match who {
        Who::Person(p) => u64::from(p),
        Who::Influencer(i) => 1 << 40 | u64::from(i),
    }
}

fn push_u64(line: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[i..]);
}

fn push_key(line: &mut Vec<u8>, name: &str) {
    line.extend_from_slice(b",\"");
    line.extend_from_slice(name.as_bytes());
    line.extend_from_slice(b"\":");
}

fn push_uint(line: &mut Vec<u8>, name: &str, value: u64) {
    push_key(line, name);
    push_u64(line, value);
}

fn push_bool(line: &mut Vec<u8>, name: &str, value: bool) {
    push_key(line, name);
    line.extend_from_slice(if value { b"true" } else { b"false" });
}

/// Only for strings that need no JSON escaping (our constants).
fn push_str(line: &mut Vec<u8>, name: &str, value: &str) {
    push_key(line, name);
    line.push(b'"');
    line.extend_from_slice(value.as_bytes());
    line.push(b'"');
}

fn push_id(line: &mut Vec<u8>, name: &str, prefix: u8, n: u32) {
    push_key(line, name);
    line.push(b'"');
    line.push(prefix);
    push_u64(line, u64::from(n));
    line.push(b'"');
}

fn push_who(line: &mut Vec<u8>, who: Who) {
    match who {
        Who::Person(p) => push_id(line, "person", b'p', p),
        Who::Influencer(i) => push_id(line, "person", b'i', i),
    }
}

fn push_target(line: &mut Vec<u8>, target: u32) {
    let prefix = match target >> 30 {
        TARGET_INFLUENCER => b'i',
        TARGET_PERSON => b'p',
        _ => b'b',
    };
    push_id(line, "target", prefix, target & MAX_POPULATION);
}

/// A decimal with exactly `decimals` digits from an integer scaled by
/// 10^decimals: exact, and no float formatting on the hot path.
fn push_fixed(line: &mut Vec<u8>, name: &str, scaled: i64, decimals: u32) {
    push_key(line, name);
    if scaled < 0 {
        line.push(b'-');
    }
    let magnitude = scaled.unsigned_abs();
    let unit = 10u64.pow(decimals);
    push_u64(line, magnitude / unit);
    line.push(b'.');
    let mut frac = magnitude % unit;
    let mut digits = [b'0'; 8];
    for d in (0..decimals as usize).rev() {
        digits[d] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    line.extend_from_slice(&digits[..decimals as usize]);
}

fn push_text(line: &mut Vec<u8>, (before, after): (&str, &str), brand: u32) {
    push_key(line, "text");
    line.push(b'"');
    line.extend_from_slice(before.as_bytes());
    line.push(b'b');
    push_u64(line, u64::from(brand));
    line.extend_from_slice(after.as_bytes());
    line.push(b'"');
}

/// The events of a small generated stream (300 people, 10 influencers, 5
/// brands, 6,000 events: influencers, brand associations, occasions and
/// sales credits, causes), parsed and validated as ingest does them (unit
/// tests' input; the integration tests have `support::generated_events`).
#[cfg(test)]
pub(crate) fn small_generated_events(
    model: &crate::score::ScoringModel,
) -> Vec<crate::domain::Event> {
    let config = GenerateConfig {
        people: 300,
        influencers: 10,
        brands: 5,
        events: 6_000,
        ..GenerateConfig::default()
    };
    let mut ndjson = Vec::new();
    write_ndjson(&config, &mut ndjson).expect("a generated stream is written");
    let values: Vec<serde_json::Value> = ndjson
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a generated line is JSON"))
        .collect();
    let valid = crate::ingest::validate_all(&values, &model.currency);
    valid.good.into_iter().map(|(_, event)| event).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenwick_draws_follow_changing_weights() {
        let mut tree = Fenwick::from_weights([1u64, 0, 3, 0, 4].into_iter());
        assert_eq!(tree.total, 8);
        tree.add(4, -4);
        tree.add(1, 2);
        // Weights are now [1, 2, 3, 0, 0]: draws land in proportion, never on 3 or 4.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0u32; 5];
        for _ in 0..6_000 {
            counts[tree.sample(&mut rng)] += 1;
        }
        assert_eq!(counts[3] + counts[4], 0, "{counts:?}");
        assert!((800..1_200).contains(&counts[0]), "{counts:?}");
        assert!((2_700..3_300).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn alias_table_draws_in_proportion() {
        let table = AliasTable::new(&[1.0, 0.0, 2.0, 1.0]);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut counts = [0u32; 4];
        for _ in 0..8_000 {
            counts[table.sample(rng.next_u64())] += 1;
        }
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!((3_700..4_300).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn fixed_decimals_are_exact() {
        let mut line = Vec::new();
        push_fixed(&mut line, "s", -5, 3);
        push_fixed(&mut line, "a", 123_456, 2);
        push_fixed(&mut line, "t", 1_000, 3);
        assert_eq!(line, br#","s":-0.005,"a":1234.56,"t":1.000"#);
    }
}
