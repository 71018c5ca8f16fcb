//! redis-recsys core: everything the Redis module does, without Redis.
//!
//! - [`index`]: HNSW over item vectors (storage, SIMD distances, snapshots).
//! - [`catalog`]: a catalog of items: string ids, vectors, JSON attributes.
//! - [`pipeline`]: one RECOMMEND request, stage by stage.
//! - [`plugin`]: the WebAssembly plugin host.
//! - [`rank`]: ranking and query models (ONNX, native DLRM on CPU/GPU).
//!
//! The Redis module (`redis-module/`) translates commands to calls on these
//! types; nothing here names a Redis type, so it is unit-testable with `cargo test`.

pub mod catalog;
pub mod features;
pub mod index;
pub mod pipeline;
pub mod plugin;
pub mod rank;
pub mod synth;
pub mod vector;
