//! Applications of the engine, one file each.

pub mod detection;
pub mod matching;
pub mod patches;
pub mod retrieval;
pub mod retrieve;

use crate::infer::EngineKind;

/// How an application's evaluation runs its cascades.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Rows per batch.
    pub batch: usize,
    /// Batches whose survivors are pooled before a later stage runs (1: each batch alone).
    pub pool: usize,
    /// The inference path.
    pub engine: EngineKind,
    /// Audit this fraction of the inputs an early stage rejects ([`crate::audit`]).
    pub audit: Option<f64>,
}
