//! The one integration-test binary: modules by boundary.

mod story;
