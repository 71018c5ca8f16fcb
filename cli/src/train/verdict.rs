//! Whether the ranker earns its place, decided on the validation stage:
//! for each validation user, the retrieval's top [`CANDIDATES`] (ALS
//! trained without the validation items, the chosen SESSION blend) are
//! reordered by the ranker exactly as RECOMMEND ... CANDIDATES n RANK does
//! (the module's feature assembly and DLRM over an in-process catalog), and
//! NDCG@10 of the validation item is compared with the retrieval's own
//! order. Training stops at the epoch after which validation NDCG stopped
//! improving ([`PATIENCE`]).

use anyhow::Result;
use recsys::catalog::Catalog;
use recsys::rank::dlrm::Dlrm;
use recsys::rank::schema::Schema;
use recsys::user::Session;
use serde::{Deserialize, Serialize};

use super::als::Factors;
use super::ranker::{in_process_catalog, parse_schema, user_input, CANDIDATES};
use crate::data::{Dataset, Split};
use crate::eval::{query_for, top_k_scored, K};
use recsys::pipeline::rank::RequestSignals;
use recsys::pipeline::request::UserInput;

/// Epochs without a better validation NDCG before training stops.
pub const PATIENCE: usize = 2;

/// The ranker's verdict (kept in the model directory's manifest).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Epochs the saved ranker was trained for (the best on validation).
    pub epochs: usize,
    pub validation_users: usize,
    /// NDCG@10 of the validation items: retrieval's order, the ranker's.
    pub retrieval_ndcg: f64,
    pub ranker_ndcg: f64,
    /// The ranker beats retrieval: `recsys load` installs it.
    pub suggested: bool,
}

impl Verdict {
    /// One line for people.
    pub fn describe(&self) -> String {
        let change = 100.0 * (self.ranker_ndcg / self.retrieval_ndcg.max(1e-12) - 1.0);
        format!(
            "validation NDCG@{K} {:.4} with the ranker ({} epochs) vs {:.4} retrieval alone ({change:+.1}%): {}",
            self.ranker_ndcg,
            self.epochs,
            self.retrieval_ndcg,
            if self.suggested {
                "suggested (recsys load installs it)"
            } else {
                "not suggested (recsys load leaves it out)"
            }
        )
    }
}

/// One validation user: features, retrieval candidates (slot, score) best
/// first, and where the validation item is among them.
struct User {
    /// What RECOMMEND reads about the user (features, recent items).
    input: UserInput,
    candidates: Vec<(u32, f32)>,
    target_at: usize,
}

/// The validation users' candidates, ready to be reordered.
pub struct RankerCheck {
    catalog: Catalog,
    schema: Schema,
    users: Vec<User>,
    validation_users: usize,
}

fn gain(rank: usize) -> f64 {
    if rank < K {
        1.0 / ((rank + 2) as f64).log2()
    } else {
        0.0
    }
}

impl RankerCheck {
    /// `factors` are trained on `split.train` (the validation stage).
    pub fn new(
        ds: &Dataset,
        split: &Split,
        factors: &Factors,
        session: Session,
        schema: &str,
    ) -> Result<RankerCheck> {
        let schema = parse_schema(schema)?;
        let (catalog, slots) = in_process_catalog(ds, factors, &split.train)?;
        let mut users = Vec::new();
        let mut validation_users = 0;
        for (u, target) in split.evaluated() {
            validation_users += 1;
            let q = query_for(factors, u, &split.train[u], session);
            let found = top_k_scored(factors, &q, &split.train[u], CANDIDATES);
            // A user whose item was not retrieved scores 0 either way.
            let Some(target_at) = found.iter().position(|c| c.0 == target) else {
                continue;
            };
            users.push(User {
                input: user_input(ds, u, &split.train[u]),
                candidates: found.iter().map(|&(i, s)| (slots[i as usize], s)).collect(),
                target_at,
            });
        }
        Ok(RankerCheck {
            catalog,
            schema,
            users,
            validation_users,
        })
    }

    pub fn validation_users(&self) -> usize {
        self.validation_users
    }

    /// NDCG@10 of the retrieval's own order.
    pub fn retrieval_ndcg(&self) -> f64 {
        let sum: f64 = self.users.iter().map(|u| gain(u.target_at)).sum();
        sum / self.validation_users.max(1) as f64
    }

    /// NDCG@10 after the ranker with safetensors `weights` reorders the
    /// candidates (ties keep the retrieval order, as RECOMMEND does).
    pub fn ranker_ndcg(&self, weights: &[u8]) -> Result<f64> {
        let cards: Vec<u64> = self.schema.sparse.iter().map(|f| f.cardinality).collect();
        let dlrm = Dlrm::from_safetensors(weights, self.schema.dense.len(), &cards, &[], 1, true)
            .map_err(|e| anyhow::anyhow!("ranker weights: {e}"))?;
        let mut sum = 0.0;
        for u in &self.users {
            let at = u.target_at;
            let signals = RequestSignals::new(&self.catalog, &u.input);
            let b = self.schema.assemble(
                &u.input.features,
                self.catalog.columns(),
                &signals,
                &u.candidates,
            );
            let scores = dlrm.forward(b.rows, &b.dense, &b.sparse);
            let mine = scores[at];
            let rank = scores
                .iter()
                .enumerate()
                .filter(|&(i, &s)| s > mine || (s == mine && i < at))
                .count();
            sum += gain(rank);
        }
        Ok(sum / self.validation_users.max(1) as f64)
    }
}
