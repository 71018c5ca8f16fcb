//! Item features: attributes parsed from ATTRS JSON into values the filter
//! language reads directly (no JSON parsing on the query path).

pub mod attrs;
