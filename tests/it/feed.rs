//! The change feed, `GET /v1/stream` (issue #13 item 1), against a real
//! `fusion serve`, read by a plain HTTP/1.1 client over a TCP socket
//! (chunked transfer decoded here, Server-Sent Events parsed here): ids are
//! log positions, causes name events, filters and `min_delta` hold,
//! `Last-Event-ID` resumes without a gap, a resume past the window gets a
//! reset, and a slow subscriber is cut off with a resumable position while
//! another keeps receiving.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Launch, Server};

/// How long a reader waits for the next thing before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// One Server-Sent Event (comments are counted, not kept).
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// A subscriber: an open `GET /v1/stream` and what it has read.
pub struct Stream {
    reader: BufReader<TcpStream>,
    /// Decoded body bytes not parsed yet.
    pending: Vec<u8>,
    pub status: u16,
    pub content_type: String,
    /// Heartbeat comment lines seen.
    pub comments: usize,
    ended: bool,
}

impl Stream {
    pub fn open(s: &Server, query: &str, headers: &[(&str, &str)]) -> Stream {
        let authority = s.base.trim_start_matches("http://");
        let mut socket = TcpStream::connect(authority).expect("connect");
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut head = format!(
            "GET /v1/stream{query} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n"
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).unwrap();
        let mut reader = BufReader::new(socket);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut content_type = String::new();
        let mut chunked = false;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (name, value) = l.split_once(':').unwrap();
            let name = name.to_ascii_lowercase();
            if name == "content-type" {
                content_type = value.trim().to_string();
            }
            if name == "transfer-encoding" && value.trim() == "chunked" {
                chunked = true;
            }
        }
        assert!(chunked || status != 200, "the stream is chunked");
        Stream {
            reader,
            pending: Vec::new(),
            status,
            content_type,
            comments: 0,
            ended: false,
        }
    }

    /// Reads one chunk into `pending`; false at the end of the body.
    fn fill(&mut self) -> bool {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a chunk in time");
        let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
        if size == 0 {
            self.ended = true;
            return false;
        }
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).unwrap();
        self.pending.extend_from_slice(&chunk[..size]);
        true
    }

    /// The next block of the stream: `Ok` an event, `Err(())` a comment
    /// (a heartbeat); `None` when the stream ended.
    fn block(&mut self) -> Option<Result<Sse, ()>> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = String::from_utf8(block).unwrap();
                let (mut event, mut id, mut data) = ("message".to_string(), None, String::new());
                let mut comment = false;
                for line in text.lines() {
                    if line.starts_with(':') {
                        comment = true;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if comment && data.is_empty() {
                    self.comments += 1;
                    return Some(Err(()));
                }
                if data.is_empty() {
                    continue; // the retry line
                }
                return Some(Ok(Sse {
                    event,
                    id,
                    data: serde_json::from_str(&data).unwrap(),
                }));
            }
            if self.ended || !self.fill() {
                return None;
            }
        }
    }

    /// The next event, heartbeats skipped; `None` when the stream ended.
    /// Fails when none comes within `PATIENCE` (heartbeats do not count).
    pub fn next(&mut self) -> Option<Sse> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.block()? {
                Ok(e) => return Some(e),
                Err(()) => assert!(Instant::now() < deadline, "no event in {PATIENCE:?}"),
            }
        }
    }

    /// The next `change` event (heartbeats skipped); fails on anything else.
    fn change(&mut self) -> Sse {
        let e = self.next().expect("a change before the stream ends");
        assert_eq!(e.event, "change", "{e:?}");
        e
    }

    /// `n` changes.
    fn changes(&mut self, n: usize) -> Vec<Sse> {
        (0..n).map(|_| self.change()).collect()
    }
}

fn purchase(id: &str, person: &str, brand: &str, minute: u32, amount: f64) -> Value {
    json!({"id": id, "type": "purchase", "time": format!("2026-11-01T10:{minute:02}:00Z"),
           "person": person, "brand": brand, "amount": amount, "currency": "USD"})
}

fn post(s: &Server, events: &[Value]) {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let r = s.post_ndjson(&body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["accepted"],
        events.len(),
        "every event accepted: {:?}",
        r.body
    );
}

fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), extra);
    (dir, s)
}

fn cause_event(e: &Sse) -> &str {
    e.data["cause"]["event"].as_str().unwrap_or("")
}

#[test]
fn changes_arrive_with_their_log_position_as_id_and_the_causing_event() {
    let (_dir, s) = start(&["--feed-heartbeat", "0.2"]);
    let mut feed = Stream::open(&s, "", &[]);
    assert_eq!(feed.status, 200);
    assert!(feed.content_type.starts_with("text/event-stream"));
    post(&s, &[purchase("e1", "ann", "acme", 1, 40.0)]);
    let c = feed.change();
    assert_eq!(cause_event(&c), "e1");
    assert_eq!(c.data["brand"], "acme");
    assert_eq!(c.data["person"], "ann");
    assert_eq!(c.data["kind"], "consumer");
    let position = c.data["position"].as_u64().unwrap();
    assert_eq!(c.id.as_deref(), Some(position.to_string().as_str()));
    let score = c.data["score"].as_f64().unwrap();
    let delta = c.data["delta"].as_f64().unwrap();
    assert!(delta >= 0.5, "{c:?}");
    // The score is the relationship's score at the event's time, moved from
    // neutral by the one event.
    let read = s.score("ann", "acme", "2026-11-01T10:01:00Z");
    assert!((score - read).abs() < 1e-6, "feed {score}, read {read}");
    assert!((delta - (score - 50.0)).abs() < 1e-6, "{c:?}");
    // Heartbeats while idle: the next block is a comment.
    assert!(matches!(feed.block(), Some(Err(()))), "a heartbeat");
    assert!(feed.comments >= 1);
    // The next event's position is later than the first's.
    post(&s, &[purchase("e2", "bob", "acme", 2, 40.0)]);
    let c2 = feed.change();
    assert_eq!(cause_event(&c2), "e2");
    assert!(c2.data["position"].as_u64().unwrap() > position);
}

#[test]
fn filters_and_min_delta_choose_the_changes_a_subscriber_sees() {
    let (_dir, s) = start(&[]);
    let mut all = Stream::open(&s, "", &[]);
    let mut by_brand = Stream::open(&s, "?brand=b1", &[]);
    let mut by_person = Stream::open(&s, "?person=p2", &[]);
    let mut influencers = Stream::open(&s, "?kind=influencer", &[]);
    let mut big = Stream::open(&s, "?min_delta=5", &[]);
    post(&s, &[purchase("e1", "p1", "b1", 1, 10.0)]);
    post(&s, &[purchase("e2", "p2", "b2", 2, 40.0)]);
    post(&s, &[purchase("e3", "p2", "b1", 3, 500.0)]);
    // The three moves are published before the registration: a
    // registration rebuilds the state, and a move the live series had not
    // applied by then is published as the rebuild's, with a range of
    // positions for cause (issue #11, item 6), not as its event's. Under
    // load the full suite saw e3's move come so ("" for its cause).
    let mut seen = all.changes(3);
    let r = s.put_json("/v1/entities/star", &json!({"kind": "influencer"}));
    assert!(r.status < 300, "{:?}", r.body);
    post(&s, &[purchase("e5", "star", "b3", 5, 500.0)]);
    seen.extend(all.changes(1));
    let causes: Vec<&str> = seen.iter().map(cause_event).collect();
    assert_eq!(causes, ["e1", "e2", "e3", "e5"]);
    let delta = |e: &str| {
        seen.iter().find(|c| cause_event(c) == e).unwrap().data["delta"]
            .as_f64()
            .unwrap()
    };
    // The threshold below sits between the small and the big moves.
    assert!(delta("e1") < 5.0 && delta("e3") >= 5.0, "{seen:?}");
    assert_eq!(seen[3].data["kind"], "influencer");

    let brand: Vec<String> = by_brand
        .changes(2)
        .iter()
        .map(|c| cause_event(c).into())
        .collect();
    assert_eq!(brand, ["e1", "e3"]);
    let person: Vec<String> = by_person
        .changes(2)
        .iter()
        .map(|c| cause_event(c).into())
        .collect();
    assert_eq!(person, ["e2", "e3"]);
    assert_eq!(cause_event(&influencers.change()), "e5");
    assert!(delta("e2") < 5.0, "{seen:?}");
    let first_big = big.change();
    assert_eq!(cause_event(&first_big), "e3");
    assert!(first_big.data["delta"].as_f64().unwrap() >= 5.0);

    let r = s.get("/v1/stream?min_delta=0.4");
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body.to_string().contains("min_delta"), "{:?}", r.body);
    let r = s.get("/v1/stream?kind=brand");
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[test]
fn resuming_with_last_event_id_receives_every_change_in_between_in_order() {
    let (_dir, s) = start(&[]);
    let mut feed = Stream::open(&s, "", &[]);
    post(&s, &[purchase("e0", "p0", "acme", 0, 40.0)]);
    let first = feed.change();
    let id = first.id.clone().expect("an id");
    drop(feed);
    for i in 1..=5u32 {
        post(
            &s,
            &[purchase(
                &format!("e{i}"),
                &format!("p{i}"),
                "acme",
                i,
                40.0,
            )],
        );
    }
    let mut resumed = Stream::open(&s, "", &[("Last-Event-ID", &id)]);
    let got = resumed.changes(5);
    let causes: Vec<&str> = got.iter().map(cause_event).collect();
    assert_eq!(causes, ["e1", "e2", "e3", "e4", "e5"]);
    let ids: Vec<u64> = got
        .iter()
        .map(|c| c.id.as_ref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(ids[0] > id.parse::<u64>().unwrap());
    // Then live.
    post(&s, &[purchase("e6", "p6", "acme", 6, 40.0)]);
    assert_eq!(cause_event(&resumed.change()), "e6");
    // The query parameter does what the header does.
    let mut by_query = Stream::open(&s, &format!("?last_event_id={}", ids[3]), &[]);
    assert_eq!(cause_event(&by_query.change()), "e5");
}

#[test]
fn resuming_from_before_the_window_gets_a_reset_event() {
    let (_dir, s) = start(&["--feed-window", "2"]);
    let mut feed = Stream::open(&s, "", &[]);
    for i in 1..=4u32 {
        post(
            &s,
            &[purchase(
                &format!("e{i}"),
                &format!("p{i}"),
                "acme",
                i,
                40.0,
            )],
        );
    }
    let ids: Vec<String> = feed.changes(4).into_iter().map(|c| c.id.unwrap()).collect();
    // The window holds the last two: after the second, both come back.
    let mut inside = Stream::open(&s, "", &[("Last-Event-ID", &ids[1])]);
    let got: Vec<String> = inside
        .changes(2)
        .into_iter()
        .map(|c| cause_event(&c).into())
        .collect();
    assert_eq!(got, ["e3", "e4"]);
    // After the first, the third would be missing: a reset, and the end.
    for (query, headers) in [
        (String::new(), vec![("Last-Event-ID", ids[0].as_str())]),
        (format!("?last_event_id={}", ids[0]), vec![]),
    ] {
        let mut past = Stream::open(&s, &query, &headers);
        let e = past.next().expect("a reset");
        assert_eq!(e.event, "reset", "{e:?}");
        assert!(e.data["detail"].as_str().unwrap().contains("reload"));
        assert!(past.next().is_none(), "the stream ends after a reset");
    }
}

#[test]
fn a_slow_consumer_is_cut_off_with_a_resumable_position_while_another_keeps_receiving() {
    // A buffer of 8: the fast subscriber, a debug test thread parsing
    // 800-byte changes on a loaded machine, fell 4 publications behind
    // during the bulk once the live thread's overtaken builds ran back to
    // back (session 31: one publication per build, besides the slices').
    let (_dir, s) = start(&["--feed-buffer", "8"]);
    // Ids near their 256-byte limit make each change about 800 bytes: the
    // bulk rounds (12 MB) fill the slow reader's socket buffers (a socket
    // never read keeps a small window; the server's send buffer is at most
    // a few MB).
    let brand = format!("brand-{}", "b".repeat(240));
    let person = |i: usize| format!("person-{i:06}-{}", "p".repeat(240));
    const ROUNDS: usize = 30;
    const PER_ROUND: usize = 500;
    // Then single events, each posted once the fast subscriber has seen
    // the one before, so each is a publication of its own: the slow one
    // falls behind by at least this many, past its buffer of 8, however the
    // live thread coalesced the bulk. Regression: under load it published
    // the bulk in a few large steps, the slow reader's buffers held all but
    // fewer than 4 of them, and no cut-off came.
    const PACED: usize = 32;
    let total = ROUNDS * PER_ROUND + PACED;
    let event = |i: usize| {
        json!({"id": format!("e{i}"), "type": "purchase",
               "time": format!("2026-11-01T{:02}:{:02}:{:02}Z", 10 + i / 3600, i / 60 % 60, i % 60),
               "person": person(i), "brand": brand, "amount": 40.0})
    };
    let slow = Stream::open(&s, "", &[]);
    let fast = Stream::open(&s, "", &[]);
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<String>();
    let fast = std::thread::spawn(move || {
        let mut fast = fast;
        let got: Vec<Sse> = (0..total)
            .map(|_| {
                let c = fast.change();
                let _ = seen_tx.send(c.data["person"].as_str().unwrap().to_string());
                c
            })
            .collect();
        let positions: Vec<u64> = got
            .iter()
            .map(|c| c.data["position"].as_u64().unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] <= w[1]),
            "positions in log order"
        );
        got.into_iter()
            .map(|c| c.data["person"].as_str().unwrap().to_string())
            .collect::<Vec<String>>()
    });
    for round in 0..ROUNDS {
        let events: Vec<Value> = (0..PER_ROUND)
            .map(|k| event(round * PER_ROUND + k))
            .collect();
        post(&s, &events);
    }
    for i in ROUNDS * PER_ROUND..total {
        post(&s, &[event(i)]);
        let wanted = person(i);
        loop {
            let p = seen_rx
                .recv_timeout(PATIENCE)
                .expect("the fast subscriber sees each paced event");
            if p == wanted {
                break;
            }
        }
    }
    let mut fast = fast
        .join()
        .expect("the fast subscriber received everything");
    // A fold round of many events publishes part of them from a batched
    // rebuild of the live series (at the round's largest position): every
    // relationship once, in log-position order, not in person order.
    fast.sort();
    let expected: Vec<String> = (0..total).map(person).collect();
    assert!(
        fast == expected,
        "the fast subscriber saw every change once"
    );

    // The slow one reads now: what its buffers held, then the cut-off.
    let mut slow = slow;
    let mut seen: Vec<String> = Vec::new();
    let mut last_id = None;
    let cutoff = loop {
        let e = slow.next().expect("a cutoff before the end");
        match e.event.as_str() {
            "change" => {
                seen.push(e.data["person"].as_str().unwrap().to_string());
                if e.id.is_some() {
                    last_id = e.id.clone();
                }
            }
            "cutoff" => break e,
            other => panic!("unexpected {other}: {e:?}"),
        }
    };
    assert!(slow.next().is_none(), "the stream ends after a cutoff");
    assert!(seen.len() < total, "the slow subscriber was not behind");
    let position = cutoff.data["position"]
        .as_u64()
        .expect("a position to resume from");
    assert_eq!(
        Some(position.to_string()),
        last_id,
        "resume from the last id delivered"
    );
    let mut resumed = Stream::open(&s, "", &[("Last-Event-ID", &position.to_string())]);
    let rest: Vec<String> = resumed
        .changes(total - seen.len())
        .into_iter()
        .map(|c| c.data["person"].as_str().unwrap().to_string())
        .collect();
    seen.extend(rest);
    seen.sort();
    assert!(seen == expected, "cut off and resumed, nothing missing");
}

#[test]
fn the_stream_needs_a_read_key_when_keys_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "k".repeat(40);
    let s = Server::launch(
        dir.path(),
        &Launch {
            env: &[("FUSION_ADMIN_KEY", &admin)],
            ..Launch::default()
        },
    );
    let without = Stream::open(&s, "", &[]);
    assert_eq!(without.status, 401);
    let bearer = format!("Bearer {admin}");
    let mut with = Stream::open(&s, "", &[("Authorization", &bearer)]);
    assert_eq!(with.status, 200);
    let r = s.request(
        "POST",
        "/v1/events",
        &[("Authorization", &bearer)],
        Some((
            "application/x-ndjson",
            format!("{}\n", purchase("e1", "ann", "acme", 1, 40.0)).as_bytes(),
        )),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(cause_event(&with.change()), "e1");
}

/// Credentials are checked when a stream opens: a stream ends after
/// `--feed-lifetime`, and the client resumes where it was.
#[test]
fn a_stream_ends_after_its_lifetime_and_resumes_where_it_was() {
    let (_dir, s) = start(&["--feed-lifetime", "1"]);
    let mut feed = Stream::open(&s, "", &[]);
    post(&s, &[purchase("e1", "ann", "acme", 1, 40.0)]);
    let id = feed.change().id.expect("an id");
    assert!(feed.next().is_none(), "the stream ends");
    post(&s, &[purchase("e2", "bob", "acme", 2, 40.0)]);
    let mut resumed = Stream::open(&s, "", &[("Last-Event-ID", &id)]);
    assert_eq!(cause_event(&resumed.change()), "e2");
}

/// After an erasure the state is built again from the log, and its live
/// series replays the events the feed has seen, in canonical (time) order,
/// which is not log order. The red team (2026-11-30) saw the feed's ids go
/// backwards then, and a build's changes at its checkpoint's time leave a
/// resuming client with stale scores. Now the replay is one change per
/// relationship it moved, at its largest position, valued at its latest
/// time: ids never go backwards, and what was last published is the score.
#[test]
fn after_an_erasure_the_feed_stays_in_log_order_with_current_scores() {
    let (_dir, s) = start(&[]);
    let mut feed = Stream::open(&s, "?brand=shop", &[]);
    // One batch whose times are not in log order (distinct minutes), so
    // canonical order and log order differ.
    let events: Vec<Value> = (0..60)
        .map(|i| {
            purchase(
                &format!("e{i}"),
                &format!("q{}", i % 20),
                "shop",
                (i * 37 % 59) as u32,
                40.0,
            )
        })
        .collect();
    post(&s, &events);
    let r = s.delete("/v1/entities/q0");
    assert!(r.status < 300, "{:?}", r.body);
    post(&s, &[purchase("marker", "zed", "shop", 59, 40.0)]);
    let mut last_id = 0u64;
    let mut published = std::collections::BTreeMap::new();
    loop {
        let c = feed.change();
        if let Some(id) = &c.id {
            let id: u64 = id.parse().unwrap();
            assert!(id >= last_id, "ids go back: {id} after {last_id}");
            last_id = id;
        }
        let person = c.data["person"].as_str().unwrap().to_string();
        published.insert(person, c.data["score"].as_f64().unwrap());
        if cause_event(&c) == "marker" {
            break;
        }
    }
    // The last published score of each relationship is its score at the
    // marker's time, within the feed's publishing threshold.
    for (person, score) in &published {
        if person == "q0" {
            continue;
        }
        let read = s.score(person, "shop", "2026-11-01T10:59:00Z");
        assert!(
            (score - read).abs() < 0.5,
            "{person}: published {score}, read {read}"
        );
    }
}
