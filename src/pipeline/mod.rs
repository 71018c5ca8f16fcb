//! The online recommendation pipeline: user vector -> retrieval -> filtering
//! -> ranking -> ordering, with per-stage counts and timings (EXPLAIN).

pub mod filter;
pub mod plugins;
pub mod recommend;
