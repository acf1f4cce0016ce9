//! Datasets: the procedural creatures dataset ([`synth`]) and the reader of SPair-71k's layout
//! ([`spair`]), which reads both.

pub mod spair;
pub mod synth;
