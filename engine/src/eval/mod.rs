//! Evaluation of correspondence: PCK the way DIFT reports it on SPair-71k.

pub mod pck;
