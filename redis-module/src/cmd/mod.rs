//! Command handlers, one file per family. Each parses its arguments, calls
//! the core, and returns a [`Reply`](crate::reply::Reply); none reaches
//! storage except through `keys`, `plugin_store` and `datatype`.

pub mod batch;
pub mod catalog;
pub mod experiment;
pub mod model;
pub mod norepeat;
pub mod plugin;
pub mod recommend;
pub mod request_args;
