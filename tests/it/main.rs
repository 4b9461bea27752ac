//! The one integration-test binary: each module tests one boundary.

mod certs;
mod determinism;
mod generate;
mod http;
mod incremental;
mod live;
mod ops;
mod pg;
mod pg_e2e;
mod pg_security;
mod propagate;
mod relspace;
mod security;
mod sentiment;
mod store;
mod story;
mod support;
