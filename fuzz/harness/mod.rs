//! The fuzz harnesses: what each cargo-fuzz target checks, as plain
//! functions, so that the test suite replays the committed corpus through
//! exactly the same checks (`tests/it/fuzz_corpus.rs`) while the long runs
//! stay scripts (`scripts/fuzz.sh TARGET SECONDS`).

pub mod body;
pub mod fold;
