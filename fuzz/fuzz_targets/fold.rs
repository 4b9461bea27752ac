//! cargo-fuzz target `fold`: the fold of validated events (`harness/fold.rs`).

#![no_main]

#[path = "../harness/mod.rs"]
#[allow(dead_code)] // each target uses one of the harnesses
mod harness;

libfuzzer_sys::fuzz_target!(|input: harness::fold::Input| harness::fold::run(input));
