//! The quality protocol's split of a dataset's positives into training,
//! validation and test, by time: per user (each user's latest positive is
//! the test item, the one before it the validation item), or at two global
//! points in time (each user's first positive after a cut is the target).
//! A [`Split`] is one [`Stage`] of it: what a model may train on and the
//! one item per user it is scored against.
//!
//! Positives are interactions weighing at least the dataset's
//! `positive_min`, each item once at its latest time, in time order; ties
//! of time are broken by the input line (the later line is later). Test
//! items never reach the validation stage, so settings chosen there never
//! saw them.

use serde::{Deserialize, Serialize};

use super::Dataset;

/// How positives are held out.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum Protocol {
    /// Per user: the latest positive is the test item, the one before it
    /// the validation item (leave-last-out).
    #[default]
    LatestPerUser,
    /// Global time cuts: the latest `fraction` of all positives (by time)
    /// is the test period, the `fraction` before it the validation period;
    /// a user's target is their first positive in the period, and they are
    /// scored only when they have positives before it.
    GlobalTime { fraction: f64 },
}

impl Protocol {
    /// One phrase for reports.
    pub fn describe(&self) -> String {
        match self {
            Protocol::LatestPerUser => {
                "per user by time: latest positive = test, the one before = validation".into()
            }
            Protocol::GlobalTime { fraction } => format!(
                "global time cuts: the latest {:.0}% of positives = test period, the {:.0}% before = validation period; target = a user's first positive in the period",
                100.0 * fraction,
                100.0 * fraction
            ),
        }
    }
}

/// Which part of the protocol a split is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Every positive trains; nothing is scored (production).
    Full,
    /// Trains on what precedes the validation items, scored against them;
    /// test items are absent.
    Validation,
    /// Trains on what precedes the test items (validation items included),
    /// scored against them.
    Test,
}

/// One stage of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Training positives per user, oldest first.
    pub train: Vec<Vec<u32>>,
    /// The target per user (`None`: not scored).
    pub held_out: Vec<Option<u32>>,
    /// Scored users whose target has the same time as their latest training
    /// positive (the tie rule decided which of them is the target).
    pub tied: Vec<usize>,
}

/// A user's positives: (time, input line, item), each item once at its
/// latest time, in time order.
fn positives_per_user(ds: &Dataset) -> Vec<Vec<(i64, usize, u32)>> {
    let mut per_user: Vec<Vec<(i64, usize, u32)>> = vec![Vec::new(); ds.users.len()];
    for (line, i) in ds.interactions.iter().enumerate() {
        if i.weight >= ds.positive_min {
            per_user[i.user as usize].push((i.ts, line, i.item));
        }
    }
    for events in &mut per_user {
        events.sort_unstable();
        let mut latest = std::collections::HashMap::new();
        for (at, &(_, _, item)) in events.iter().enumerate() {
            latest.insert(item, at);
        }
        let mut at = 0;
        events.retain(|&(_, _, item)| {
            at += 1;
            latest[&item] == at - 1
        });
    }
    per_user
}

/// The time at which the latest `fraction` of `times` begins.
fn cut(times: &[i64], fraction: f64) -> i64 {
    if times.is_empty() {
        return i64::MAX;
    }
    let at = ((times.len() as f64) * (1.0 - fraction.clamp(0.0, 1.0))) as usize;
    times[at.min(times.len() - 1)]
}

impl Split {
    pub fn new(ds: &Dataset, protocol: Protocol, stage: Stage) -> Split {
        let per_user = positives_per_user(ds);
        // (events kept for training, index of the target among the events).
        let plan: Vec<(usize, Option<usize>)> = match protocol {
            Protocol::LatestPerUser => per_user
                .iter()
                .map(|e| {
                    let n = e.len();
                    match stage {
                        Stage::Full => (n, None),
                        Stage::Test if n >= 2 => (n - 1, Some(n - 1)),
                        Stage::Validation if n >= 3 => (n - 2, Some(n - 2)),
                        // Too few positives to score: the test item (the
                        // latest) still never trains at the validation stage.
                        Stage::Validation => (n.saturating_sub(1), None),
                        Stage::Test => (n, None),
                    }
                })
                .collect(),
            Protocol::GlobalTime { fraction } => {
                let mut times: Vec<i64> = per_user.iter().flatten().map(|e| e.0).collect();
                times.sort_unstable();
                let test_from = cut(&times, fraction);
                let validation_from = cut(&times, 2.0 * fraction).min(test_from);
                let (from, until) = match stage {
                    Stage::Full => (i64::MAX, i64::MAX),
                    Stage::Test => (test_from, i64::MAX),
                    Stage::Validation => (validation_from, test_from),
                };
                per_user
                    .iter()
                    .map(|e| {
                        let before = e.iter().take_while(|x| x.0 < from).count();
                        let target = e
                            .get(before)
                            .filter(|x| x.0 < until && before > 0)
                            .map(|_| before);
                        (before, target)
                    })
                    .collect()
            }
        };
        let mut split = Split {
            train: Vec::with_capacity(per_user.len()),
            held_out: Vec::with_capacity(per_user.len()),
            tied: Vec::new(),
        };
        for (u, (events, (keep, target))) in per_user.iter().zip(plan).enumerate() {
            split
                .train
                .push(events[..keep].iter().map(|e| e.2).collect());
            split.held_out.push(target.map(|t| events[t].2));
            if let Some(t) = target {
                if keep > 0 && events[keep - 1].0 == events[t].0 {
                    split.tied.push(u);
                }
            }
        }
        split
    }

    /// Users with a target.
    pub fn evaluated(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.held_out
            .iter()
            .enumerate()
            .filter_map(|(u, h)| h.map(|h| (u, h)))
    }

    /// The same split without the [`Split::tied`] users' targets.
    pub fn without_ties(&self) -> Split {
        let mut s = self.clone();
        for &u in &self.tied {
            s.held_out[u] = None;
        }
        s.tied.clear();
        s
    }

    pub fn train_pairs(&self) -> usize {
        self.train.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tests::tiny;
    use crate::data::{Dataset, Interaction};

    #[test]
    fn latest_per_user_holds_out_test_then_validation() {
        let s = Split::new(&tiny(), Protocol::LatestPerUser, Stage::Test);
        assert_eq!(s.train, vec![vec![2], vec![3]]);
        assert_eq!(s.held_out, vec![Some(0), None]);
        let all = Split::new(&tiny(), Protocol::LatestPerUser, Stage::Full);
        assert_eq!(all.train, vec![vec![2, 0], vec![3]]);
        assert_eq!(all.evaluated().count(), 0);
        // Two positives: too few to validate, and the test item stays out.
        let v = Split::new(&tiny(), Protocol::LatestPerUser, Stage::Validation);
        assert_eq!(v.train, vec![vec![2], vec![]]);
        assert_eq!(v.evaluated().count(), 0);
    }

    /// User 0 rates items 0..6 at times 0, 10, .., 50 (item 4 and 5 at the
    /// same second); user 1 rates items 6, 7 at 5 and 55.
    fn timeline() -> Dataset {
        let mut ds = tiny();
        ds.items = (0..8).map(|_| ds.items[0].clone()).collect();
        let at = |user, item, ts| Interaction {
            user,
            item,
            weight: 5.0,
            ts,
        };
        ds.interactions = vec![
            at(0, 0, 0),
            at(0, 1, 10),
            at(0, 2, 20),
            at(0, 3, 30),
            at(0, 4, 40),
            at(0, 5, 40),
            at(1, 6, 5),
            at(1, 7, 55),
        ];
        ds
    }

    #[test]
    fn no_test_item_reaches_validation_and_ties_are_counted() {
        let ds = timeline();
        let test = Split::new(&ds, Protocol::LatestPerUser, Stage::Test);
        let val = Split::new(&ds, Protocol::LatestPerUser, Stage::Validation);
        // Same second: the later input line is the later positive.
        assert_eq!(test.held_out, vec![Some(5), Some(7)]);
        assert_eq!(test.train[0], vec![0, 1, 2, 3, 4]);
        assert_eq!(test.tied, vec![0]);
        assert_eq!(test.without_ties().evaluated().count(), 1);
        assert_eq!(val.held_out, vec![Some(4), None]);
        assert_eq!(val.train, vec![vec![0, 1, 2, 3], vec![6]]);
        for (u, t) in test.evaluated() {
            assert!(!val.train[u].contains(&t) && val.held_out[u] != Some(t));
        }
    }

    #[test]
    fn global_time_cuts_score_the_first_positive_after_each_cut() {
        let ds = timeline();
        // 8 positives (times 0 5 10 20 30 40 40 55), a quarter per period:
        // test from time 40, validation from time 30.
        let p = Protocol::GlobalTime { fraction: 0.25 };
        let test = Split::new(&ds, p, Stage::Test);
        assert_eq!(test.train, vec![vec![0, 1, 2, 3], vec![6]]);
        assert_eq!(test.held_out, vec![Some(4), Some(7)]);
        let val = Split::new(&ds, p, Stage::Validation);
        assert_eq!(val.train, vec![vec![0, 1, 2], vec![6]]);
        assert_eq!(val.held_out, vec![Some(3), None]);
        let full = Split::new(&ds, p, Stage::Full);
        assert_eq!(full.train_pairs(), 8);
    }
}
