//! What the benchmarks of this crate share.

pub mod load;
pub mod probe;
