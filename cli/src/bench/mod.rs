//! Benchmarks behind `recsys bench ...`; every figure in docs/benchmarks.md
//! comes from one of these commands.

pub mod index;
pub mod plugins;
pub mod rank;
pub mod recommend;
pub mod redis;
