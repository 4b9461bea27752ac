//! The one integration-test binary (STYLE.md): each module tests one part of
//! Fusion through its public boundary.

mod sentiment;
