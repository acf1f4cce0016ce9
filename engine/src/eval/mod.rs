//! Evaluation of correspondence: PCK the way DIFT reports it on SPair-71k, and the benchmark sweep.

pub mod pck;
pub mod sweep;
