//! The fuzz targets' committed corpora, replayed through the same harnesses
//! the cargo-fuzz targets run (`fuzz/harness/`): what the long fuzzing runs
//! found interesting stays checked by every test run, without a nightly
//! toolchain or a sanitizer build. The long runs are `scripts/fuzz.sh
//! TARGET SECONDS`.

use std::path::Path;

#[path = "../../fuzz/harness/mod.rs"]
#[allow(dead_code)]
mod harness;

/// Every file of a corpus directory, in name order.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} is missing: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let inputs: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    assert!(!inputs.is_empty(), "the corpus {} is empty", dir.display());
    inputs
}

fn replay(target: &str, run: fn(&[u8])) {
    for (name, data) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: the corpus input {name} fails");
    }
}

#[test]
fn the_body_corpus_passes_the_body_harness() {
    replay("body", harness::body::run);
}

#[test]
fn the_fold_corpus_passes_the_fold_harness() {
    replay("fold", harness::fold::run_bytes);
}
