//! What a request costs before it runs, for the one decision that needs
//! it: whether the Redis main thread may answer it inline instead of
//! handing it to a worker (as Redis's vector sets do with NOTHREAD).
//!
//! A thread hop costs about 35 µs of latency and a few µs of CPU on both
//! threads (`recsys bench small`: SEARCH on 1,682 items went from 48 µs
//! per request on a worker to the scan's own time inline). Inline is only
//! for work with a hard bound known up front: an exact scan of a small
//! catalog ([`crate::index::Hnsw::prefers_scan`]), a session mean over at
//! most [`crate::user::MAX_SESSION_ITEMS`] vectors, the user's seen set
//! (at most [`crate::user::MAX_SEEN_ITEMS`], counted in the work), typed
//! filters whose cost per item is a few loads (never the CEL
//! interpreter), the sequence tower (its multiply-adds over the recent items
//! it reads are counted), examples (one scan per query), and nothing else:
//! no graph walk, no ranking or QUERY model, no plugin, no SOURCES.

use crate::catalog::Catalog;
use crate::pipeline::request::{Request, UserShape};

/// Most multiply-adds a request may need to run on the main thread: an
/// exact scan of 2,048 items x 64 dimensions, about 10 µs on the 2-core
/// development machine's AVX-512 (docs/benchmarks.md, `bench scan`).
pub const INLINE_MAX_WORK: usize = 2048 * 64;

/// Multiply-adds of a SEARCH (or SIMILAR) for `k` results at `ef` when it
/// is an exact scan; `None` when it walks the graph (unbounded by this
/// rule: it runs on a worker).
pub fn search_work(catalog: &Catalog, k: usize, ef: usize) -> Option<usize> {
    let index = catalog.index();
    index
        .prefers_scan(ef.max(k))
        .then(|| index.slots().saturating_mul(catalog.params().dim))
}

/// Multiply-adds of a RECOMMEND whose every stage has a bound known now,
/// `None` otherwise (a WHERE the typed filters cannot express, a RANK
/// model, plugins, the QUERY model, a graph walk).
pub fn recommend_work(catalog: &Catalog, user: &UserShape, req: &Request) -> Option<usize> {
    // SOURCES run several searches (one per recent item for `similar`).
    if req.rank.is_some() || req.has_plugins() || req.sources.is_some() {
        return None;
    }
    if let Some(text) = &req.where_text {
        // Never compiled here (this runs on the main thread): a WHERE seen
        // for the first time runs on a worker, which compiles and caches it.
        let filter = req
            .filter
            .clone()
            .or_else(|| crate::pipeline::filter::Filter::cached_only(text))?;
        // Only typed filters have a per-item cost known up front.
        filter.typed()?;
    }
    if !user.has_vector && catalog.models().query_model().is_some() {
        return None;
    }
    let dim = catalog.params().dim;
    let ef = req
        .ef
        .unwrap_or(catalog.params().ef_search)
        .max(req.candidates);
    let index = catalog.index();
    if !index.prefers_scan(ef) {
        return None;
    }
    let session = req
        .session
        .or(catalog.session_default())
        .map_or(0, |s| s.items.min(user.recent));
    // EXCLUDE_SEEN sorts the user's seen hashes and sets their bits (up
    // to 100,000 of them): a large history sends the request to a worker.
    let seen = if req.exclude_seen {
        user.seen + user.recent
    } else {
        0
    };
    let exclusions = (seen + req.exclude.len()).saturating_mul(SEEN_HASH_WORK);
    // A SEQUENCE that names no RECENT model fails in the pipeline, at once.
    let tower = match crate::pipeline::user_vector::sequence_blend(catalog, req.sequence) {
        Ok(Some(t)) => t.model.recent_work(user.recent),
        _ => 0,
    };
    // Examples: one scan per BEST_SCORE query (one for AVERAGE), each
    // example's vector read, and BEST_SCORE's scoring of every candidate
    // against every example.
    let examples = &req.examples;
    let searches = examples.searches(user.has_vector);
    let example_count = examples.positive.len() + examples.negative.len();
    let rescoring = match examples.strategy {
        crate::pipeline::examples::Strategy::BestScore if !examples.is_empty() => {
            req.candidates.saturating_mul(example_count + 1)
        }
        _ => 0,
    };
    Some(
        index
            .slots()
            .saturating_mul(searches)
            .saturating_add(session)
            .saturating_add(example_count)
            .saturating_add(rescoring)
            .saturating_mul(dim)
            .saturating_add(exclusions.saturating_add(example_count * SEEN_HASH_WORK))
            .saturating_add(tower),
    )
}

/// Work counted per excluded item (sorting it, setting its bit), in
/// multiply-adds.
const SEEN_HASH_WORK: usize = 16;

/// Whether work of this size runs inline ([`INLINE_MAX_WORK`]).
pub fn runs_inline(work: Option<usize>) -> bool {
    work.is_some_and(|w| w <= INLINE_MAX_WORK)
}
