#!/usr/bin/env bash
# Runs one cargo-fuzz target for a number of seconds:
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer options...]
# e.g. scripts/fuzz.sh body 60 (CI), scripts/fuzz.sh body 1800 (a real run).
# Targets are fuzz/fuzz_targets/*.rs. The seeds in fuzz/corpus/TARGET are
# read, never written; what the run finds goes to fuzz/corpus-work/TARGET
# (ignored by git), crashes to fuzz/artifacts/TARGET. cargo-fuzz needs
# nightly features: RUSTC_BOOTSTRAP=1 lets the stable toolchain build it.
# Exits non-zero when the target crashes, leaks or runs out of memory.
set -euo pipefail
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer options...]}
seconds=${2:?usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer options...]}
shift 2
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p "corpus/$target" "corpus-work/$target"
RUSTC_BOOTSTRAP=1 exec cargo fuzz run "$target" "corpus-work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 "$@"
