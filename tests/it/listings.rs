//! Brand listings and summaries read from rows a ranking keeps in every
//! listing order with its summaries made (task h42), checked through a
//! real server against what the listing promised before: the brand's
//! relationships filtered, sorted by the asked value then person id, pages
//! cut by the cursor, and a summary of its sorted scores, recomputed here
//! from the whole listing, bit for bit.

use std::process::Command;

use serde_json::Value;

use crate::support::Server;

const AT: &str = "2026-04-02T00:00:00Z";

/// Every item of a listing (`query` without `limit` and `cursor`), page
/// by page of `limit`.
fn walk(s: &Server, brand: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/brands/{brand}/relationships?at={AT}&limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", percent(c)));
        }
        let r = s.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let page = r.body["items"].as_array().unwrap().clone();
        assert!(page.len() <= limit);
        items.extend(page);
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn value(item: &Value, key: &str) -> f64 {
    match key {
        "score" => item["score"].as_f64().unwrap(),
        _ => item["trend"]["d7"].as_f64().unwrap(),
    }
}

/// Pages walked by small and large limits are the listing sorted and
/// filtered as asked, for every sort and a mix of filters, and a brand's
/// summary is its sorted scores' (count, mean, quantiles, histogram).
#[test]
fn listings_are_sorted_filtered_paged_and_summarised_as_promised() {
    let generated = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args([
            "generate", "--seed", "7", "--events", "5000", "--people", "300",
        ])
        .args(["--influencers", "10", "--brands", "8", "--days", "30"])
        .output()
        .expect("the fusion binary runs");
    assert!(generated.status.success());
    let dir = tempfile::tempdir().unwrap();
    // Hundreds of pages in a few seconds: no per-address rate limit.
    let s = Server::start(dir.path(), &["--rate-per-address", "0"]);
    let r = s.post_ndjson(std::str::from_utf8(&generated.stdout).unwrap());
    assert_eq!(r.status, 200, "{}", r.body);
    let brands = s.get(&format!("/v1/brands?limit=100&at={AT}"));
    let brands: Vec<String> = brands.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert!(brands.len() >= 4, "{brands:?}");
    let mut listed = 0;
    for brand in &brands {
        let all = walk(&s, brand, "", 1000);
        listed += all.len();
        for (sort, key, descending) in [
            ("-score", "score", true),
            ("score", "score", false),
            ("-trend7d", "trend7d", true),
            ("trend7d", "trend7d", false),
        ] {
            for filter in [
                "",
                "&kind=consumer&min_score=45",
                "&kind=influencer&max_score=70",
            ] {
                let query = format!("&sort={sort}{filter}");
                let whole = walk(&s, brand, &query, 1000);
                // What the listing promised: filter, then sort by the value
                // in the asked direction, then by person id.
                let mut want: Vec<&Value> = all
                    .iter()
                    .filter(|i| !filter.contains("consumer") || i["kind"] == "consumer")
                    .filter(|i| !filter.contains("influencer") || i["kind"] == "influencer")
                    .filter(|i| {
                        !filter.contains("min_score") || i["score"].as_f64().unwrap() >= 45.0
                    })
                    .filter(|i| {
                        !filter.contains("max_score") || i["score"].as_f64().unwrap() <= 70.0
                    })
                    .collect();
                want.sort_by(|a, b| {
                    let (x, y) = (value(a, key), value(b, key));
                    let o = if descending {
                        y.total_cmp(&x)
                    } else {
                        x.total_cmp(&y)
                    };
                    o.then_with(|| a["person"].as_str().cmp(&b["person"].as_str()))
                });
                let want: Vec<Value> = want.into_iter().cloned().collect();
                assert_eq!(whole, want, "{brand} {query}");
                assert_eq!(walk(&s, brand, &query, 7), want, "{brand} {query} by 7");
            }
        }
        let mut scores: Vec<f64> = all.iter().map(|i| i["score"].as_f64().unwrap()).collect();
        scores.sort_by(f64::total_cmp);
        let n = scores.len();
        let q = |q: f64| scores[((n - 1) as f64 * q).round() as usize];
        let summary = s.get(&format!("/v1/brands/{brand}?at={AT}")).body;
        assert_eq!(summary["relationships"], n, "{brand}");
        let got = &summary["scores"];
        assert_eq!(
            got["mean"].as_f64(),
            Some(scores.iter().sum::<f64>() / n as f64)
        );
        assert_eq!(got["p10"].as_f64(), Some(q(0.1)));
        assert_eq!(got["p50"].as_f64(), Some(q(0.5)));
        assert_eq!(got["p90"].as_f64(), Some(q(0.9)));
        let mut histogram = [0u64; 10];
        for x in &scores {
            histogram[((x / 10.0) as usize).min(9)] += 1;
        }
        let counts: Vec<u64> = got["histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, histogram, "{brand}");
        assert_eq!(
            got["advocates"],
            scores.iter().filter(|x| **x >= 60.0).count()
        );
        assert_eq!(got["at_risk"], scores.iter().filter(|x| **x < 40.0).count());
        // The entity view's top 20 is the head of `-score`.
        let view = s.get(&format!("/v1/entities/{brand}?at={AT}")).body;
        let head: Vec<Value> = walk(&s, brand, "&sort=-score", 1000)
            .iter()
            .take(20)
            .map(|i| i["person"].clone())
            .collect();
        let top: Vec<Value> = view["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["person"].clone())
            .collect();
        assert_eq!(top, head, "{brand}");
    }
    assert!(listed > 300, "too few relationships to test with: {listed}");
}
