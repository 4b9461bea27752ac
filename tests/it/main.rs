//! The one integration-test binary: each module tests one boundary.

mod backtest;
mod calibrate;
mod determinism;
mod edge;
mod extreme;
mod generate;
mod http;
mod impact;
mod incremental;
mod live;
mod pg;
mod pg_e2e;
mod propagate;
mod relspace;
mod sentiment;
mod store;
mod story;
mod support;
mod truth;
mod validation;
