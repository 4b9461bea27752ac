//! The one integration-test binary: each module tests one boundary.

mod pg;
mod store;
