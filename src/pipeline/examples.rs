//! Recommending from examples: `POSITIVE n id [WEIGHT w] ...`,
//! `NEGATIVE n id ...` and `STRATEGY AVERAGE|BEST_SCORE`. This file owns
//! what a request's examples are, which of them the catalog holds, and the
//! two ways they steer retrieval:
//!
//! - **AVERAGE** (the default) searches once, with
//!   `q = P + (P - N)` when there are negatives, else `q = P`, where `P` is
//!   the weighted mean of the positives and `N` that of the negatives.
//! - **BEST_SCORE** searches once per positive, each search taking its
//!   share of CANDIDATES, and scores every candidate found by its best
//!   weighted similarity to a positive; a candidate more similar to a
//!   negative than to every positive is dropped. A weight `w` makes an
//!   example count as more similar: a similarity `s` (as WITHSCORES shows
//!   it; for L2 the negative distance) counts as `w x s` when positive and
//!   `s / w` when negative.
//!
//! The user's own vector (after SESSION and SEQUENCE) counts as one more
//! positive of weight 1, so examples steer a user's recommendations; the
//! keyless form (user key `-`) recommends from the examples alone. For IP
//! and COSINE every example and the user vector count as unit vectors (an
//! example's length does not weigh it); for L2 as the points they are.
//! Example ids the catalog lacks are skipped and counted; examples are
//! never returned.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::index::Metric;
use crate::pipeline::user_vector::unit;

/// Most ids one POSITIVE or NEGATIVE lists.
pub const MAX_EXAMPLES: usize = 256;
/// Largest WEIGHT of one example.
pub const MAX_EXAMPLE_WEIGHT: f32 = 1000.0;

/// How the examples steer retrieval (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    Average,
    BestScore,
}

impl Strategy {
    /// Every strategy with its spelling (the one list parsers and docs use).
    pub const ALL: [(&'static str, Strategy); 2] = [
        ("AVERAGE", Strategy::Average),
        ("BEST_SCORE", Strategy::BestScore),
    ];

    /// Parses a STRATEGY argument (any case).
    pub fn parse(text: &str) -> Result<Strategy> {
        crate::names::one_of("STRATEGY", text, &Strategy::ALL)
    }
}

/// The examples a request names, with their weights.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    pub positive: Vec<(String, f32)>,
    pub negative: Vec<(String, f32)>,
    pub strategy: Strategy,
}

impl Examples {
    pub fn is_empty(&self) -> bool {
        self.positive.is_empty() && self.negative.is_empty()
    }

    /// Every example id (never returned by the request).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.positive
            .iter()
            .chain(&self.negative)
            .map(|(id, _)| id.as_str())
    }

    /// Checks one example's weight: finite, above 0, at most
    /// [`MAX_EXAMPLE_WEIGHT`].
    pub fn check_weight(w: f64) -> Result<f32> {
        if w.is_finite() && w > 0.0 && w <= MAX_EXAMPLE_WEIGHT as f64 {
            Ok(w as f32)
        } else {
            Err(Error::invalid(format!(
                "example WEIGHT must be a finite number above 0 and at most {MAX_EXAMPLE_WEIGHT}, got {w}"
            )))
        }
    }

    /// How many searches retrieval runs for these examples with or
    /// without a user vector (for the cost estimate before the request
    /// runs; an upper bound, missing ids are not known yet).
    pub fn searches(&self, user_vector: bool) -> usize {
        match self.strategy {
            Strategy::BestScore if !self.positive.is_empty() => {
                self.positive.len() + user_vector as usize
            }
            _ => 1,
        }
    }
}

/// What retrieval searches with.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// One prepared vector, or none (cold start: popular items).
    Single(Option<Vec<f32>>),
    /// BEST_SCORE: one search per query; every candidate is scored by its
    /// best weighted similarity to a query and dropped when a negative is
    /// more similar.
    BestScore {
        queries: Vec<(Vec<f32>, f32)>,
        negatives: Vec<(Vec<f32>, f32)>,
    },
}

/// How a request's examples resolved, for EXPLAIN.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExampleCounts {
    pub used: usize,
    pub missing: usize,
}

/// The retrieval plan for a user vector (prepared, `None`: the user has
/// none) and the request's examples. Fails when examples were given but
/// nothing is left to search with: no user vector and no positive the
/// catalog holds.
pub fn plan(
    catalog: &Catalog,
    user_vector: Option<Vec<f32>>,
    examples: &Examples,
) -> Result<(Plan, ExampleCounts)> {
    if examples.is_empty() {
        return Ok((Plan::Single(user_vector), ExampleCounts::default()));
    }
    let mut counts = ExampleCounts::default();
    let mut resolve = |list: &[(String, f32)]| -> Vec<(Vec<f32>, f32)> {
        list.iter()
            .filter_map(|(id, w)| match catalog.slot_of(id) {
                Some(slot) => {
                    counts.used += 1;
                    Some((direction(catalog, catalog.index().vector(slot)), *w))
                }
                None => {
                    counts.missing += 1;
                    None
                }
            })
            .collect()
    };
    let mut positives = resolve(&examples.positive);
    let negatives = resolve(&examples.negative);
    if let Some(v) = user_vector {
        positives.insert(0, (direction(catalog, v), 1.0));
    }
    if positives.is_empty() {
        return Err(Error::invalid(if examples.positive.is_empty() {
            "NEGATIVE examples need a POSITIVE example or a user vector to move away from"
                .to_string()
        } else {
            format!(
                "none of the {} POSITIVE examples is in the catalog, and the user has no vector",
                examples.positive.len()
            )
        }));
    }
    let plan = match examples.strategy {
        Strategy::Average => {
            let p = weighted_mean(&positives);
            let q = match negatives.is_empty() {
                true => p,
                false => {
                    let n = weighted_mean(&negatives);
                    p.iter().zip(&n).map(|(p, n)| 2.0 * p - n).collect()
                }
            };
            catalog
                .check_vector(&q)
                .map_err(|e| e.context("the examples' average"))?;
            if q.iter().all(|&x| x == 0.0) {
                return Err(Error::invalid(
                    "the POSITIVE and NEGATIVE examples cancel out: their average is the zero vector",
                ));
            }
            Plan::Single(Some(catalog.index().prepare(&q)))
        }
        Strategy::BestScore => Plan::BestScore {
            queries: positives,
            negatives,
        },
    };
    Ok((plan, counts))
}

/// An example as it counts: a unit vector for IP and COSINE, the point
/// itself for L2.
fn direction(catalog: &Catalog, v: Vec<f32>) -> Vec<f32> {
    match catalog.params().metric {
        Metric::L2 => v,
        _ => unit(&v),
    }
}

fn weighted_mean(parts: &[(Vec<f32>, f32)]) -> Vec<f32> {
    let total: f32 = parts.iter().map(|(_, w)| w).sum();
    let mut mean = vec![0f32; parts.first().map_or(0, |(v, _)| v.len())];
    for (v, w) in parts {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += w / total * x;
        }
    }
    mean
}

/// BEST_SCORE's score of `slot`: its best weighted similarity to a query
/// (similarity as retrieval reports it, higher is better), or `None` when a
/// negative's weighted similarity is higher still.
pub fn best_score(
    catalog: &Catalog,
    slot: u32,
    queries: &[(Vec<f32>, f32)],
    negatives: &[(Vec<f32>, f32)],
) -> Option<f32> {
    let index = catalog.index();
    let best = |list: &[(Vec<f32>, f32)]| {
        list.iter()
            .map(|(q, w)| weighted(index.similarity(q, slot), *w))
            .fold(f32::NEG_INFINITY, f32::max)
    };
    let positive = best(queries);
    (positive >= best(negatives)).then_some(positive)
}

/// A similarity as an example of weight `w` counts it: always higher for a
/// higher weight, whatever the similarity's sign.
fn weighted(similarity: f32, w: f32) -> f32 {
    if similarity >= 0.0 {
        similarity * w
    } else {
        similarity / w
    }
}
