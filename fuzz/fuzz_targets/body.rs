//! cargo-fuzz target `body`: the request body parser (`harness/body.rs`).

#![no_main]

#[path = "../harness/mod.rs"]
#[allow(dead_code)] // each target uses one of the harnesses
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::body::run(data));
