//! What a recommendation request asks for, and every rule that ties its
//! options together ([`Request::validate`]), shared by RECSYS.RECOMMEND and
//! RECSYS.BATCH so that neither carries its own copy.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pipeline::examples::Examples;
use crate::pipeline::filter::Filter;
use crate::pipeline::sources::{Fallback, Sources};
use crate::plugin::{Plugin, World};
use crate::user::{parse_recent, SeenSet, EMB_FIELD};

/// Most items a request returns (and most results of SEARCH / SIMILAR).
pub const MAX_K: usize = 10_000;
/// Most candidates retrieved.
pub const MAX_CANDIDATES: usize = 100_000;
/// Most ids one EXCLUDE lists.
pub const MAX_EXCLUDE: usize = 100_000;
/// Candidates retrieved unless the request says otherwise.
pub const DEFAULT_CANDIDATES: usize = 200;
pub use crate::user::{Session, MAX_SESSION_ITEMS};

/// One plugin invocation of a request.
#[derive(Clone)]
pub struct PluginStage {
    pub plugin: Arc<Plugin>,
    /// The per-call config string (`ARGS`).
    pub config: String,
}

impl std::fmt::Debug for PluginStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({:?})", self.plugin.name, self.config)
    }
}

/// How the final list is ordered.
#[derive(Debug, Clone, PartialEq)]
pub enum Ordering {
    /// Best score first.
    TopK,
    /// Sample without replacement with probability ∝ exp(score / temperature).
    Softmax { temperature: f32, seed: u64 },
}

/// Everything a request asks for. Parsers fill it option by option, then
/// call [`Request::validate`]; the pipeline runs validated requests.
#[derive(Debug)]
pub struct Request {
    pub k: usize,
    pub candidates: usize,
    pub ef: Option<usize>,
    /// WHERE as given; compiled where the request runs (a worker, not
    /// Redis's main thread), through the process-wide cache.
    pub where_text: Option<String>,
    /// The compiled WHERE, when the caller compiled it up front
    /// ([`Request::compile_filter`]).
    pub filter: Option<Arc<Filter>>,
    pub exclude_seen: bool,
    /// Item ids never returned (EXCLUDE n id ...).
    pub exclude: Vec<String>,
    /// Candidates whose retrieval score is below this are dropped.
    pub min_score: Option<f32>,
    /// POSITIVE / NEGATIVE example items and the STRATEGY that combines
    /// them with the user vector ([`crate::pipeline::examples`]).
    pub examples: Examples,
    /// SOURCES: several candidate sources merged (`None`: the user vector
    /// alone, popularity at cold start).
    pub sources: Option<Sources>,
    /// What fills the list when the pipeline returns fewer than K.
    pub fallback: Option<Fallback>,
    pub ordering: Ordering,
    /// At most `.1` items per value of attribute `.0`.
    pub diversity: Option<(String, usize)>,
    /// Plugins in the order named, each with the world the request wants
    /// of it (FILTER: [`World::Filter`], ORDER: [`World::Order`]).
    pub plugins: Vec<(World, PluginStage)>,
    /// A failing plugin skips its stage (counted in EXPLAIN) instead of
    /// failing the request.
    pub fail_open: bool,
    /// The catalog model (ROLE RANK) that scores the candidates.
    pub rank: Option<String>,
    /// Blend the user vector with the current session (`None`: the
    /// catalog's default; a session of 0 items: no blend).
    pub session: Option<Session>,
    /// The weight of the catalog's RECENT model (the sequence tower) in the
    /// user vector (`None`: the catalog's default; 0: off).
    pub sequence: Option<f32>,
}

impl Request {
    pub fn new(k: usize) -> Request {
        Request {
            k,
            candidates: DEFAULT_CANDIDATES,
            ef: None,
            where_text: None,
            filter: None,
            exclude_seen: false,
            exclude: Vec::new(),
            min_score: None,
            examples: Examples::default(),
            sources: None,
            fallback: None,
            ordering: Ordering::TopK,
            diversity: None,
            plugins: Vec::new(),
            fail_open: false,
            rank: None,
            session: None,
            sequence: None,
        }
    }

    /// Checks the rules between options and settles what depends on
    /// several of them: at least K candidates, plugins of the world their
    /// slot needs, one ORDER plugin, ORDER and SOFTMAX not together.
    pub fn validate(mut self) -> Result<Request> {
        if self.k == 0 || self.k > MAX_K {
            return Err(Error::invalid(format!(
                "K must be between 1 and {MAX_K}, got {}",
                self.k
            )));
        }
        if let Some(sources) = &self.sources {
            if sources.list.is_empty() {
                return Err(Error::invalid(
                    "MERGE needs SOURCES n source share ... (it merges their lists)",
                ));
            }
            let total = sources.total();
            if total < self.k || total > MAX_CANDIDATES {
                return Err(Error::invalid(format!(
                    "the SOURCES shares add up to {total} candidates, expected between K ({}) and {MAX_CANDIDATES}",
                    self.k
                )));
            }
            self.candidates = total;
        }
        self.candidates = self.candidates.clamp(self.k, MAX_CANDIDATES.max(self.k));
        for (want, stage) in &self.plugins {
            if stage.plugin.world != *want {
                let slot = match want {
                    World::Filter => "FILTER",
                    World::Order => "ORDER",
                };
                return Err(Error::invalid(format!(
                    "plugin '{}' implements the {} world, {slot} needs a {} plugin",
                    stage.plugin.name,
                    stage.plugin.world.name(),
                    want.name()
                )));
            }
        }
        if self.order_plugins().count() > 1 {
            return Err(Error::invalid("only one ORDER plugin per request"));
        }
        if self.order_plugin().is_some() && matches!(self.ordering, Ordering::Softmax { .. }) {
            return Err(Error::invalid(
                "ORDER plugin and SOFTMAX cannot be combined: both decide the order",
            ));
        }
        Ok(self)
    }

    /// Compiles WHERE now (for callers that run the request many times).
    pub fn compile_filter(&mut self) -> Result<()> {
        self.filter = self.compiled_filter()?;
        Ok(())
    }

    /// The compiled WHERE, if any.
    pub fn compiled_filter(&self) -> Result<Option<Arc<Filter>>> {
        match (&self.filter, &self.where_text) {
            (Some(f), _) => Ok(Some(Arc::clone(f))),
            (None, Some(text)) => Filter::cached(text).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The filter plugins, in the order named.
    pub fn filter_plugins(&self) -> impl Iterator<Item = &PluginStage> {
        self.plugins
            .iter()
            .filter(|(w, _)| *w == World::Filter)
            .map(|(_, s)| s)
    }

    fn order_plugins(&self) -> impl Iterator<Item = &PluginStage> {
        self.plugins
            .iter()
            .filter(|(w, _)| *w == World::Order)
            .map(|(_, s)| s)
    }

    /// The order plugin, replacing the built-in ordering.
    pub fn order_plugin(&self) -> Option<&PluginStage> {
        self.order_plugins().next()
    }

    pub fn has_plugins(&self) -> bool {
        !self.plugins.is_empty()
    }

    /// Whether a stage after retrieval rescores, reorders or drops
    /// candidates (RANK, plugins, SOFTMAX, DIVERSITY), so it needs all
    /// CANDIDATES; without one, the answer is the first K by retrieval
    /// score, and retrieval asks for K alone (with EF still raised to
    /// CANDIDATES, so the K are the same).
    pub fn uses_all_candidates(&self) -> bool {
        self.rank.is_some()
            || self.has_plugins()
            || self.ordering != Ordering::TopK
            || self.diversity.is_some()
    }
}

/// What the caller read about the user (from the request and the user's hash).
#[derive(Debug, Default, Clone)]
pub struct UserInput {
    /// The VECTOR argument (already decoded).
    pub vector_arg: Option<Vec<f32>>,
    /// The user's stored embedding (already decoded).
    pub embedding: Option<Vec<f32>>,
    /// Recently interacted item ids, newest first.
    pub recent: Vec<String>,
    /// Every item interacted with (read only for EXCLUDE_SEEN).
    pub seen: crate::user::SeenSet,
    /// The user key (passed to plugins).
    pub user_id: String,
    /// Current time in milliseconds (for popularity decay).
    pub now_ms: i64,
    /// User hash fields the models read (by field name).
    pub features: HashMap<String, String>,
}

/// A user's hash fields as the main thread copies them, still unparsed:
/// the copies are a few hundred bytes; the parsing (`emb` floats, the JSON
/// `recent` list, the `seen` hashes) runs on the worker that serves the
/// request, or inline when the whole request does ([`RawUser::parse`]).
#[derive(Debug, Default, Clone)]
pub struct RawUser {
    pub user_id: String,
    pub now_ms: i64,
    /// `emb` (unless the request brings its own vector).
    pub emb: Option<Vec<u8>>,
    /// `recent`, a JSON array of ids.
    pub recent: Option<Vec<u8>>,
    /// `seen`, about 10.7 bytes of text per item, 8 in the older binary
    /// form (read for EXCLUDE_SEEN only).
    pub seen: Option<Vec<u8>>,
    /// The feature fields the request's models read.
    pub features: HashMap<String, String>,
}

/// How much of a user a request will handle, known before parsing (upper
/// bounds where the exact count needs the parse).
#[derive(Debug, Clone, Copy, Default)]
pub struct UserShape {
    pub has_vector: bool,
    pub recent: usize,
    pub seen: usize,
}

impl UserInput {
    pub fn shape(&self) -> UserShape {
        UserShape {
            has_vector: self.vector_arg.is_some() || self.embedding.is_some(),
            recent: self.recent.len(),
            seen: self.seen.len(),
        }
    }
}

impl RawUser {
    /// The shape before parsing: `recent` holds at most one id per 3 bytes
    /// (`"x",`), `seen` one per 8 (either form).
    pub fn shape(&self, vector_given: bool) -> UserShape {
        UserShape {
            has_vector: vector_given || self.emb.is_some(),
            recent: self.recent.as_ref().map_or(0, |r| r.len() / 3),
            seen: self.seen.as_ref().map_or(0, |s| s.len() / 8),
        }
    }

    /// Parses the fields into a [`UserInput`] for vectors of `dim`; the
    /// errors name the field and the user.
    pub fn parse(self, dim: usize) -> Result<UserInput> {
        let user = &self.user_id;
        let embedding = match &self.emb {
            Some(b) => Some(crate::vector::from_fp32_blob(b, dim).map_err(|e| {
                Error::invalid(format!("field '{EMB_FIELD}' of user '{user}': {e}"))
            })?),
            None => None,
        };
        let recent = parse_recent(self.recent.as_deref(), || user.clone())?;
        let seen = SeenSet::parse(self.seen.as_deref(), || user.clone())?;
        Ok(UserInput {
            vector_arg: None,
            embedding,
            recent,
            seen,
            user_id: self.user_id,
            now_ms: self.now_ms,
            features: self.features,
        })
    }
}
