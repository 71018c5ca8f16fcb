//! The `recsys` command-line tool's library: a throw-away redis-server with the
//! module (demo, benchmarks, integration tests), benchmarks, the demo and the fuzzer.

pub mod bench;
pub mod cluster;
pub mod data;
pub mod demo;
pub mod eval;
pub mod fixtures;
pub mod fuzz;
pub mod loader;
pub mod server;
pub mod train;
pub mod verbs;
