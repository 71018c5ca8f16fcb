//! Item features: attributes kept as dictionary-encoded columns that the
//! filter language reads directly (no JSON parsing on the query path).

pub mod attrs;
pub mod columns;
