//! `ReadCache`: serialised relationship answers, keyed by (person, brand,
//! time), valid for one version of the engine's state.
//!
//! Dashboards poll the same relationships every few seconds; an answer is a
//! pure function of the state version and the evaluation time, so it is
//! computed once per version and second and then served as bytes, with an
//! ETag so a client that has it gets `304 Not Modified`. The ETag carries a
//! per-process nonce because versions restart at zero with every process.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::web::Bytes;

use crate::domain::EntityId;

/// Answers kept at most (a few KB each: tens of MB); when it would grow
/// past this, answers of earlier seconds go first (`ReadCache::put`).
const MAX_ENTRIES: usize = 10_000;

type Key = (EntityId, EntityId, i64);

pub struct ReadCache {
    nonce: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    version: u64,
    answers: HashMap<Key, (Bytes, String)>,
}

impl Default for ReadCache {
    fn default() -> Self {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            nonce,
            inner: Mutex::new(Inner {
                version: u64::MAX,
                answers: HashMap::new(),
            }),
        }
    }
}

impl ReadCache {
    /// The cached answer and its ETag, if this version has one.
    pub fn get(&self, version: u64, key: &Key) -> Option<(Bytes, String)> {
        let inner = self.inner.lock().expect("cache lock");
        if inner.version != version {
            return None;
        }
        inner.answers.get(key).cloned()
    }

    /// Stores an answer computed at `version`; answers the ETag to send.
    pub fn put(&self, version: u64, key: Key, body: Bytes) -> String {
        let etag = format!("\"{:x}-{:x}-{:x}\"", self.nonce, version, key.2);
        let mut inner = self.inner.lock().expect("cache lock");
        if inner.version != version {
            inner.version = version;
            inner.answers.clear();
        }
        if inner.answers.len() >= MAX_ENTRIES {
            // Reads at the default `at` (now, to the second) fill it with
            // answers of past seconds that no one asks for again: those go
            // first, so the answers of this second (a dashboard's polls,
            // many relationships in rotation) stay; when that frees too
            // little, everything goes.
            let newest = inner.answers.keys().map(|k| k.2).max().unwrap_or(key.2);
            let recent = newest.max(key.2) - 1_000_000;
            inner.answers.retain(|k, _| k.2 >= recent);
            if inner.answers.len() >= MAX_ENTRIES / 2 {
                inner.answers.clear();
            }
        }
        inner.answers.insert(key, (body, etag.clone()));
        etag
    }

    /// The ETag an answer for `key` at `version` has (for `If-None-Match`).
    pub fn etag(&self, version: u64, at_micros: i64) -> String {
        format!("\"{:x}-{:x}-{:x}\"", self.nonce, version, at_micros)
    }
}
