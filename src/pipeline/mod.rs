//! The online recommendation pipeline, one file per stage:
//!
//! 1. [`user_vector`]: the request's VECTOR, the user's `emb`, the catalog's
//!    QUERY model, blended with the session mean and the sequence tower
//!    (RECENT model), or those alone, or cold start;
//! 2. [`retrieve`]: HNSW top-CANDIDATES with EXCLUDE_SEEN and WHERE
//!    ([`filter`]) admitted inside the graph walk, for the user vector
//!    steered by POSITIVE / NEGATIVE [`examples`];
//! 3. [`rank`]: the RANK model scores all candidates in one batch;
//! 4. [`plugins`]: WebAssembly filter plugins, then the order plugin;
//! 5. [`order`]: softmax sampling, diversity cap, top-K.
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
pub mod typed_filter;
pub mod user_vector;

use crate::catalog::Catalog;
use crate::error::Result;
use crate::plugin::Host;
use explain::{Explain, Stage, VectorSource};
use request::{Request, Session, UserInput};

/// The recommended items (id, score) best first, and how they came about.
#[derive(Debug, Clone)]
pub struct Recommendation {
    pub items: Vec<(String, f32)>,
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
    let user_vector = ex.timed(Stage::UserVector, |_| {
        let session = req.session.or(catalog.session_default());
        let tower = user_vector::sequence_blend(catalog, req.sequence)?;
        user_vector::user_vector(catalog, user, session.filter(Session::is_on), tower)
    })?;
    ex.source = Some(user_vector.source);
    ex.session_items = user_vector.session_items;
    ex.tower_items = user_vector.tower_items;
    ex.tower_us = user_vector.tower_us;
    let candidates = ex.timed(Stage::Retrieve, |ex| {
        let had_vector = user_vector.vector.is_some();
        let (plan, counts) = examples::plan(catalog, user_vector.vector, &req.examples)?;
        if !had_vector && plan != examples::Plan::Single(None) {
            ex.source = Some(VectorSource::Examples);
        }
        ex.examples_used = counts.used;
        ex.examples_missing = counts.missing;
        retrieve::retrieve(catalog, user, req, &plan, ex)
    })?;
    let ranked = ex.timed(Stage::Rank, |ex| {
        rank::rank(catalog, user, req, candidates, ex)
    })?;
    let admitted = ex.timed(Stage::Plugins, |ex| {
        plugins::apply(catalog, user, req, host, ranked, ex)
    })?;
    let items = ex.timed(Stage::Order, |ex| order::order(catalog, req, admitted, ex));
    Ok(Recommendation { items, explain: ex })
}

#[cfg(test)]
mod tests;
