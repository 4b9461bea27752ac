//! The one integration-test binary: each module tests one boundary.

mod determinism;
mod generate;
mod http;
mod sentiment;
mod story;
mod support;
