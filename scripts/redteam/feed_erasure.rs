//! Red team h33, finding 3: see scripts/redteam/README.md.
/// Red team h33, finding 3 (not fixed): an erasure has no log position,
/// so the replay that publishes its moves takes the largest position left
/// in the log. When the erased person's events held the largest ones, the
/// feed's id goes back (45, then 39): a client resuming with
/// `Last-Event-ID: 45` never learns that erasing p9 moved p0..p3 (their
/// +1.3 from p9's last purchase stays in its view). To run: append to
/// tests/it/redteam3.rs (it uses that module's helpers).
#[test]
fn an_erasure_of_the_latest_events_person_publishes_after_every_id_published() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--staleness", "0"]);
    let mut head: Vec<Value> = (0..40)
        .map(|i| {
            json!({"id": format!("a{i}"), "type": "purchase", "time": minute(i),
            "person": format!("p{}", i % 4), "brand": "b0", "amount": 20 + i})
        })
        .collect();
    // p9 is followed by everyone and recommends b0: erasing p9 moves them.
    head.push(json!({"id": "r9", "type": "review", "time": minute(41),
        "person": "p9", "brand": "b0", "rating": 5}));
    for k in 0..4 {
        head.push(
            json!({"id": format!("f{k}"), "type": "follow", "time": minute(42),
            "person": format!("p{k}"), "target": "p9"}),
        );
    }
    let r = s.put_json("/v1/entities/p9", &json!({"kind": "influencer"}));
    assert!(r.status < 300, "{}", r.body);
    assert_eq!(s.post_ndjson(&ndjson(&head)).status, 200);
    caught_up(&s);
    let mut feed = crate::feed::Stream::open(&s, "", &[]);
    let last = json!({"id": "last", "type": "purchase", "time": minute(50),
        "person": "p9", "brand": "b0", "amount": 900});
    let r = s.post_ndjson(&ndjson(&[last]));
    let p: u64 = r.header("fusion-position").unwrap().parse().unwrap();
    caught_up(&s);
    let r = s.delete("/v1/entities/p9");
    assert!(r.status < 300, "{}", r.body);
    caught_up(&s);
    let sentinel = json!({"id": "sentinel", "type": "purchase",
        "time": "2026-11-30T00:00:00Z", "person": "zz", "brand": "bz", "amount": 500});
    assert_eq!(s.post_ndjson(&ndjson(&[sentinel])).status, 200);
    let mut changes = Vec::new();
    loop {
        let e = feed.next().expect("the feed ended");
        if e.data["person"] == "zz" {
            break;
        }
        changes.push(e);
    }
    assert!(p > 0);
    feed_is_in_order(&changes, "erasure of the latest");
}
