//! The one integration-test binary: each module tests one boundary.

mod conflicts;
mod determinism;
mod disk_full;
mod extremes;
mod generate;
mod http;
mod incremental;
mod isolation;
mod live;
mod numerics;
mod pg;
mod pg_e2e;
mod propagate;
mod relspace;
mod resilience;
mod sentiment;
mod store;
mod story;
mod support;
