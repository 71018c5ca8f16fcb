//! Index parameters (metric, quantization, HNSW knobs) and their validation.
//!
//! Every limit a user can hit lives here, so the Redis command layer and the
//! CLI report the same messages.

use serde::{Deserialize, Serialize};

/// Largest vector dimension a catalog accepts.
pub const MAX_DIM: usize = 4096;
/// Smallest and largest `M` (links per node above layer 0; layer 0 has `2*M`).
pub const MIN_M: usize = 2;
pub const MAX_M: usize = 128;
/// Largest `ef` (construction or search) accepted.
pub const MAX_EF: usize = 100_000;

/// How similarity between two vectors is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// Inner product; score = dot(q, x), higher is better.
    Ip,
    /// Cosine similarity; vectors are normalized on the way in; score in [-1, 1].
    Cosine,
    /// Euclidean distance; score = ||q - x||, lower is better.
    L2,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Metric> {
        match s.to_ascii_uppercase().as_str() {
            "IP" => Some(Metric::Ip),
            "COSINE" => Some(Metric::Cosine),
            "L2" => Some(Metric::L2),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Metric::Ip => "IP",
            Metric::Cosine => "COSINE",
            Metric::L2 => "L2",
        }
    }
}

/// How vectors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quant {
    /// 4 bytes per component, exact.
    F32,
    /// 1 byte per component plus one scale per vector (symmetric int8).
    Q8,
}

impl Quant {
    pub fn parse(s: &str) -> Option<Quant> {
        match s.to_ascii_uppercase().as_str() {
            "F32" => Some(Quant::F32),
            "Q8" => Some(Quant::Q8),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Quant::F32 => "F32",
            Quant::Q8 => "Q8",
        }
    }
}

/// Parameters of one HNSW index, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexParams {
    pub dim: usize,
    pub metric: Metric,
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub quant: Quant,
}

impl IndexParams {
    /// Defaults for a given dimension: COSINE, M=16, efConstruction=200, ef=100, F32.
    pub fn new(dim: usize) -> IndexParams {
        IndexParams {
            dim,
            metric: Metric::Cosine,
            m: 16,
            ef_construction: 200,
            ef_search: 100,
            quant: Quant::F32,
        }
    }

    /// Checks every field; the message says what is wrong and what is expected.
    pub fn validate(&self) -> Result<(), String> {
        if self.dim == 0 || self.dim > MAX_DIM {
            return Err(format!(
                "DIM must be between 1 and {MAX_DIM}, got {}",
                self.dim
            ));
        }
        if self.m < MIN_M || self.m > MAX_M {
            return Err(format!(
                "M must be between {MIN_M} and {MAX_M}, got {}",
                self.m
            ));
        }
        if self.ef_construction == 0 || self.ef_construction > MAX_EF {
            return Err(format!(
                "EF_CONSTRUCTION must be between 1 and {MAX_EF}, got {}",
                self.ef_construction
            ));
        }
        if self.ef_search == 0 || self.ef_search > MAX_EF {
            return Err(format!(
                "EF_SEARCH must be between 1 and {MAX_EF}, got {}",
                self.ef_search
            ));
        }
        Ok(())
    }
}
