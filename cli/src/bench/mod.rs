//! Benchmarks behind `recsys bench ...`; every figure in docs/benchmarks.md
//! comes from one of these commands, and `recsys bench all` runs them all
//! and writes the document.

pub mod all;
pub mod als;
pub mod churn;
pub mod cluster;
pub mod filters;
pub mod hps;
pub mod index;
pub mod plugins;
pub mod quality;
pub mod rank;
pub mod recommend;
pub mod redis;
pub mod redisearch;
pub mod scan;
pub mod small;
