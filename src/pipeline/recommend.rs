//! One RECSYS.RECOMMEND request through the five stages:
//!
//! 1. user vector: the request's VECTOR, the user's `emb`, the catalog's
//!    QUERY model over the user's features, the mean of the vectors of the
//!    user's recent items (session), or cold start (popular);
//! 2. retrieval: HNSW top-CANDIDATES, with the filters applied *inside* the
//!    graph walk, so a selective filter still fills the list when enough
//!    matching items exist;
//! 3. filtering: EXCLUDE_SEEN and WHERE (CEL over item attributes);
//! 4. ranking: a RANK model scores all candidates in one batched call (user
//!    features broadcast to every row), else the retrieval score;
//! 5. ordering: top-K, or softmax sampling (Gumbel top-k, seeded), then an
//!    optional per-attribute diversity cap.
//!
//! Each stage records how many items it saw and how long it took (EXPLAIN).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::catalog::Catalog;
use crate::pipeline::filter::{Filter, FilterEval};
use crate::pipeline::plugins::{run_plugins, PluginStage};
use crate::plugin::Host;
use crate::synth::SplitMix;

/// Most items RECOMMEND returns.
pub const MAX_K: usize = 10_000;
/// Most candidates retrieved.
pub const MAX_CANDIDATES: usize = 100_000;

/// How the final list is ordered.
#[derive(Debug, Clone, PartialEq)]
pub enum Ordering {
    /// Best score first.
    TopK,
    /// Sample without replacement with probability ∝ exp(score / temperature).
    Softmax { temperature: f32, seed: u64 },
}

/// Everything a request asks for (parsed and checked by the caller).
#[derive(Debug)]
pub struct Request {
    pub k: usize,
    pub candidates: usize,
    pub ef: Option<usize>,
    pub filter: Option<std::sync::Arc<Filter>>,
    pub exclude_seen: bool,
    pub ordering: Ordering,
    /// At most `.1` items per value of attribute `.0`.
    pub diversity: Option<(String, usize)>,
    /// Filter plugins, run in order after the built-in filters.
    pub filter_plugins: Vec<PluginStage>,
    /// Order plugin, replacing the built-in ordering.
    pub order_plugin: Option<PluginStage>,
    /// A failing plugin skips its stage (counted in EXPLAIN) instead of
    /// failing the request.
    pub fail_open: bool,
    /// The catalog model (ROLE RANK) that scores the candidates.
    pub rank: Option<String>,
}

impl Request {
    pub fn new(k: usize) -> Request {
        Request {
            k,
            candidates: 200,
            ef: None,
            filter: None,
            exclude_seen: false,
            ordering: Ordering::TopK,
            diversity: None,
            filter_plugins: Vec::new(),
            order_plugin: None,
            fail_open: false,
            rank: None,
        }
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
    /// The user key (passed to plugins).
    pub user_id: String,
    /// Current time in milliseconds (for popularity decay).
    pub now_ms: i64,
    /// User hash fields the models read (by field name).
    pub features: HashMap<String, String>,
}

/// Where the user vector came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorSource {
    Argument,
    Embedding,
    /// The catalog's QUERY model over the user's features.
    QueryModel,
    /// Mean of this many recent items' vectors.
    Session(usize),
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
            VectorSource::Popular => "cold start: popular items".into(),
        }
    }
}

/// Counts and microseconds per stage.
#[derive(Debug, Clone, Default)]
pub struct Explain {
    pub source: Option<VectorSource>,
    pub user_us: u64,
    pub retrieve_us: u64,
    pub retrieved: usize,
    /// Filter evaluations during retrieval, and how many were rejected.
    pub filter_evaluated: usize,
    pub filter_rejected: usize,
    pub filter_mode: &'static str,
    pub rank_us: u64,
    /// The model that ranked, and how many candidates it scored.
    pub rank_model: Option<String>,
    pub ranked: usize,
    pub order_us: u64,
    pub diversity_dropped: usize,
    pub returned: usize,
    /// Plugin stages: microseconds, candidates after them, failures skipped.
    pub plugin_us: u64,
    pub after_plugins: usize,
    pub plugin_failures: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Recommendation {
    pub items: Vec<(String, f32)>,
    pub explain: Explain,
}

fn micros(t: Instant) -> u64 {
    t.elapsed().as_micros() as u64
}

/// Runs the pipeline. Errors are for the caller to return as `-ERR`.
pub fn recommend(
    catalog: &Catalog,
    user: &UserInput,
    req: &Request,
    host: Option<&Host>,
) -> Result<Recommendation, String> {
    let mut ex = Explain {
        filter_mode: "none",
        ..Explain::default()
    };

    // Stage 1: the user vector.
    let t = Instant::now();
    let seen: HashSet<u32> = if req.exclude_seen {
        user.recent
            .iter()
            .filter_map(|id| catalog.slot_of(id))
            .collect()
    } else {
        HashSet::new()
    };
    let (vector, source) = user_vector(catalog, user)?;
    ex.source = Some(source);
    ex.user_us = micros(t);

    // Stages 2 + 3: retrieval with the filters inside the walk.
    let t = Instant::now();
    let evaluated = std::cell::Cell::new(0usize);
    let rejected = std::cell::Cell::new(0usize);
    let filter = req
        .filter
        .as_ref()
        .map(|f| FilterEval::new(f, catalog.columns()));
    let accept = |slot: u32| {
        if seen.contains(&slot) {
            rejected.set(rejected.get() + 1);
            return false;
        }
        match &filter {
            Some(f) => {
                evaluated.set(evaluated.get() + 1);
                let ok = f.matches(slot);
                if !ok {
                    rejected.set(rejected.get() + 1);
                }
                ok
            }
            None => true,
        }
    };
    let filtered = req.filter.is_some() || req.exclude_seen;
    let mut scanned = false;
    let mut scored: Vec<(u32, f32)> = match &vector {
        Some(v) => {
            let index = catalog.index();
            let ef = req
                .ef
                .unwrap_or(catalog.params().ef_search)
                .max(req.candidates);
            // A filter so selective that the walk would visit a third of the
            // graph is cheaper as a scan of the matching items.
            let budget = if filtered {
                (index.slots() / 3).max(ef * 10)
            } else {
                usize::MAX
            };
            let (mut hits, cut) = index.search_within(v, req.candidates, ef, accept, budget);
            if cut && hits.len() < req.candidates {
                hits = index.scan(v, req.candidates, accept);
                scanned = true;
            }
            hits.into_iter().map(|h| (h.slot, h.score)).collect()
        }
        None => catalog
            .most_popular(req.candidates, accept)
            .into_iter()
            .map(|s| (s, catalog.popularity_at(s, user.now_ms) as f32))
            .collect(),
    };
    ex.filter_evaluated = evaluated.get();
    ex.filter_rejected = rejected.get();
    ex.filter_mode = match (filtered, vector.is_some(), scanned) {
        (false, _, _) => "none",
        (true, true, false) => "in-graph",
        (true, true, true) => "in-graph, then scan (selective filter)",
        (true, false, _) => "scan",
    };
    // From here on scores are "higher is better": an L2 distance becomes its
    // negative, so ranking, sampling and plugins treat all metrics alike.
    if vector.is_some() && catalog.params().metric == crate::index::Metric::L2 {
        scored.iter_mut().for_each(|(_, s)| *s = -*s);
    }
    ex.retrieved = scored.len();
    ex.retrieve_us = micros(t);

    // Stage 4: the RANK model's scores, else the retrieval score.
    let t = Instant::now();
    if let Some(name) = &req.rank {
        let model = rank_model(catalog, name)?;
        let scores = model.score(&user.features, catalog, &scored)?;
        scored.iter_mut().zip(scores).for_each(|(c, s)| c.1 = s);
        ex.rank_model = Some(name.clone());
        ex.ranked = scored.len();
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ex.rank_us = micros(t);

    // Plugin stages: filters, then the order plugin.
    let t = Instant::now();
    if !req.filter_plugins.is_empty() || req.order_plugin.is_some() {
        let host = host.ok_or("plugins are not available on this server (see the log)")?;
        let mut failures = Vec::new();
        let fail_open = req.fail_open;
        let mut on_error =
            |stage: &PluginStage, e: crate::plugin::CallError| -> Result<(), String> {
                let msg = format!("plugin '{}': {e}", stage.plugin.name);
                if fail_open {
                    failures.push(msg);
                    Ok(())
                } else {
                    Err(msg)
                }
            };
        scored = run_plugins(
            host,
            catalog,
            &user.user_id,
            &req.filter_plugins,
            req.order_plugin.as_ref(),
            scored,
            &mut on_error,
        )?;
        ex.plugin_failures = failures;
    }
    ex.after_plugins = scored.len();
    ex.plugin_us = micros(t);

    // Stage 5: ordering.
    let t = Instant::now();
    if let Ordering::Softmax { temperature, seed } = req.ordering {
        scored = softmax_order(scored, temperature, seed);
    }
    let mut out = Vec::with_capacity(req.k);
    let mut per_value: HashMap<u32, usize> = HashMap::new();
    let diversity_column = req
        .diversity
        .as_ref()
        .and_then(|(attr, _)| catalog.columns().column(attr));
    for (slot, score) in scored {
        if out.len() >= req.k {
            break;
        }
        if let (Some((_, max)), Some(column)) = (&req.diversity, diversity_column) {
            // Items without the attribute are not capped.
            let value = column.id(slot);
            if value != 0 {
                let n = per_value.entry(value).or_insert(0);
                if *n >= *max {
                    ex.diversity_dropped += 1;
                    continue;
                }
                *n += 1;
            }
        }
        if let Some(id) = catalog.id_of(slot) {
            out.push((id.to_string(), score));
        }
    }
    ex.order_us = micros(t);
    ex.returned = out.len();
    Ok(Recommendation {
        items: out,
        explain: ex,
    })
}

/// The RANK model called `name`.
pub fn rank_model<'a>(
    catalog: &'a Catalog,
    name: &str,
) -> Result<&'a std::sync::Arc<crate::rank::Model>, String> {
    let model = catalog.models().get(name).ok_or_else(|| {
        format!("RANK: the catalog has no model named '{name}' (add it with RECSYS.MODEL.SET)")
    })?;
    if model.spec.role != crate::rank::Role::Rank {
        return Err(format!(
            "RANK: model '{name}' has ROLE {}, not RANK",
            model.spec.role.name()
        ));
    }
    Ok(model)
}

/// Stage 1: the first available of VECTOR, `emb`, the QUERY model, session
/// mean; `None` means cold start.
fn user_vector(
    catalog: &Catalog,
    user: &UserInput,
) -> Result<(Option<Vec<f32>>, VectorSource), String> {
    let prepare = |v: &[f32]| catalog.index().prepare(v);
    if let Some(v) = &user.vector_arg {
        catalog
            .check_vector(v)
            .map_err(|e| format!("VECTOR: {e}"))?;
        return Ok((Some(prepare(v)), VectorSource::Argument));
    }
    if let Some(v) = &user.embedding {
        catalog
            .check_vector(v)
            .map_err(|e| format!("user field emb: {e}"))?;
        return Ok((Some(prepare(v)), VectorSource::Embedding));
    }
    // The query model needs something to go on: a user with none of its
    // fields falls through to the session mean or cold start.
    let query_model = catalog.models().query_model().filter(|m| {
        m.user_fields()
            .iter()
            .any(|f| user.features.contains_key(f))
    });
    if let Some(model) = query_model {
        let v = model.query(&user.features, catalog)?;
        catalog
            .check_vector(&v)
            .map_err(|e| format!("query model '{}': {e}", model.spec.name))?;
        return Ok((Some(prepare(&v)), VectorSource::QueryModel));
    }
    let dim = catalog.params().dim;
    let mut sum = vec![0f32; dim];
    let mut n = 0;
    for id in &user.recent {
        if let Some(slot) = catalog.slot_of(id) {
            for (s, x) in sum.iter_mut().zip(catalog.index().vector(slot)) {
                *s += x;
            }
            n += 1;
        }
    }
    if n > 0 && sum.iter().any(|&x| x != 0.0) {
        sum.iter_mut().for_each(|x| *x /= n as f32);
        return Ok((Some(prepare(&sum)), VectorSource::Session(n)));
    }
    Ok((None, VectorSource::Popular))
}

/// Gumbel top-k: adding Gumbel noise to score/T and sorting samples without
/// replacement from softmax(score/T). The same seed gives the same order.
fn softmax_order(scored: Vec<(u32, f32)>, temperature: f32, seed: u64) -> Vec<(u32, f32)> {
    let mut rng = SplitMix::new(seed);
    let mut keyed: Vec<(f64, u32, f32)> = scored
        .into_iter()
        .map(|(slot, score)| {
            let u = rng.uniform().max(f64::MIN_POSITIVE);
            let gumbel = -(-u.ln()).ln();
            (score as f64 / temperature as f64 + gumbel, slot, score)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    keyed
        .into_iter()
        .map(|(_, slot, score)| (slot, score))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::normalize_attrs;
    use crate::index::IndexParams;
    use crate::synth::clustered;

    fn catalog(n: usize) -> Catalog {
        let mut c = Catalog::new(IndexParams::new(16)).unwrap();
        for (i, v) in clustered(n, 16, 10, 0.4, 1).iter().enumerate() {
            let attrs = format!(r#"{{"genre":"g{}","rare":{}}}"#, i % 5, i % 100 == 0);
            c.set(&format!("i{i}"), v, Some(normalize_attrs(&attrs).unwrap()))
                .unwrap();
        }
        c
    }

    fn user(v: Vec<f32>) -> UserInput {
        UserInput {
            vector_arg: Some(v),
            ..UserInput::default()
        }
    }

    #[test]
    fn selective_filter_still_fills_k() {
        let c = catalog(3000);
        let mut req = Request::new(20);
        req.filter = Some(Filter::compile("rare").unwrap().into());
        let u = user(c.index().vector(5));
        let r = recommend(&c, &u, &req, None).unwrap();
        assert_eq!(r.items.len(), 20, "30 rare items exist");
        assert!(r
            .items
            .iter()
            .all(|(id, _)| id[1..].parse::<usize>().unwrap() % 100 == 0));
        assert!(r.explain.filter_mode.starts_with("in-graph"));
    }

    #[test]
    fn exclude_seen_softmax_and_diversity() {
        let c = catalog(2000);
        let v = c.index().vector(1);
        let mut u = user(v);
        let plain = recommend(&c, &u, &Request::new(10), None).unwrap();
        u.recent = plain
            .items
            .iter()
            .take(5)
            .map(|(id, _)| id.clone())
            .collect();
        let mut req = Request::new(10);
        req.exclude_seen = true;
        let r = recommend(&c, &u, &req, None).unwrap();
        assert!(r.items.iter().all(|(id, _)| !u.recent.contains(id)));

        let mut req = Request::new(10);
        req.ordering = Ordering::Softmax {
            temperature: 0.05,
            seed: 7,
        };
        let a = recommend(&c, &u, &req, None).unwrap().items;
        let b = recommend(&c, &u, &req, None).unwrap().items;
        assert_eq!(a, b, "same seed, same answer");
        req.ordering = Ordering::Softmax {
            temperature: 0.05,
            seed: 8,
        };
        assert_ne!(a, recommend(&c, &u, &req, None).unwrap().items);

        let mut req = Request::new(10);
        req.diversity = Some(("genre".into(), 2));
        let r = recommend(&c, &u, &req, None).unwrap();
        let mut counts = HashMap::new();
        for (id, _) in &r.items {
            let slot = c.slot_of(id).unwrap();
            *counts
                .entry(c.columns().column("genre").unwrap().id(slot))
                .or_insert(0) += 1;
        }
        assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
        assert_eq!(r.items.len(), 10);
    }

    #[test]
    fn session_and_cold_start() {
        let c = catalog(500);
        let u = UserInput {
            recent: vec!["i3".into(), "i4".into(), "nope".into()],
            ..UserInput::default()
        };
        let r = recommend(&c, &u, &Request::new(5), None).unwrap();
        assert_eq!(r.explain.source, Some(VectorSource::Session(2)));
        let cold = UserInput {
            now_ms: 1_000,
            ..UserInput::default()
        };
        for (i, w) in [(7u32, 5.0), (9, 1.0), (11, 3.0)] {
            c.record_popularity(i, w, 1_000);
        }
        let r = recommend(&c, &cold, &Request::new(3), None).unwrap();
        assert_eq!(r.explain.source, Some(VectorSource::Popular));
        let ids: Vec<&str> = r.items.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["i7", "i11", "i9"]);
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use crate::catalog::normalize_attrs;
    use crate::index::IndexParams;
    use crate::synth::clustered_lowrank;

    #[test]
    #[ignore]
    fn print_filter_costs() {
        let mut c = Catalog::new(IndexParams {
            ef_search: 64,
            ..IndexParams::new(64)
        })
        .unwrap();
        for (i, v) in clustered_lowrank(100_000, 64, 100, 8, 1).iter().enumerate() {
            let attrs = format!(r#"{{"genre":"g{}","rare":{}}}"#, i % 20, i % 100 == 0);
            c.set(&format!("i{i}"), v, Some(normalize_attrs(&attrs).unwrap()))
                .unwrap();
        }
        let users = clustered_lowrank(50, 64, 100, 8, 2);
        for w in [
            None,
            Some("true"),
            Some(r#"genre != "g3""#),
            Some(r#"genre == "g3""#),
            Some("rare"),
            Some(r#"genre == "nope""#),
        ] {
            let mut req = Request::new(10);
            req.filter = w.map(|w| Filter::compile(w).unwrap().into());
            let t = Instant::now();
            let mut evals = 0;
            let mut retrieve = 0;
            let mut mode = "";
            for u in &users {
                let r = recommend(
                    &c,
                    &UserInput {
                        vector_arg: Some(u.clone()),
                        ..UserInput::default()
                    },
                    &req,
                    None,
                )
                .unwrap();
                evals += r.explain.filter_evaluated;
                retrieve += r.explain.retrieve_us;
                mode = r.explain.filter_mode;
            }
            eprintln!(
                "{w:?}: {} us/request, retrieve {} us, {} evals/request, {mode}",
                t.elapsed().as_micros() / 50,
                retrieve / 50,
                evals / 50
            );
        }
    }
}
