//! redis-recsys core: everything the Redis module does, without Redis.
//!
//! Layers, each using only those below it:
//! - [`pipeline`]: one RECOMMEND request, one file per stage;
//! - [`cluster`]: catalog copies and plugins across a Redis Cluster (the
//!   bus protocol and the copy rules);
//! - [`catalog`]: items (ids, vectors, attributes), popularity, models, and
//!   their byte format;
//! - [`rank`]: ranking and query models (ONNX, native DLRM on CPU/GPU);
//!   [`plugin`]: the WebAssembly plugin host;
//! - [`index`]: HNSW over item vectors (storage, SIMD distances, snapshots);
//!   [`features`]: attribute columns and value conversions; [`user`]: the
//!   user hash's fields and rules;
//! - [`experiment`]: A/B experiments of a catalog (assignment, counts,
//!   request ids, statistics);
//! - the floor: [`codec`] (bytes), [`rng`] (the one generator), [`error`],
//!   [`names`], [`vector`]; [`synth`] generates data for tests, demos and benchmarks.
//!
//! The Redis module (`redis-module/`) translates commands to calls on these
//! types; nothing here names a Redis type, so it is unit-testable with `cargo test`.

pub mod aligned;
pub mod catalog;
pub mod cluster;
pub mod codec;
pub mod error;
pub mod experiment;
pub mod features;
pub mod growth;
pub mod index;
pub mod names;
pub mod pipeline;
pub mod plugin;
pub mod rank;
pub mod rng;
pub mod synth;
pub mod user;
pub mod vector;

pub use error::{Error, ErrorKind, Result};
