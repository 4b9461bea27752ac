//! Graph structures the scoring reads. This module owns their layout and their
//! construction from plain edge lists; it does no IO and knows nothing about
//! scores or files.

pub mod csr;
