//! Approximate nearest-neighbour index over item vectors: the project's own
//! HNSW (see `hnsw.rs` for why not hnsw_rs), its storage, distance kernels and
//! snapshot format. Knows nothing about item ids; [`crate::catalog`] maps ids
//! to slots.

pub mod distance;
pub mod hnsw;
pub mod params;
pub mod snapshot;
mod store;
mod visited;

pub use hnsw::{Hit, Hnsw, ScanOrder};
pub use params::{IndexParams, Metric, Quant};

#[cfg(test)]
mod tests;
