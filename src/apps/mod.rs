//! Applications of the engine, one file each.

pub mod retrieval;
pub mod patches;
pub mod detection;
