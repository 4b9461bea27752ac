//! An open-loop load generator for `fusion serve` (issue #11): writers post
//! at a fixed offered rate whatever the answers' latency, readers poll
//! relationships, brand rankings and brand summaries at fixed rates, and
//! marker events measure freshness, of the rankings and of the change feed.
//! Prints `name=value` lines; it measures and asserts nothing. Used by
//! `benches/stream.sh`.
//!
//! Open loop, kept lean on a shared two-core machine: every request has a
//! scheduled send time (offered rate); each client is `inflight` blocking
//! threads that take the next scheduled request in turn, so a slow answer
//! does not hold the next request back (up to `clients × inflight` in
//! flight); a latency is measured from the scheduled time, not the send (a
//! request sent late because every thread was busy counts the wait: no
//! coordinated omission, as wrk2 does it).
//!
//! Events come from an NDJSON file (`fusion generate`); each is sent under
//! a fresh id (`s<run>-<request>-<k>`) stamped with the clock at send, so
//! the stream is live. A marker is a purchase by a new person for a brand
//! of its own, posted alone; its freshness is the time from its
//! acknowledgement until it heads its brand's ranking, and its feed latency
//! the time from its acknowledgement until its change arrives on a
//! subscriber of `GET /v1/stream` (issue #13: how fresh the feed is under
//! the stream). Each ranking and summary read's `Fusion-Position` against
//! the positions of the acknowledgements before it gives the served
//! ranking's lag behind the log, in events and in seconds.
//!
//! Usage: stream BASE STORE_NDJSON STREAM_NDJSON [key=value...]
//!   rate=20000 (events/s offered), batch=500 (events per request),
//!   clients=4, inflight=8 (threads per client), seconds=20,
//!   relationship_rate=50, ranking_rate=5,
//!   summary_rate=5 (reads/s per kind), pairs=2000 (relationships read),
//!   marker_ms=500 (a marker every so often), patience=0 (seconds after
//!   the stream's end past which requests not sent yet are given up and
//!   counted as not absorbed, printed as `given_up_requests`; 0: never,
//!   every request is sent however long it takes).

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

/// What one request of a kind did.
#[derive(Default)]
struct Samples {
    /// Seconds from the scheduled send to the answer, of 2xx answers.
    latencies: Vec<f64>,
    /// Answers by status (0: no answer).
    statuses: HashMap<u16, u64>,
}

impl Samples {
    fn print(&self, name: &str) {
        let mut l = self.latencies.clone();
        l.sort_by(f64::total_cmp);
        let q = |q: f64| {
            if l.is_empty() {
                f64::NAN
            } else {
                l[((l.len() as f64 - 1.0) * q).round() as usize]
            }
        };
        println!("{name}_ok={}", l.len());
        println!("{name}_p50_ms={:.1}", q(0.5) * 1e3);
        println!("{name}_p99_ms={:.1}", q(0.99) * 1e3);
        let mut statuses: Vec<_> = self.statuses.iter().filter(|(s, _)| **s >= 300).collect();
        statuses.sort();
        for (status, n) in statuses {
            println!("{name}_status_{status}={n}");
        }
    }
}

struct Settings {
    base: String,
    rate: f64,
    batch: usize,
    clients: usize,
    inflight: usize,
    seconds: f64,
    relationship_rate: f64,
    ranking_rate: f64,
    summary_rate: f64,
    pairs: usize,
    marker_ms: u64,
    patience: f64,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Sends a request; answers the status and body (status 0 when no answer).
fn send(req: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String) {
    let (status, text, _) = send_at(req);
    (status, text)
}

/// [`send`], with the log position the answer reflects (`Fusion-Position`).
fn send_at(
    req: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> (u16, String, Option<u64>) {
    match req {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let position = resp
                .headers()
                .get("fusion-position")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let mut text = String::new();
            let _ = resp.body_mut().as_reader().read_to_string(&mut text);
            (status, text, position)
        }
        Err(_) => (0, String::new(), None),
    }
}

/// When each acknowledged write was answered and the log position it
/// reached, and when each ranking or summary read was answered and the
/// position it reflects: the served ranking's lag behind the log.
#[derive(Default)]
struct Positions {
    acks: Vec<(Instant, u64)>,
    reads: Vec<(Instant, u64)>,
}

impl Positions {
    /// At each read: the events acknowledged before it that it does not
    /// reflect (the highest position acknowledged minus its own), and how
    /// long the oldest of them had been acknowledged, seconds (0 when it
    /// reflects every acknowledged event). Each sorted.
    fn lags(&self) -> (Vec<f64>, Vec<f64>) {
        let (mut events, mut seconds) = (Vec::new(), Vec::new());
        for &(read, reflects) in &self.reads {
            let before = self.acks.iter().filter(|(at, _)| *at <= read);
            let highest = before.clone().map(|(_, p)| *p).max().unwrap_or(0);
            let oldest_missed = before
                .filter(|(_, p)| *p > reflects)
                .map(|(at, _)| *at)
                .min();
            events.push(highest.saturating_sub(reflects) as f64);
            seconds.push(oldest_missed.map_or(0.0, |at| (read - at).as_secs_f64()));
        }
        events.sort_by(f64::total_cmp);
        seconds.sort_by(f64::total_cmp);
        (events, seconds)
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Waits until `at` (no wait when late: open loop).
fn wait_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: stream BASE STORE_NDJSON STREAM_NDJSON [key=value...]";
    let base = args.next().context(usage)?;
    let store_path = args.next().context(usage)?;
    let stream_path = args.next().context(usage)?;
    let mut s = Settings {
        base: base.trim_end_matches('/').to_string(),
        rate: 20_000.0,
        batch: 500,
        clients: 4,
        inflight: 8,
        seconds: 20.0,
        relationship_rate: 50.0,
        ranking_rate: 5.0,
        summary_rate: 5.0,
        pairs: 2000,
        marker_ms: 500,
        patience: 0.0,
    };
    for arg in args {
        let (k, v) = arg.split_once('=').context("settings are key=value")?;
        match k {
            "rate" => s.rate = v.parse()?,
            "batch" => s.batch = v.parse()?,
            "clients" => s.clients = v.parse()?,
            "inflight" => s.inflight = v.parse()?,
            "seconds" => s.seconds = v.parse()?,
            "relationship_rate" => s.relationship_rate = v.parse()?,
            "ranking_rate" => s.ranking_rate = v.parse()?,
            "summary_rate" => s.summary_rate = v.parse()?,
            "pairs" => s.pairs = v.parse()?,
            "marker_ms" => s.marker_ms = v.parse()?,
            "patience" => s.patience = v.parse()?,
            other => anyhow::bail!("unknown setting {other}"),
        }
    }
    // The relationships and brands to read: pairs named by the store's events.
    let mut pairs = BTreeSet::new();
    let mut brands = BTreeSet::new();
    for line in std::fs::read_to_string(&store_path)?.lines() {
        let v: Value = serde_json::from_str(line)?;
        if let Some(b) = v.get("brand").and_then(Value::as_str) {
            brands.insert(b.to_string());
            if let Some(p) = v.get("person").and_then(Value::as_str)
                && pairs.len() < s.pairs
            {
                pairs.insert((p.to_string(), b.to_string()));
            }
        }
    }
    let pairs: Vec<_> = pairs.into_iter().collect();
    let brands: Vec<_> = brands.into_iter().collect();
    anyhow::ensure!(!pairs.is_empty(), "no relationship in {store_path}");
    let events: Vec<Value> = std::fs::read_to_string(&stream_path)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!events.is_empty(), "no event in {stream_path}");
    let events = Arc::new(events);
    let run = chrono::Utc::now().timestamp_millis();

    let s = Arc::new(s);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(s.seconds);
    let requests = ((s.rate * s.seconds) / s.batch as f64).round() as u64;
    let interval = s.batch as f64 / s.rate;
    let accepted = Arc::new(AtomicU64::new(0));
    let last_ack = Arc::new(Mutex::new(start));
    let posts = Arc::new(Mutex::new(Samples::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let positions: Arc<Mutex<Positions>> = Arc::default();
    let given_up = Arc::new(AtomicU64::new(0));
    // Past this, an overwhelmed server is not waited for (`patience`).
    let give_up_at = (s.patience > 0.0).then(|| end + Duration::from_secs_f64(s.patience));

    let next_request = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..(s.clients * s.inflight).max(1) {
        let next_request = Arc::clone(&next_request);
        let (s, events, accepted, last_ack, posts, given_up, positions) = (
            Arc::clone(&s),
            Arc::clone(&events),
            Arc::clone(&accepted),
            Arc::clone(&last_ack),
            Arc::clone(&posts),
            Arc::clone(&given_up),
            Arc::clone(&positions),
        );
        writers.push(std::thread::spawn(move || {
            let agent = agent();
            let url = format!("{}/v1/events", s.base);
            loop {
                let i = next_request.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let scheduled = start + Duration::from_secs_f64(i as f64 * interval);
                if give_up_at.is_some_and(|at| Instant::now() > at) {
                    given_up.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                wait_until(scheduled);
                let time = now_rfc3339();
                let mut body = String::with_capacity(s.batch * 160);
                for k in 0..s.batch {
                    let n = (i as usize * s.batch + k) % events.len();
                    let mut e = events[n].clone();
                    e["id"] = Value::String(format!("s{run}-{i}-{k}"));
                    e["time"] = Value::String(time.clone());
                    body.push_str(&e.to_string());
                    body.push('\n');
                }
                let (status, text, position) = send_at(
                    agent
                        .post(&url)
                        .header("Content-Type", "application/x-ndjson")
                        .send(body.as_bytes()),
                );
                let done = Instant::now();
                if let (200..300, Some(p)) = (status, position) {
                    positions.lock().unwrap().acks.push((done, p));
                }
                let mut p = posts.lock().unwrap();
                *p.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    p.latencies.push((done - scheduled).as_secs_f64());
                    let n = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["accepted"].as_u64())
                        .unwrap_or(0);
                    accepted.fetch_add(n, Ordering::Relaxed);
                    let mut last = last_ack.lock().unwrap();
                    *last = (*last).max(done);
                }
            }
        }));
    }

    // Readers: one thread per kind, each at its own fixed rate.
    let reader = |name: &'static str, rate: f64, path: Box<dyn Fn(u64) -> String + Send>| {
        let (s, stop, positions) = (Arc::clone(&s), Arc::clone(&stop), Arc::clone(&positions));
        std::thread::spawn(move || {
            let agent = agent();
            let mut samples = Samples::default();
            if rate <= 0.0 {
                return (name, samples);
            }
            let mut i = 0u64;
            loop {
                let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
                if scheduled >= end || stop.load(Ordering::Relaxed) {
                    break;
                }
                wait_until(scheduled);
                let (status, _, position) =
                    send_at(agent.get(format!("{}{}", s.base, path(i))).call());
                *samples.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    let done = Instant::now();
                    samples.latencies.push((done - scheduled).as_secs_f64());
                    // Rankings and summaries read the shared ranking.
                    if let (true, Some(p)) = (name != "read_relationship", position) {
                        positions.lock().unwrap().reads.push((done, p));
                    }
                }
                i += 1;
            }
            (name, samples)
        })
    };
    let (p, b1, b2) = (pairs.clone(), brands.clone(), brands.clone());
    let readers = vec![
        reader(
            "read_relationship",
            s.relationship_rate,
            Box::new(move |i| {
                let (person, brand) = &p[(i as usize * 7919) % p.len()];
                format!("/v1/relationships/{person}/{brand}")
            }),
        ),
        reader(
            "read_ranking",
            s.ranking_rate,
            Box::new(move |i| {
                format!(
                    "/v1/brands/{}/relationships?limit=20",
                    b1[i as usize % b1.len()]
                )
            }),
        ),
        reader(
            "read_summary",
            s.summary_rate,
            Box::new(move |i| format!("/v1/brands/{}", b2[i as usize % b2.len()])),
        ),
    ];

    // The change feed: one subscriber for the whole run, noting when each
    // marker's change arrives (its brand is `mkb<run>-<k>`).
    let acks: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let arrivals: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    {
        let (base, arrivals) = (s.base.clone(), Arc::clone(&arrivals));
        let prefix = format!("mkb{run}-");
        std::thread::spawn(move || subscribe(&base, &prefix, &arrivals));
    }

    // Markers: one at a time, each polled until it heads its brand.
    let marker = {
        let (s, stop, acks, positions) = (
            Arc::clone(&s),
            Arc::clone(&stop),
            Arc::clone(&acks),
            Arc::clone(&positions),
        );
        std::thread::spawn(move || {
            let agent = agent();
            let mut fresh = Vec::new();
            let mut unseen = 0u64;
            let mut k = 0u64;
            let mut next = start;
            while next < end && !stop.load(Ordering::Relaxed) {
                wait_until(next);
                next += Duration::from_millis(s.marker_ms);
                let (person, brand) = (format!("mkp{run}-{k}"), format!("mkb{run}-{k}"));
                let event = serde_json::json!({"id": format!("mk{run}-{k}"), "type": "purchase",
                    "time": now_rfc3339(), "person": person, "brand": brand, "amount": 10});
                k += 1;
                let (status, _, position) = send_at(
                    agent
                        .post(format!("{}/v1/events", s.base))
                        .header("Content-Type", "application/json")
                        .send(event.to_string().as_bytes()),
                );
                if status != 200 {
                    continue;
                }
                let acked = Instant::now();
                if let Some(p) = position {
                    positions.lock().unwrap().acks.push((acked, p));
                }
                acks.lock().unwrap().insert(k - 1, acked);
                let url = format!("{}/v1/brands/{brand}/relationships?limit=1", s.base);
                loop {
                    let (status, text) = send(agent.get(&url).call());
                    if status == 200 && text.contains(&person) {
                        fresh.push(acked.elapsed().as_secs_f64());
                        break;
                    }
                    if acked.elapsed() > Duration::from_secs(30) {
                        unseen += 1;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            (fresh, unseen)
        })
    };

    for w in writers {
        let _ = w.join();
    }
    let writing = (*last_ack.lock().unwrap() - start).as_secs_f64().max(1e-3);
    stop.store(true, Ordering::Relaxed);
    let offered = requests as f64 * s.batch as f64 / s.seconds;
    println!("offered_events_per_s={offered:.0}");
    println!("batch={}", s.batch);
    println!("clients={}", s.clients);
    println!("in_flight_max={}", s.clients * s.inflight);
    let accepted = accepted.load(Ordering::Relaxed);
    println!("accepted_events={accepted}");
    println!("given_up_requests={}", given_up.load(Ordering::Relaxed));
    println!(
        "absorbed_events_per_s={:.0}",
        accepted as f64 / writing.max(s.seconds)
    );
    println!(
        "absorbed_fraction={:.3}",
        accepted as f64 / (requests as f64 * s.batch as f64)
    );
    posts.lock().unwrap().print("ack");
    for r in readers {
        if let Ok((name, samples)) = r.join() {
            samples.print(name);
        }
    }
    if let Ok((mut fresh, unseen)) = marker.join() {
        fresh.sort_by(f64::total_cmp);
        println!("markers_seen={}", fresh.len());
        println!("markers_unseen_30s={unseen}");
        println!("freshness_p50_ms={:.1}", quantile(&fresh, 0.5) * 1e3);
        println!("freshness_p99_ms={:.1}", quantile(&fresh, 0.99) * 1e3);
    }
    let (lag_events, lag_seconds) = positions.lock().unwrap().lags();
    println!("ranking_lag_reads={}", lag_events.len());
    println!("ranking_lag_events_p50={:.0}", quantile(&lag_events, 0.5));
    println!("ranking_lag_events_p99={:.0}", quantile(&lag_events, 0.99));
    println!(
        "ranking_lag_p50_ms={:.1}",
        quantile(&lag_seconds, 0.5) * 1e3
    );
    println!(
        "ranking_lag_p99_ms={:.1}",
        quantile(&lag_seconds, 0.99) * 1e3
    );
    let (acks, arrivals) = (acks.lock().unwrap(), arrivals.lock().unwrap());
    let mut feed: Vec<f64> = acks
        .iter()
        .filter_map(|(k, acked)| {
            let arrived = arrivals.get(k)?;
            // An arrival before the client read its answer counts as 0.
            Some(arrived.saturating_duration_since(*acked).as_secs_f64())
        })
        .collect();
    feed.sort_by(f64::total_cmp);
    println!("feed_markers_seen={}", feed.len());
    println!("feed_markers_unseen={}", acks.len() - feed.len());
    println!("feed_latency_p50_ms={:.1}", quantile(&feed, 0.5) * 1e3);
    println!("feed_latency_p99_ms={:.1}", quantile(&feed, 0.99) * 1e3);
    Ok(())
}

/// The `q` quantile of sorted samples (NaN when there are none).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        f64::NAN
    } else {
        sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
    }
}

/// Reads `GET /v1/stream` until the process ends (again from now if the
/// server cuts it off), noting when the first change of each marker brand
/// `<prefix><k>` arrives.
fn subscribe(base: &str, prefix: &str, arrivals: &Mutex<HashMap<u64, Instant>>) {
    use std::io::BufRead;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    loop {
        let Ok(resp) = agent
            .get(format!("{base}/v1/stream"))
            .header("Accept", "text/event-stream")
            .call()
        else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            if !data.contains(prefix) {
                continue;
            }
            let arrived = Instant::now();
            let Ok(change) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            let k = change["brand"]
                .as_str()
                .and_then(|b| b.strip_prefix(prefix))
                .and_then(|k| k.parse::<u64>().ok());
            if let Some(k) = k {
                arrivals.lock().unwrap().entry(k).or_insert(arrived);
            }
        }
    }
}
