# benches/fusion_bin.sh: sourced by the bench scripts (from the repository's
# top) to set BIN, the `fusion` binary they measure: FUSION_BIN if given,
# else a release build made now. Said once here rather than in each script.
if [ -n "${FUSION_BIN:-}" ]; then
    BIN=$FUSION_BIN
else
    echo "building release..." >&2
    cargo build --release --quiet
    BIN=target/release/fusion
fi
