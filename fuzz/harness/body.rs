//! The `body` harness: the request body parser, from raw bytes to events.
//! Run by the cargo-fuzz target `body` and, over the committed corpus, by
//! the test suite (`tests/it/fuzz_corpus.rs`).
//!
//! The first byte picks the layout (bit 0: JSON or NDJSON) and the
//! compression (bits 1-2: identity, gzip, zstd); the rest is the body. It
//! checks that decoding never passes its limit, that the parser never panics
//! and keeps at most 1,000 rejections, and, against serde_json as an oracle,
//! that a body parses exactly when it is JSON of the accepted shapes, with
//! one accepted-or-rejected entry per event.

use fusion::domain::CurrencyTable;
use fusion::ingest::{BodyFormat, Compression, MAX_REJECTIONS, decode, parse_events};
use serde_json::Value;

const LIMIT: usize = 1 << 20;

/// One input: the first byte picks layout and compression, the rest is the
/// body. Panics where the parser is wrong.
pub fn run(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let format = if mode & 1 == 0 {
        BodyFormat::Json
    } else {
        BodyFormat::Ndjson
    };
    let compression = match (mode >> 1) & 3 {
        1 => Compression::Gzip,
        2 => Compression::Zstd,
        _ => Compression::Identity,
    };
    let Ok(decoded) = decode(body, compression, LIMIT) else {
        return;
    };
    assert!(decoded.len() <= LIMIT);
    if compression == Compression::Identity {
        assert_eq!(decoded, body);
    }
    let parsed = parse_events(&decoded, format, currencies());
    let expected = events_in(&decoded, format);
    match (&parsed, expected) {
        (Ok(p), Some(n)) => {
            assert_eq!(p.events.len() + p.rejected_count, n);
            assert!(p.rejected.len() <= MAX_REJECTIONS);
            assert!(p.rejected.len() <= p.rejected_count);
            // Indices are the events' positions: increasing, each once.
            let mut seen: Vec<usize> = p.events.iter().map(|(i, _)| *i).collect();
            seen.extend(p.rejected.iter().map(|r| r.index));
            seen.sort_unstable();
            assert!(seen.windows(2).all(|w| w[0] < w[1]));
            assert!(seen.last().is_none_or(|&i| i < n));
        }
        (Err(_), None) => {}
        (p, n) => panic!(
            "parser and oracle disagree: {:?} vs {n:?}",
            p.as_ref().map(|p| p.events.len() + p.rejected_count)
        ),
    }
}

fn currencies() -> &'static CurrencyTable {
    static TABLE: std::sync::OnceLock<CurrencyTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| fusion::score::ScoringModel::default_model().currency)
}

/// How many events serde_json finds in a body of the accepted shapes, or
/// `None` where the body must be refused as a whole.
fn events_in(body: &[u8], format: BodyFormat) -> Option<usize> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let n = match format {
        BodyFormat::Json => match serde_json::from_slice::<Value>(body).ok()? {
            Value::Array(items) => items.len(),
            Value::Object(_) => 1,
            _ => return None,
        },
        BodyFormat::Ndjson => {
            let mut n = 0;
            for line in body.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                serde_json::from_slice::<Value>(line).ok()?;
                n += 1;
            }
            n
        }
    };
    (n > 0).then_some(n)
}
