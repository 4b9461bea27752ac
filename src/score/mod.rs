//! Scoring computations. This module owns the numerical kernels; it does no
//! IO, never reads the clock and knows nothing about files or the wire.

pub mod kernel;
