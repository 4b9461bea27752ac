//! The one integration-test binary: modules by boundary.

mod determinism;
mod http;
mod story;
mod support;
