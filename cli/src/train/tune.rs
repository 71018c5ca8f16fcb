//! Settings chosen on the validation stage only ([`Stage::Validation`]:
//! test items are not in it): ALS's alpha, regularization and factors by
//! coordinate search from the given settings, and for each ALS setting the
//! SESSION blend (off, or the recent items and weight of a grid), all
//! scored by NDCG@10 of the validation items, within a time budget.
//!
//! A blend's scores are `unit(user)·item + weight x unit(mean of recent)·item`,
//! so each validation user costs one product per distinct recent-item count,
//! and every weight of the grid is a sum of two precomputed score vectors;
//! only the validation item's rank is counted, no list is sorted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use recsys::user::Session;
use serde::{Deserialize, Serialize};

use super::als::{self, dot, AlsParams, Factors};
use super::positives_matrix;
use crate::data::{Dataset, Protocol, Split, Stage};
use crate::eval::{query_for, Metrics, K};

/// Recent-item counts of the SESSION grid.
const SESSION_ITEMS: [usize; 7] = [1, 2, 3, 5, 8, 13, 21];
/// Weights of the SESSION grid.
const SESSION_WEIGHTS: [f32; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];
/// Values tried for each ALS setting (coordinate search, in this order).
const ALPHAS: [f32; 6] = [1.0, 2.0, 5.0, 10.0, 20.0, 40.0];
const REGULARIZATIONS: [f32; 6] = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0];
const FACTORS: [usize; 3] = [32, 64, 128];
/// Coordinate-search rounds at most (a round tries every value of every
/// setting around the best so far).
const ROUNDS: usize = 3;

/// One setting scored on validation: the ALS settings with the blend that
/// scored best with them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub factors: usize,
    pub alpha: f32,
    pub regularization: f32,
    pub session: Session,
    pub recall: f64,
    pub ndcg: f64,
    /// Training and scoring time.
    pub seconds: f64,
}

impl Trial {
    /// `base` with this trial's ALS settings.
    pub fn als(&self, base: &AlsParams) -> AlsParams {
        AlsParams {
            factors: self.factors,
            alpha: self.alpha,
            regularization: self.regularization,
            ..*base
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "factors {}, alpha {}, regularization {}, SESSION {} {}: validation recall@{K} {:.4}, NDCG@{K} {:.4}",
            self.factors,
            self.alpha,
            self.regularization,
            self.session.items,
            self.session.weight,
            self.recall,
            self.ndcg
        )
    }
}

/// What tuning tried and chose (kept in the model directory's manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    pub criterion: String,
    pub validation_users: usize,
    pub budget_s: f64,
    pub spent_s: f64,
    /// The budget ran out before the search ended.
    pub out_of_budget: bool,
    /// The given settings with the given SESSION, scored the same way.
    pub given: Trial,
    pub chosen: Trial,
    /// Every ALS setting tried, in order.
    pub trials: Vec<Trial>,
}

impl Tuning {
    /// One line for people: what was chosen, on what, against what.
    pub fn describe(&self) -> String {
        format!(
            "chosen on validation ({} users, {} ALS settings tried in {:.1} s{}): {} (the given settings: NDCG@{K} {:.4})",
            self.validation_users,
            self.trials.len(),
            self.spent_s,
            if self.out_of_budget { ", budget spent" } else { "" },
            self.chosen.describe(),
            self.given.ndcg
        )
    }
}

/// The SESSION settings scored for each ALS setting: off, then the grid.
fn session_grid() -> Vec<Session> {
    let mut grid = vec![Session {
        items: 0,
        weight: 0.0,
    }];
    for items in SESSION_ITEMS {
        for weight in SESSION_WEIGHTS {
            grid.push(Session { items, weight });
        }
    }
    grid
}

fn unit(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The NDCG@K gain of target `t` under `score` (0 outside the top K),
/// unseen items only, ties by item number.
fn gain(score: impl Fn(usize) -> f32, seen: &[bool], t: usize) -> f64 {
    let at = score(t);
    let mut rank = 0;
    for (i, _) in seen.iter().enumerate().filter(|&(i, s)| !s && i != t) {
        let x = score(i);
        if x > at || (x == at && i < t) {
            rank += 1;
            if rank == K {
                return 0.0;
            }
        }
    }
    1.0 / ((rank + 2) as f64).log2()
}

/// Recall@K and NDCG@K from per-user gains (one row per user, one column
/// per setting).
fn metrics(gains: &[Vec<f64>], settings: usize) -> Vec<Metrics> {
    let n = gains.len().max(1) as f64;
    (0..settings)
        .map(|s| Metrics {
            users: gains.len(),
            recall: gains.iter().filter(|g| g[s] > 0.0).count() as f64 / n,
            ndcg: gains.iter().map(|g| g[s]).sum::<f64>() / n,
        })
        .collect()
}

/// Recall@K and NDCG@K of the targets of `split` for the query of
/// `session` (the long-term vector, blended with the recent mean when the
/// session is on) plus `weight x unit(other[user])` (a short-term query,
/// `None`: nothing added) at each of `weights`: what RECOMMEND serves with
/// SESSION and a SEQUENCE weight.
pub fn score_blends(
    f: &Factors,
    split: &Split,
    session: Session,
    other: &[Option<Vec<f32>>],
    weights: &[f32],
) -> Vec<Metrics> {
    let n_items = f.items.len() / f.k.max(1);
    let users: Vec<(usize, u32)> = split.evaluated().collect();
    let gains: Vec<Vec<f64>> = users
        .par_iter()
        .map(|&(u, target)| {
            let mut seen = vec![false; n_items];
            split.train[u].iter().for_each(|&i| seen[i as usize] = true);
            let scores =
                |q: &[f32]| -> Vec<f32> { (0..n_items).map(|i| dot(q, f.item(i))).collect() };
            let unit_scores = |q: &[f32]| {
                let mut q = q.to_vec();
                unit(&mut q);
                scores(&q)
            };
            // The SESSION query with its user vector normalized, as
            // RECOMMEND makes it before adding more parts.
            let history = &split.train[u];
            let by_user = if session.is_on() && !history.is_empty() {
                scores(&query_for(f, u, history, session))
            } else {
                unit_scores(f.user(u))
            };
            let by_other = other[u].as_deref().map(unit_scores);
            weights
                .iter()
                .map(|&w| match &by_other {
                    Some(o) => gain(|i| by_user[i] + w * o[i], &seen, target as usize),
                    None => gain(|i| by_user[i], &seen, target as usize),
                })
                .collect()
        })
        .collect();
    metrics(&gains, weights.len())
}

/// Recall@K and NDCG@K of the targets of `split` for each of `sessions`,
/// with the candidates and ties of [`crate::eval::embeddings`].
pub fn score_sessions(f: &Factors, split: &Split, sessions: &[Session]) -> Vec<Metrics> {
    let n_items = f.items.len() / f.k.max(1);
    let mut counts: Vec<usize> = sessions
        .iter()
        .filter(|s| s.is_on())
        .map(|s| s.items)
        .collect();
    counts.sort_unstable();
    counts.dedup();
    let users: Vec<(usize, u32)> = split.evaluated().collect();
    let gains: Vec<Vec<f64>> = users
        .par_iter()
        .map(|&(u, target)| {
            let history = &split.train[u];
            let mut seen = vec![false; n_items];
            history.iter().for_each(|&i| seen[i as usize] = true);
            let scores =
                |q: &[f32]| -> Vec<f32> { (0..n_items).map(|i| dot(q, f.item(i))).collect() };
            let mut q = f.user(u).to_vec();
            unit(&mut q);
            let by_user = scores(&q);
            let by_recent: Vec<Vec<f32>> = counts
                .iter()
                .map(|&n| {
                    let mut mean = vec![0f32; f.k];
                    for &i in history.iter().rev().take(n) {
                        mean.iter_mut()
                            .zip(f.item(i as usize))
                            .for_each(|(m, x)| *m += x);
                    }
                    unit(&mut mean);
                    scores(&mean)
                })
                .collect();
            let t = target as usize;
            sessions
                .iter()
                .map(|s| {
                    let recent = (s.is_on() && !history.is_empty())
                        .then(|| &by_recent[counts.binary_search(&s.items).unwrap_or(0)]);
                    let score = |i: usize| match recent {
                        Some(r) => by_user[i] + s.weight * r[i],
                        None => by_user[i],
                    };
                    gain(score, &seen, t)
                })
                .collect()
        })
        .collect();
    metrics(&gains, sessions.len())
}

/// Chooses ALS settings and the SESSION blend on the validation stage of
/// `protocol`, starting from `base` and `session`; `None` when no user has
/// a validation item. `progress` sees each trial.
pub fn tune(
    ds: &Dataset,
    protocol: Protocol,
    base: &AlsParams,
    session: Session,
    budget: Duration,
    mut progress: impl FnMut(&Trial),
) -> Option<Tuning> {
    let started = Instant::now();
    let split = Split::new(ds, protocol, Stage::Validation);
    let validation_users = split.evaluated().count();
    if validation_users == 0 {
        return None;
    }
    let m = positives_matrix(&split);
    let grid = session_grid();
    let mut given = None;
    let mut run = |p: AlsParams| -> Trial {
        let t = Instant::now();
        let f = als::train(&m, ds.items.len(), &p, |_| {});
        let mut sessions = grid.clone();
        if given.is_none() {
            sessions.push(session);
        }
        let scored = score_sessions(&f, &split, &sessions);
        let trial = |s: Session, m: &Metrics| Trial {
            factors: p.factors,
            alpha: p.alpha,
            regularization: p.regularization,
            session: s,
            recall: m.recall,
            ndcg: m.ndcg,
            seconds: t.elapsed().as_secs_f64(),
        };
        if given.is_none() {
            given = Some(trial(session, &scored[grid.len()]));
        }
        // The best blend; ties keep the earlier (off, then fewer items).
        let (best, m) = grid
            .iter()
            .zip(&scored)
            .fold(None::<(Session, &Metrics)>, |acc, (s, m)| match acc {
                Some((_, b)) if b.ndcg >= m.ndcg => acc,
                _ => Some((*s, m)),
            })
            .expect("the grid is not empty");
        trial(best, m)
    };
    let key = |p: &AlsParams| (p.factors, p.alpha.to_bits(), p.regularization.to_bits());
    let mut tried: HashMap<(usize, u32, u32), Trial> = HashMap::new();
    let mut trials = Vec::new();
    let first = run(*base);
    progress(&first);
    tried.insert(key(base), first);
    trials.push(first);
    let mut best = first;
    let mut out_of_budget = false;
    type Axis = fn(&AlsParams, usize) -> Option<AlsParams>;
    let axes: [Axis; 3] = [
        |p, n| ALPHAS.get(n).map(|&alpha| AlsParams { alpha, ..*p }),
        |p, n| {
            REGULARIZATIONS.get(n).map(|&regularization| AlsParams {
                regularization,
                ..*p
            })
        },
        |p, n| FACTORS.get(n).map(|&factors| AlsParams { factors, ..*p }),
    ];
    'search: for _ in 0..ROUNDS {
        let before = best;
        for axis in axes {
            let center = best.als(base);
            for p in (0..).map_while(|n| axis(&center, n)) {
                if tried.contains_key(&key(&p)) {
                    continue;
                }
                if started.elapsed() >= budget {
                    out_of_budget = true;
                    break 'search;
                }
                let t = run(p);
                progress(&t);
                tried.insert(key(&p), t);
                trials.push(t);
                if t.ndcg > best.ndcg {
                    best = t;
                }
            }
        }
        if best == before {
            break;
        }
    }
    Some(Tuning {
        criterion: format!("NDCG@{K} of each user's validation item"),
        validation_users,
        budget_s: budget.as_secs_f64(),
        spent_s: started.elapsed().as_secs_f64(),
        out_of_budget,
        given: given.expect("the first trial sets it"),
        chosen: best,
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::generate::{shop, Shape};
    use crate::eval::embeddings;

    #[test]
    fn blend_scores_match_the_exact_protocol() {
        let ds = shop(Shape {
            users: 300,
            items: 400,
            per_user: 20,
            seed: 2,
        });
        let split = Split::new(&ds, Protocol::LatestPerUser, Stage::Validation);
        let p = AlsParams {
            iterations: 4,
            ..AlsParams::default()
        };
        let f = als::train(&positives_matrix(&split), ds.items.len(), &p, |_| {});
        let sessions = [
            Session {
                items: 0,
                weight: 0.0,
            },
            Session {
                items: 3,
                weight: 1.0,
            },
            Session {
                items: 8,
                weight: 0.5,
            },
        ];
        let fast = score_sessions(&f, &split, &sessions);
        for (s, m) in sessions.iter().zip(&fast) {
            let exact = embeddings(&f, &split, *s, K);
            assert_eq!(m.users, exact.users);
            // Sums of two dot products round differently from one dot
            // product of the sum: a rare near-tie may swap.
            assert!(
                (m.recall - exact.recall).abs() < 0.01,
                "{s:?} {m:?} {exact:?}"
            );
            assert!((m.ndcg - exact.ndcg).abs() < 0.01, "{s:?} {m:?} {exact:?}");
        }
    }

    #[test]
    fn tuning_reads_validation_only_and_never_loses_to_the_given_settings() {
        let ds = shop(Shape {
            users: 300,
            items: 400,
            per_user: 20,
            seed: 2,
        });
        let base = AlsParams {
            iterations: 3,
            factors: 32,
            ..AlsParams::default()
        };
        let given = Session {
            items: 3,
            weight: 1.0,
        };
        let mut seen = 0;
        let t = tune(
            &ds,
            Protocol::LatestPerUser,
            &base,
            given,
            Duration::from_secs(600),
            |_| seen += 1,
        )
        .unwrap();
        assert_eq!(seen, t.trials.len());
        assert!(!t.out_of_budget && t.trials.len() > 5, "{t:?}");
        assert!(t.chosen.ndcg >= t.given.ndcg, "{t:?}");
        assert_eq!(
            t.validation_users,
            Split::new(&ds, Protocol::LatestPerUser, Stage::Validation)
                .evaluated()
                .count()
        );
        // Replace every test item by another item the user never touched:
        // validation is unchanged, so is the choice (tuning never read a
        // test item).
        let test = Split::new(&ds, Protocol::LatestPerUser, Stage::Test);
        let mut other = ds.clone();
        for (u, t) in test.evaluated() {
            let touched: std::collections::HashSet<u32> = ds
                .interactions
                .iter()
                .filter(|i| i.user as usize == u)
                .map(|i| i.item)
                .collect();
            let fresh = (0..ds.items.len() as u32)
                .find(|i| !touched.contains(i))
                .unwrap();
            for i in other.interactions.iter_mut() {
                if i.user as usize == u && i.item == t {
                    i.item = fresh;
                }
            }
        }
        assert_ne!(
            Split::new(&other, Protocol::LatestPerUser, Stage::Test).held_out,
            test.held_out
        );
        let again = tune(
            &other,
            Protocol::LatestPerUser,
            &base,
            given,
            Duration::from_secs(600),
            |_| {},
        )
        .unwrap();
        assert_eq!(
            again.chosen,
            Trial {
                seconds: again.chosen.seconds,
                ..t.chosen
            }
        );
        // No budget: the given settings alone.
        let none = tune(
            &ds,
            Protocol::LatestPerUser,
            &base,
            given,
            Duration::ZERO,
            |_| {},
        )
        .unwrap();
        assert!(none.out_of_budget && none.trials.len() == 1);
    }
}
