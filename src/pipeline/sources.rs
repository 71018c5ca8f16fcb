//! Several candidate sources in one request: `SOURCES n name share ...`
//! with sources `user` (the user vector, steered by examples), `similar`
//! (items similar to the user's most recent ones) and `popular` (the most
//! popular items), each retrieving its share of the candidates through the
//! same admission (WHERE, EXCLUDE_SEEN, EXCLUDE); the lists are merged by
//! reciprocal rank fusion (`MERGE RRF`, the default) or by score
//! (`MERGE SCORE`). `FALLBACK popular` fills the end of a list the pipeline
//! left shorter than K. This file owns what those options mean; retrieval
//! ([`crate::pipeline::retrieve`]) runs them.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// The `k` of reciprocal rank fusion: an item at rank r (from 1) in a
/// source's list adds `1 / (RRF_K + r)` (the constant of Cormack et al.).
pub const RRF_K: f32 = 60.0;
/// Recent items (newest first) the `similar` source searches from.
pub const SIMILAR_SEEDS: usize = 5;

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    User,
    Similar,
    Popular,
    /// Added by FALLBACK after the pipeline.
    Fallback,
}

impl Source {
    /// The sources SOURCES names, with their spellings.
    pub const NAMED: [(&'static str, Source); 3] = [
        ("user", Source::User),
        ("similar", Source::Similar),
        ("popular", Source::Popular),
    ];

    pub fn parse(text: &str) -> Result<Source> {
        crate::names::one_of("source", text, &Source::NAMED)
    }

    pub fn name(self) -> &'static str {
        Source::NAMED
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("fallback", |(n, _)| n)
    }
}

/// How the sources' lists become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Merge {
    /// Reciprocal rank fusion: the sum over lists of `1 / (RRF_K + rank)`.
    #[default]
    Rrf,
    /// Each item keeps the score its list gave it (similarity, or
    /// popularity for `popular`: meaningful when the scales agree).
    Score,
}

impl Merge {
    pub const ALL: [(&'static str, Merge); 2] = [("RRF", Merge::Rrf), ("SCORE", Merge::Score)];

    pub fn parse(text: &str) -> Result<Merge> {
        crate::names::one_of("MERGE", text, &Merge::ALL)
    }
}

/// A request's SOURCES: each source once, with its share of CANDIDATES.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources {
    pub list: Vec<(Source, usize)>,
    pub merge: Merge,
}

impl Sources {
    /// Adds one source; each may be named once.
    pub fn push(&mut self, source: Source, share: usize) -> Result<()> {
        if self.list.iter().any(|(s, _)| *s == source) {
            return Err(Error::invalid(format!(
                "source '{}' is named twice in SOURCES",
                source.name()
            )));
        }
        self.list.push((source, share));
        Ok(())
    }

    /// The candidates all sources retrieve together.
    pub fn total(&self) -> usize {
        self.list.iter().map(|(_, n)| n).sum()
    }
}

/// Merges the sources' lists (each best first), returning at most `n`
/// candidates best first and, for each, the source that ranked it best
/// (the earlier source on a tie).
pub fn merge(
    lists: &[(Source, Vec<(u32, f32)>)],
    how: Merge,
    n: usize,
) -> (Vec<(u32, f32)>, HashMap<u32, Source>) {
    // slot -> (merged score, best rank, its source)
    let mut merged: HashMap<u32, (f32, usize, Source)> = HashMap::new();
    for (source, list) in lists {
        for (rank, &(slot, score)) in list.iter().enumerate() {
            let gain = match how {
                Merge::Rrf => 1.0 / (RRF_K + rank as f32 + 1.0),
                Merge::Score => score,
            };
            merged
                .entry(slot)
                .and_modify(|e| {
                    if how == Merge::Rrf {
                        e.0 += gain;
                    }
                    if rank < e.1 {
                        (e.1, e.2) = (rank, *source);
                    }
                })
                .or_insert((gain, rank, *source));
        }
    }
    let mut out: Vec<(u32, f32)> = merged.iter().map(|(&s, e)| (s, e.0)).collect();
    out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out.truncate(n);
    let found_by = out.iter().map(|&(s, _)| (s, merged[&s].2)).collect();
    (out, found_by)
}

/// What fills a list the pipeline left shorter than K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The most popular items.
    Popular,
    /// The items added (or set) most recently.
    Latest,
}

impl Fallback {
    pub fn parse(text: &str) -> Result<Fallback> {
        crate::names::one_of(
            "FALLBACK",
            text,
            &[("popular", Fallback::Popular), ("latest", Fallback::Latest)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RRF against a merge written out by hand.
    #[test]
    fn rrf_sums_reciprocal_ranks_and_keeps_the_best_ranked_source() {
        let lists = vec![
            (Source::User, vec![(1, 0.9), (2, 0.8), (3, 0.7)]),
            (Source::Popular, vec![(3, 50.0), (4, 40.0)]),
        ];
        let (out, by) = merge(&lists, Merge::Rrf, 10);
        let r = |rank: f32| 1.0 / (60.0 + rank);
        let want = [(3, r(3.0) + r(1.0)), (1, r(1.0)), (2, r(2.0)), (4, r(2.0))];
        assert_eq!(out.len(), 4);
        for ((slot, score), (ws, wscore)) in out.iter().zip(want) {
            assert_eq!(*slot, ws);
            assert!((score - wscore).abs() < 1e-7);
        }
        assert_eq!(by[&3], Source::Popular, "rank 1 there, 3 in user");
        assert_eq!(by[&1], Source::User);
        // SCORE: each item keeps its first list's score (3 keeps 0.7).
        let (by_score, _) = merge(&lists, Merge::Score, 4);
        assert_eq!(by_score, vec![(4, 40.0), (1, 0.9), (2, 0.8), (3, 0.7)]);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Source::parse("latest")
            .unwrap_err()
            .to_string()
            .contains("user, similar or popular"));
        assert!(Merge::parse("max").is_err() && Fallback::parse("none").is_err());
        let mut s = Sources::default();
        s.push(Source::User, 10).unwrap();
        assert!(s.push(Source::User, 5).is_err());
    }
}
