//! EXPLAIN: how long each stage of a request took and what it did. The
//! driver times the stages ([`Explain::timed`]); stages record only the
//! facts they alone know (counts, the filter mode, plugin failures).

use std::collections::HashMap;
use std::time::Instant;

use crate::pipeline::sources::Source;

/// Where the user vector came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorSource {
    Argument,
    Embedding,
    /// The catalog's QUERY model over the user's features.
    QueryModel,
    /// Mean of this many recent items' vectors.
    Session(usize),
    /// The catalog's RECENT model (the sequence tower) over this many
    /// recent items.
    Sequence(usize),
    /// No vector of the user's own: the POSITIVE examples alone.
    Examples,
    /// No vector: cold start from popular items.
    Popular,
}

impl VectorSource {
    pub fn describe(&self) -> String {
        match self {
            VectorSource::Argument => "VECTOR argument".into(),
            VectorSource::Embedding => "user hash field emb".into(),
            VectorSource::QueryModel => "query model".into(),
            VectorSource::Session(n) => format!("mean of {n} recent items"),
            VectorSource::Sequence(n) => format!("sequence model over {n} recent items"),
            VectorSource::Examples => "POSITIVE examples (no user vector)".into(),
            VectorSource::Popular => "cold start: popular items".into(),
        }
    }
}

/// The stages of the pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    UserVector = 0,
    Retrieve = 1,
    Rank = 2,
    Plugins = 3,
    Order = 4,
}

/// Counts and microseconds per stage.
#[derive(Debug, Clone, Default)]
pub struct Explain {
    /// Wall-clock microseconds per [`Stage`].
    pub stage_us: [u64; 5],
    pub source: Option<VectorSource>,
    /// Recent items blended into the user vector by SESSION (0: none).
    pub session_items: usize,
    /// Recent items the tower (RECENT model) read, and its microseconds
    /// (part of the user-vector stage).
    pub tower_items: usize,
    pub tower_us: u64,
    pub retrieved: usize,
    /// Filter evaluations during retrieval, and how many were rejected.
    pub filter_evaluated: usize,
    pub filter_rejected: usize,
    pub filter_mode: &'static str,
    /// Candidates MIN_SCORE dropped.
    pub below_min_score: usize,
    /// POSITIVE / NEGATIVE examples found in the catalog and missing from
    /// it; candidates BEST_SCORE dropped as nearer a negative example.
    pub examples_used: usize,
    pub examples_missing: usize,
    pub nearer_negative: usize,
    /// With SOURCES: each source and how many candidates it gave, and the
    /// source that ranked each merged candidate best.
    pub source_counts: Vec<(Source, usize)>,
    pub found_by: HashMap<u32, Source>,
    /// Items FALLBACK added after the pipeline.
    pub fallback_added: usize,
    /// Nodes the graph walk scored (0 when retrieval scanned or used
    /// popularity).
    pub walk_visits: usize,
    /// The model that ranked, and how many candidates it scored.
    pub rank_model: Option<String>,
    pub ranked: usize,
    /// Of the rank stage: microseconds spent assembling the model's input
    /// (user hash fields, item attribute columns, vocabularies).
    pub rank_features_us: u64,
    /// Candidates left after the plugin stages, and failures skipped
    /// (FAILOPEN).
    pub after_plugins: usize,
    pub plugin_failures: Vec<String>,
    pub diversity_dropped: usize,
    pub returned: usize,
}

impl Explain {
    pub fn new() -> Explain {
        Explain {
            filter_mode: "none",
            ..Explain::default()
        }
    }

    /// Runs one stage and records its time.
    pub fn timed<T>(&mut self, stage: Stage, run: impl FnOnce(&mut Explain) -> T) -> T {
        let t = Instant::now();
        let out = run(self);
        self.stage_us[stage as usize] = t.elapsed().as_micros() as u64;
        out
    }

    /// Microseconds the stage took.
    pub fn micros(&self, stage: Stage) -> u64 {
        self.stage_us[stage as usize]
    }
}
