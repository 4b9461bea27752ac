//! Criterion bench of the per-request work of authentication, the part of
//! a keyed read that an open service does not do: checking a bearer key
//! (parse, SHA-256, constant-time compare, noting the use), checking a
//! session cookie, and a per-key rate-limit check. The throughput side is
//! benches/http_auth.sh. Must not assert anything (tests do that).

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use fusion::auth::{ApiKey, KeyRecord, Keyring, Role, SessionKeys};
use fusion::http::limits::{RateConfig, RateLimits};

fn bench(c: &mut Criterion) {
    let now = Utc::now();
    let ring = Keyring::new(None);
    let keys: Vec<ApiKey> = (0..100).map(|_| ApiKey::generate()).collect();
    ring.replace(
        keys.iter()
            .map(|k| KeyRecord::new(k, Role::Read, now, None))
            .collect(),
    );
    let token = keys[42].reveal();
    c.bench_function("bearer_key_check", |b| {
        b.iter(|| ring.authenticate(black_box(&token), now).unwrap())
    });
    let sessions = SessionKeys::new([9; 32]);
    let (cookie, session) =
        sessions.issue(&keys[42].id, Role::Read, now, chrono::Duration::hours(1));
    c.bench_function("session_cookie_check", |b| {
        b.iter(|| {
            let s = sessions.verify(black_box(&cookie), now).unwrap();
            ring.admit_session(&s, now).unwrap()
        })
    });
    c.bench_function("csrf_check", |b| {
        b.iter(|| sessions.csrf_matches(&session, black_box("not-the-token")))
    });
    let limits = RateLimits::new(RateConfig {
        per_key: u32::MAX,
        per_address: 0,
    });
    c.bench_function("rate_limit_check", |b| {
        b.iter(|| limits.check_key(black_box(&keys[42].id)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
