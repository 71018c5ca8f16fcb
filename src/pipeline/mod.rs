//! The online recommendation pipeline, one file per stage:
//!
//! 1. [`user_vector`]: the request's VECTOR, the user's `emb`, the catalog's
//!    QUERY model, blended with the session mean and the sequence tower
//!    (RECENT model), or those alone, or cold start;
//! 2. [`retrieve`]: HNSW top-CANDIDATES with EXCLUDE_SEEN and WHERE
//!    ([`filter`]) admitted inside the graph walk, for the user vector
//!    steered by POSITIVE / NEGATIVE [`examples`], or several [`sources`]
//!    merged;
//! 3. [`rank`]: the RANK model scores all candidates in one batch;
//! 4. [`plugins`]: WebAssembly filter plugins, then the order plugin;
//! 5. [`order`]: softmax sampling, diversity cap, top-K; then FALLBACK
//!    fills a list left shorter than K.
//!
//! [`request`] holds what a request asks for and the rules between its
//! options; [`explain`] what EXPLAIN reports; [`cost`] what a request
//! costs before it runs (whether it may run inline). [`recommend`] below is the
//! whole request, stage after stage.

pub mod cost;
pub mod examples;
pub mod explain;
pub mod filter;
pub mod order;
pub mod plugins;
pub mod rank;
pub mod request;
pub mod retrieve;
pub mod sources;
pub mod typed_filter;
pub mod user_vector;

use crate::catalog::Catalog;
use crate::error::{self, Result};
use crate::plugin::Host;
use explain::{Explain, Stage, VectorSource};
use request::{Request, Session, UserInput};
use sources::Source;

/// The recommended items (id, score) best first, the source that found
/// each (WITHSOURCE), and how they came about.
#[derive(Debug, Clone)]
pub struct Recommendation {
    pub items: Vec<(String, f32)>,
    pub sources: Vec<Source>,
    pub explain: Explain,
}

/// Runs a validated request ([`Request::validate`]) for one user.
pub fn recommend(
    catalog: &Catalog,
    user: &UserInput,
    req: &Request,
    host: Option<&Host>,
) -> Result<Recommendation> {
    let mut ex = Explain::new();
    // Stage 1 with the examples: what retrieval searches with.
    let plan = ex.timed(Stage::UserVector, |ex| {
        let session = req.session.or(catalog.session_default());
        let tower = user_vector::sequence_blend(catalog, req.sequence)?;
        let uv = user_vector::user_vector(catalog, user, session.filter(Session::is_on), tower)?;
        ex.source = Some(uv.source);
        ex.session_items = uv.session_items;
        ex.tower_items = uv.tower_items;
        ex.tower_us = uv.tower_us;
        let had_vector = uv.vector.is_some();
        let (plan, counts) = examples::plan(catalog, uv.vector, &req.examples)?;
        if !had_vector && plan != examples::Plan::Single(None) {
            ex.source = Some(VectorSource::Examples);
        }
        ex.examples_used = counts.used;
        ex.examples_missing = counts.missing;
        Ok::<_, error::Error>(plan)
    })?;
    let candidates = ex.timed(Stage::Retrieve, |ex| {
        retrieve::retrieve(catalog, user, req, &plan, ex)
    })?;
    let ranked = ex.timed(Stage::Rank, |ex| {
        rank::rank(catalog, user, req, candidates, ex)
    })?;
    let admitted = ex.timed(Stage::Plugins, |ex| {
        plugins::apply(catalog, user, req, host, ranked, ex)
    })?;
    let mut items = ex.timed(Stage::Order, |ex| order::order(catalog, req, admitted, ex));
    // Without SOURCES every item comes from the user vector (or, at cold
    // start, popularity).
    let default_source = match plan {
        examples::Plan::Single(None) => Source::Popular,
        _ => Source::User,
    };
    let mut found_by: Vec<Source> = items
        .iter()
        .map(|(id, _)| match ex.found_by.is_empty() {
            true => default_source,
            false => catalog
                .slot_of(id)
                .and_then(|s| ex.found_by.get(&s).copied())
                .unwrap_or(default_source),
        })
        .collect();
    if let (Some(which), true) = (req.fallback, items.len() < req.k) {
        let taken: Vec<u32> = items
            .iter()
            .filter_map(|(id, _)| catalog.slot_of(id))
            .collect();
        let need = req.k - items.len();
        // Room for what the filter plugins drop.
        let fetch = if req.filter_plugins().next().is_some() {
            need * 4 + 16
        } else {
            need
        };
        let extra = retrieve::fallback(catalog, user, req, which, &taken, fetch)?;
        let extra = plugins::apply_filters(catalog, user, req, host, extra, &mut ex)?;
        for (slot, score) in extra.into_iter().take(need) {
            if let Some(id) = catalog.id_of(slot) {
                items.push((id.to_string(), score));
                found_by.push(Source::Fallback);
                ex.fallback_added += 1;
            }
        }
        ex.returned = items.len();
    }
    Ok(Recommendation {
        items,
        sources: found_by,
        explain: ex,
    })
}

#[cfg(test)]
mod tests;
