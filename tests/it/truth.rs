//! Ground truth in the generator (issue #15, item 3): `fusion generate
//! --truth FILE` plants a latent health per relationship; without the flag the
//! stream must stay byte-identical to what it was before the flag existed,
//! because the benchmarks and their recorded figures depend on it.

use std::process::Command;

use fusion::generate::{GenerateConfig, write_ndjson};
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hashes were computed with the generator of commit 150ed7f, before
/// `--truth` existed (`fusion generate --events 20000 | sha256sum`, and the
/// small population below). If this fails, the plain stream changed: the
/// benchmarks' figures no longer describe the same input.
#[test]
fn the_stream_without_truth_is_byte_identical_to_before_the_flag() {
    let default = GenerateConfig {
        events: 20_000,
        ..GenerateConfig::default()
    };
    let mut out = Vec::new();
    write_ndjson(&default, &mut out).expect("generation succeeds");
    assert_eq!(
        sha256_hex(&out),
        "cc7c6d4fedf5fddf9ccdf03d0f182e72d72bd2ab507089ef802582feea121619"
    );

    let small = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args([
            "generate", "--seed", "7", "--events", "5000", "--people", "300",
        ])
        .args(["--influencers", "10", "--brands", "8", "--days", "30"])
        .output()
        .expect("the fusion binary runs");
    assert!(small.status.success());
    assert_eq!(
        sha256_hex(&small.stdout),
        "eca99c8dbfd19cc37bd6464b6b8d51911597b478ce9182b70a3cc39e46dbf3a0"
    );
}
