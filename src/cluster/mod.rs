//! Catalogs and plugins across a Redis Cluster, without Redis types:
//! - [`message`]: what nodes say to each other over the cluster bus;
//! - [`copies`]: the copies of other nodes' catalogs one node keeps, and
//!   the rules that keep each equal to its owner's or out of service;
//! - [`popularity`]: the EVENTs a master sends the others, so every
//!   master's popularity sums the cluster's;
//! - [`slot`]: the key slot of a key name;
//! - [`wait`]: RECSYS.COPIES.WAIT, waiting until other masters' copies
//!   have a write.
//!
//! The module (`redis-module/src/cluster.rs`) sends and receives the
//! messages and applies the writes; docs/cluster.md has the design.

pub mod copies;
pub mod message;
pub mod popularity;
pub mod slot;
pub mod wait;
