//! What the benchmarks of this crate share (a bench that has no guest
//! rings declares only the modules it uses).

pub mod load;
pub mod probe;
pub mod rings;
