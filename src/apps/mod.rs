//! Applications of the engine, one file each.

pub mod detection;
pub mod patches;
pub mod retrieval;
