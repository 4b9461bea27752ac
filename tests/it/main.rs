//! The one integration-test binary: each module tests one boundary.

mod backtest;
mod calibrate;
mod conflicts;
mod determinism;
mod disk_full;
mod edge;
mod extreme;
mod extremes;
mod generate;
mod http;
mod impact;
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
mod truth;
mod validation;
