//! Stage 2, retrieval with admission: the HNSW top-CANDIDATES for the user
//! vector (or the most popular items at cold start), with EXCLUDE_SEEN and
//! WHERE applied *inside* the graph walk, so a selective filter still fills
//! the list when enough matching items exist. A filter so selective that the
//! walk would visit a third of the graph switches to a scan of the matching
//! items.
//!
//! Scores leave this stage "higher is better": an L2 distance becomes its
//! negative, so ranking, sampling and plugins treat all metrics alike.

use std::cell::Cell;
use std::collections::HashSet;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::index::Metric;
use crate::pipeline::explain::Explain;
use crate::pipeline::filter::{Filter, FilterEval, EVAL_BUDGET};
use crate::pipeline::request::{Request, UserInput};
use crate::user::SeenSet;

/// Decides which items may be candidates (the seen items and WHERE),
/// counting what it evaluated and rejected for EXPLAIN.
struct Admission<'a> {
    /// With EXCLUDE_SEEN: the slots of the user's `recent` ids, and their
    /// full `seen` set (checked by hashing a candidate's id).
    exclude: Option<(HashSet<u32>, &'a SeenSet)>,
    catalog: &'a Catalog,
    filter: Option<FilterEval<'a>>,
    evaluated: Cell<usize>,
    rejected: Cell<usize>,
}

impl<'a> Admission<'a> {
    fn new(
        catalog: &'a Catalog,
        user: &'a UserInput,
        req: &Request,
        filter: Option<&'a Filter>,
    ) -> Self {
        let exclude = req.exclude_seen.then(|| {
            let recent = user
                .recent
                .iter()
                .filter_map(|id| catalog.slot_of(id))
                .collect();
            (recent, &user.seen)
        });
        Admission {
            exclude,
            catalog,
            filter: filter.map(|f| FilterEval::new(f, catalog.columns())),
            evaluated: Cell::new(0),
            rejected: Cell::new(0),
        }
    }

    /// Whether anything is filtered at all.
    fn is_active(&self, req: &Request) -> bool {
        self.filter.is_some() || req.exclude_seen
    }

    /// Whether WHERE ran out of its evaluation budget.
    fn exhausted(&self) -> bool {
        self.filter.as_ref().is_some_and(FilterEval::exhausted)
    }

    fn is_seen(&self, slot: u32) -> bool {
        self.exclude.as_ref().is_some_and(|(recent, seen)| {
            recent.contains(&slot)
                || (!seen.is_empty()
                    && self.catalog.id_of(slot).is_some_and(|id| seen.contains(id)))
        })
    }

    fn accepts(&self, slot: u32) -> bool {
        let ok = !self.is_seen(slot)
            && match &self.filter {
                Some(f) => {
                    self.evaluated.set(self.evaluated.get() + 1);
                    f.matches(slot)
                }
                None => true,
            };
        if !ok {
            self.rejected.set(self.rejected.get() + 1);
        }
        ok
    }
}

/// The admitted candidates (slot, score), at most `req.candidates`.
pub fn retrieve(
    catalog: &Catalog,
    user: &UserInput,
    req: &Request,
    vector: Option<&[f32]>,
    ex: &mut Explain,
) -> Result<Vec<(u32, f32)>> {
    let filter = req.compiled_filter()?;
    let admission = Admission::new(catalog, user, req, filter.as_deref());
    let filtered = admission.is_active(req);
    let accept = |slot: u32| admission.accepts(slot);
    let mut scanned = false;
    let mut scored: Vec<(u32, f32)> = match vector {
        Some(v) => {
            let index = catalog.index();
            let ef = req
                .ef
                .unwrap_or(catalog.params().ef_search)
                .max(req.candidates);
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
    if vector.is_some() && catalog.params().metric == Metric::L2 {
        scored.iter_mut().for_each(|(_, s)| *s = -*s);
    }
    ex.filter_evaluated = admission.evaluated.get();
    ex.filter_rejected = admission.rejected.get();
    ex.filter_mode = match (filtered, vector.is_some(), scanned) {
        (false, _, _) => "none",
        (true, true, false) => "in-graph",
        (true, true, true) => "in-graph, then scan (selective filter)",
        (true, false, _) => "scan",
    };
    ex.retrieved = scored.len();
    if admission.exhausted() {
        return Err(Error::invalid(format!(
            "WHERE expression used up its evaluation budget ({} ms per request): simplify it",
            EVAL_BUDGET.as_millis()
        )));
    }
    Ok(scored)
}
