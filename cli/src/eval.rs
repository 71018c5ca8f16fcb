//! The quality protocol's scores: for each user with a target in the split
//! ([`crate::data::Split`]: validation or test), every item not among the
//! user's training positives is a candidate; recall@K (= hit rate, one
//! target item) and NDCG@K. Scored in-process here (popularity, ALS, ALS with the
//! session blend); `recsys eval` scores the same users through Redis.

use serde::Serialize;

use crate::data::Split;
use recsys::user::Session;

use crate::train::als::{dot, Factors};
use recsys::rank::sequence::SequenceTower;

/// The list length every figure is measured at.
pub const K: usize = 10;

/// Recall@K and NDCG@K over the evaluated users.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    pub users: usize,
    pub recall: f64,
    pub ndcg: f64,
}

/// Accumulates hits.
#[derive(Debug, Default)]
pub struct Scorer {
    users: usize,
    hits: f64,
    gain: f64,
}

impl Scorer {
    /// Adds one user's list (best first) against the held-out item.
    pub fn add(&mut self, list: &[u32], held_out: u32) {
        self.users += 1;
        if let Some(rank) = list.iter().position(|&i| i == held_out) {
            self.hits += 1.0;
            self.gain += 1.0 / ((rank + 2) as f64).log2();
        }
    }

    pub fn metrics(&self) -> Metrics {
        let n = self.users.max(1) as f64;
        Metrics {
            users: self.users,
            recall: self.hits / n,
            ndcg: self.gain / n,
        }
    }
}

fn unit(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The query vector RECOMMEND computes for user `u` whose interactions are
/// `history` (oldest first): the user vector, or with a session blend on,
/// the normalized user vector plus `weight` x the normalized mean of the
/// last `items` of the history.
pub fn query_for(f: &Factors, u: usize, history: &[u32], session: Session) -> Vec<f32> {
    query_with(f, u, history, session, None)
}

/// The query vector RECOMMEND computes with a SESSION blend and the
/// catalog's sequence model at a weight (the module's
/// `pipeline::user_vector`): `unit(user) + s x unit(mean of the last
/// items) + t x unit(tower(history))`, or the user vector alone when
/// neither part applies.
pub fn query_with(
    f: &Factors,
    u: usize,
    history: &[u32],
    session: Session,
    sequence: Option<(&SequenceTower, f32)>,
) -> Vec<f32> {
    let mut parts: Vec<(f32, Vec<f32>)> = Vec::new();
    if session.is_on() && !history.is_empty() {
        let mut mean = vec![0f32; f.k];
        for &i in history.iter().rev().take(session.items) {
            for (m, x) in mean.iter_mut().zip(f.item(i as usize)) {
                *m += x;
            }
        }
        parts.push((session.weight, mean));
    }
    if let Some((tower, weight)) = sequence.filter(|(_, w)| *w > 0.0) {
        if let Some(v) = crate::train::sequence::query(tower, f, history) {
            parts.push((weight, v));
        }
    }
    let mut q = f.user(u).to_vec();
    if parts.is_empty() {
        return q;
    }
    unit(&mut q);
    for (weight, mut part) in parts {
        unit(&mut part);
        q.iter_mut().zip(&part).for_each(|(x, m)| *x += weight * m);
    }
    q
}

/// The top `k` items (item, score) by dot product with `q`, skipping
/// `seen`; ties by item number.
pub fn top_k_scored(f: &Factors, q: &[f32], seen: &[u32], k: usize) -> Vec<(u32, f32)> {
    let n = f.items.len() / f.k;
    let mut excluded = vec![false; n];
    for &i in seen {
        excluded[i as usize] = true;
    }
    let mut scored: Vec<(u32, f32)> = (0..n)
        .filter(|&i| !excluded[i])
        .map(|i| (i as u32, dot(q, f.item(i))))
        .collect();
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    let best_first = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    scored.select_nth_unstable_by(k - 1, best_first);
    scored.truncate(k);
    scored.sort_unstable_by(best_first);
    scored
}

/// Items by number of training positives, most first.
pub fn popularity_order(split: &Split, n_items: usize) -> Vec<u32> {
    let mut counts = vec![0usize; n_items];
    for items in &split.train {
        for &i in items {
            counts[i as usize] += 1;
        }
    }
    let mut order: Vec<u32> = (0..n_items as u32).collect();
    order.sort_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
    order
}

/// The popularity baseline at `k`.
pub fn popularity(split: &Split, n_items: usize, k: usize) -> Metrics {
    let order = popularity_order(split, n_items);
    let mut s = Scorer::default();
    for (u, held) in split.evaluated() {
        let seen: std::collections::HashSet<u32> = split.train[u].iter().copied().collect();
        let list: Vec<u32> = order
            .iter()
            .filter(|i| !seen.contains(i))
            .take(k)
            .copied()
            .collect();
        s.add(&list, held);
    }
    s.metrics()
}

/// ALS (with the session blend, or `Session` of 0 items for none) scored
/// exactly, in-process, at `k`.
pub fn embeddings(f: &Factors, split: &Split, session: Session, k: usize) -> Metrics {
    with_queries(f, split, k, |u, history| query_for(f, u, history, session))
}

/// Scored exactly, in-process, at `k`, with `query(user, history)` as each
/// user's query vector.
pub fn with_queries(
    f: &Factors,
    split: &Split,
    k: usize,
    query: impl Fn(usize, &[u32]) -> Vec<f32>,
) -> Metrics {
    let mut s = Scorer::default();
    for (u, held) in split.evaluated() {
        let q = query(u, &split.train[u]);
        let list: Vec<u32> = top_k_scored(f, &q, &split.train[u], k)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        s.add(&list, held);
    }
    s.metrics()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scorer_counts_rank_discounted_hits() {
        let mut s = Scorer::default();
        s.add(&[5, 7, 9], 5); // rank 0: gain 1
        s.add(&[5, 7, 9], 9); // rank 2: gain 1/log2(4) = 0.5
        s.add(&[5, 7, 9], 1); // miss
        s.add(&[], 1);
        let m = s.metrics();
        assert_eq!(m.users, 4);
        assert!((m.recall - 0.5).abs() < 1e-12);
        assert!((m.ndcg - 1.5 / 4.0).abs() < 1e-12);
    }
}
