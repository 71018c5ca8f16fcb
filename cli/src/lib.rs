//! The `recsys` command-line tool's library: a throw-away redis-server with the
//! module (demo, benchmarks, integration tests), benchmarks, the demo and the fuzzer.

pub mod bench;
pub mod demo;
pub mod fixtures;
pub mod fuzz;
pub mod server;
