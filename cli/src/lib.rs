//! The `recsys` command-line tool's library: a throw-away redis-server with the
//! module (demo, benchmarks, integration tests), benchmarks and the demo.

pub mod bench;
pub mod demo;
pub mod fixtures;
pub mod server;
