//! # onionnet
//!
//! OnionNet (Simonovsky & Komodakis, BMVC 2016): cascades of feature-sharing deep classifiers.
//! One model description ([`spec`]) builds three networks ([`onion`]): the monolithic baseline,
//! the non-sharing cascade and the onion, whose stage s+1 wraps stage s and reads its maps.
//! They train under one joint loss ([`train`]), get per-stage thresholds from a target TPR
//! ([`calibrate`]), run as a cascade over compacted sparse batches ([`compaction`],
//! [`cascade`]) and are compared against an analytic cost model ([`cost`]).

pub mod alloc;
pub mod apps;
pub mod audit;
pub mod bench;
pub mod budget;
pub mod calibrate;
pub mod cascade;
pub mod checkpoint;
pub mod cli;
pub mod compaction;
pub mod cost;
pub mod data;
pub mod device;
pub mod error;
pub mod export;
pub mod files;
pub mod footprint;
pub mod infer;
pub mod model;
pub mod models;
pub mod onion;
pub mod pipeline;
pub mod report;
pub mod shipped;
pub mod spec;
pub mod study;
pub mod train;
pub mod trained;
pub mod workers;
