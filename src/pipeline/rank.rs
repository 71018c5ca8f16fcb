//! Stage 3, ranking: the request's RANK model scores every candidate in one
//! batched call (user features broadcast to every row), else the retrieval
//! score stands; candidates leave sorted best first.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::pipeline::explain::Explain;
use crate::pipeline::request::{Request, UserInput};
use crate::pipeline::user_vector::{recent_mean, unit};
use crate::rank::dlrm::dot;
use crate::rank::schema::{CandidateSignals, SESSION_SIGNAL_ITEMS};
use crate::rank::{Model, Role};

/// A request's [`CandidateSignals`]: the catalog's popularity at the
/// request's time, the user's recent items (their mean computed on first
/// use).
pub struct RequestSignals<'a> {
    catalog: &'a Catalog,
    user: &'a UserInput,
    session: std::cell::OnceCell<Option<Vec<f32>>>,
}

impl<'a> RequestSignals<'a> {
    pub fn new(catalog: &'a Catalog, user: &'a UserInput) -> RequestSignals<'a> {
        RequestSignals {
            catalog,
            user,
            session: std::cell::OnceCell::new(),
        }
    }
}

impl CandidateSignals for RequestSignals<'_> {
    fn popularity(&self, slot: u32) -> f32 {
        self.catalog.popularity_at(slot, self.user.now_ms) as f32
    }

    fn session_similarity(&self, slot: u32) -> f32 {
        let session = self.session.get_or_init(|| {
            recent_mean(self.catalog, self.user, SESSION_SIGNAL_ITEMS).map(|(mean, _)| unit(&mean))
        });
        match session {
            Some(s) => dot(s, &unit(&self.catalog.index().vector(slot))),
            None => 0.0,
        }
    }

    fn recent_items(&self) -> usize {
        self.user.recent.len()
    }
}

/// The model called `name`, which must have ROLE RANK.
pub fn rank_model<'a>(catalog: &'a Catalog, name: &str) -> Result<&'a Arc<Model>> {
    let model = catalog.models().get(name).ok_or_else(|| {
        Error::invalid(format!(
            "RANK: the catalog has no model named '{name}' (add it with RECSYS.MODEL.SET)"
        ))
    })?;
    if model.spec.role != Role::Rank {
        return Err(Error::invalid(format!(
            "RANK: model '{name}' has ROLE {}, not RANK",
            model.spec.role.name()
        )));
    }
    Ok(model)
}

/// Scores `candidates` with the request's model (if any) and sorts them
/// best first (ties by slot, so equal scores keep a stable order).
pub fn rank(
    catalog: &Catalog,
    user: &UserInput,
    req: &Request,
    mut candidates: Vec<(u32, f32)>,
    ex: &mut Explain,
) -> Result<Vec<(u32, f32)>> {
    if let Some(name) = &req.rank {
        let model = rank_model(catalog, name)?;
        if !candidates.is_empty() {
            let t = std::time::Instant::now();
            let signals = RequestSignals::new(catalog, user);
            let batch = model.features(&user.features, catalog.columns(), &signals, &candidates);
            ex.rank_features_us = t.elapsed().as_micros() as u64;
            let scores = model.score_batch(&batch).map_err(Error::invalid)?;
            candidates.iter_mut().zip(scores).for_each(|(c, s)| c.1 = s);
        }
        ex.rank_model = Some(name.clone());
        ex.ranked = candidates.len();
    }
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(candidates)
}
