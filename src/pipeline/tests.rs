//! Unit tests of the whole pipeline on generated catalogs.

mod behaviour {
    use std::collections::HashMap;

    use crate::catalog::Catalog;
    use crate::features::attrs::Attrs;
    use crate::index::IndexParams;
    use crate::pipeline::explain::VectorSource;
    use crate::pipeline::filter::Filter;
    use crate::pipeline::recommend;
    use crate::pipeline::request::{Ordering, Request, Session, UserInput};
    use crate::synth::clustered;

    fn catalog(n: usize) -> Catalog {
        let mut c = Catalog::new(IndexParams::new(16)).unwrap();
        for (i, v) in clustered(n, 16, 10, 0.4, 1).iter().enumerate() {
            let attrs = format!(r#"{{"genre":"g{}","rare":{}}}"#, i % 5, i % 100 == 0);
            c.set(&format!("i{i}"), v, Some(Attrs::parse(&attrs).unwrap()))
                .unwrap();
        }
        c
    }

    fn user(v: Vec<f32>) -> UserInput {
        UserInput {
            vector_arg: Some(v),
            ..UserInput::default()
        }
    }

    /// A filter passing 1% of 3,000 items still fills K: typed, its pass
    /// rate is estimated up front and the matching items scanned; the same
    /// filter through the interpreter finds out during the walk.
    #[test]
    fn selective_filter_still_fills_k() {
        let c = catalog(3000);
        let u = user(c.index().vector(5));
        for (expr, mode) in [
            ("rare", "scan (selective filter, estimated)"),
            ("rare || false", "in-graph, then scan (selective filter)"),
        ] {
            let mut req = Request::new(20);
            // 20 candidates: a graph walk at this size (200 would scan it).
            req.candidates = 20;
            req.filter = Some(Filter::compile(expr).unwrap().into());
            let r = recommend(&c, &u, &req, None).unwrap();
            assert_eq!(r.items.len(), 20, "30 rare items exist");
            assert!(r
                .items
                .iter()
                .all(|(id, _)| id[1..].parse::<usize>().unwrap() % 100 == 0));
            assert_eq!(r.explain.filter_mode, mode, "{expr}");
        }
    }

    /// The pass-rate sample does not alias with a periodic layout: every
    /// 5th item has genre g3 (20%), and 512 slots sampled at an even step
    /// (30 on 15,360 items) would all have been g0, making `genre == "g3"`
    /// look like it matched nothing and sending it to a scan; at this size
    /// and EF 20 a 20% filter walks the graph.
    #[test]
    fn selectivity_estimate_sees_periodic_attributes() {
        let c = catalog(15_360);
        let u = user(c.index().vector(7));
        for (expr, mode) in [
            (r#"genre == "g3""#, "in-graph"),
            (r#"genre == "g0""#, "in-graph"),
            (r#"genre == "none""#, "scan (selective filter, estimated)"),
        ] {
            let mut req = Request::new(20);
            req.candidates = 20;
            req.ef = Some(20);
            req.filter = Some(Filter::compile(expr).unwrap().into());
            let r = recommend(&c, &u, &req, None).unwrap();
            assert_eq!(r.explain.filter_mode, mode, "{expr}");
        }
    }

    #[test]
    fn exclude_seen_softmax_and_diversity() {
        let c = catalog(2000);
        let v = c.index().vector(1);
        let mut u = user(v);
        let plain = recommend(&c, &u, &Request::new(10), None).unwrap();
        u.recent = plain
            .items
            .iter()
            .take(5)
            .map(|(id, _)| id.clone())
            .collect();
        let mut req = Request::new(10);
        req.exclude_seen = true;
        let r = recommend(&c, &u, &req, None).unwrap();
        assert!(r.items.iter().all(|(id, _)| !u.recent.contains(id)));

        let mut req = Request::new(10);
        req.ordering = Ordering::Softmax {
            temperature: 0.05,
            seed: 7,
        };
        let a = recommend(&c, &u, &req, None).unwrap().items;
        let b = recommend(&c, &u, &req, None).unwrap().items;
        assert_eq!(a, b, "same seed, same answer");
        req.ordering = Ordering::Softmax {
            temperature: 0.05,
            seed: 8,
        };
        assert_ne!(a, recommend(&c, &u, &req, None).unwrap().items);

        let mut req = Request::new(10);
        req.diversity = Some(("genre".into(), 2));
        let r = recommend(&c, &u, &req, None).unwrap();
        let mut counts = HashMap::new();
        for (id, _) in &r.items {
            let slot = c.slot_of(id).unwrap();
            *counts
                .entry(c.columns().column("genre").unwrap().id(slot))
                .or_insert(0) += 1;
        }
        assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
        assert_eq!(r.items.len(), 10);
    }

    /// A request whose later stages use only the first K (no RANK,
    /// plugins, SOFTMAX or DIVERSITY) retrieves K, and answers exactly what
    /// retrieving all CANDIDATES answers: on a scanned catalog and on a
    /// walked one, with and without admission.
    #[test]
    fn plain_requests_retrieve_k_with_the_same_answer() {
        for (n, mode) in [(1000, "scan (small catalog)"), (6000, "in-graph")] {
            let c = catalog(n);
            for probe in [3u32, 77, 512] {
                let mut u = user(c.index().vector(probe));
                u.recent = (0..40)
                    .map(|i| format!("i{}", probe as usize + i))
                    .collect();
                for exclude_seen in [false, true] {
                    for expr in [None, Some(r#"genre != "g2""#)] {
                        let mut req = Request::new(10);
                        req.exclude_seen = exclude_seen;
                        req.filter = expr.map(|e| Filter::compile(e).unwrap().into());
                        let plain = recommend(&c, &u, &req, None).unwrap();
                        // A cap of K per genre drops nothing, but needs
                        // every candidate.
                        req.diversity = Some(("genre".into(), 10));
                        let all = recommend(&c, &u, &req, None).unwrap();
                        let case = format!("{n} items, probe {probe}, {exclude_seen} {expr:?}");
                        assert_eq!(plain.items, all.items, "{case}");
                        assert_eq!(plain.items.len(), 10, "{case}");
                        assert_eq!(plain.explain.retrieved, 10, "{case}");
                        assert_eq!(all.explain.retrieved, 200, "{case}");
                        if exclude_seen || expr.is_some() {
                            assert_eq!(plain.explain.filter_mode, mode, "{case}");
                        }
                    }
                }
            }
        }
    }

    /// SESSION n weight: the long-term vector plus the weighted mean of the
    /// n most recent items, both normalized.
    #[test]
    fn session_blends_long_term_taste_with_recent_items() {
        let c = catalog(2000);
        let far = (0..2000)
            .map(|i| format!("i{i}"))
            .min_by(|a, b| {
                let d = |id: &String| {
                    let v = c.index().vector(c.slot_of(id).unwrap());
                    v.iter()
                        .zip(c.index().vector(0))
                        .map(|(x, y)| x * y)
                        .sum::<f32>()
                };
                // Unrelated (orthogonal), not opposite: a blend of opposites
                // points nowhere.
                d(a).abs().total_cmp(&d(b).abs())
            })
            .unwrap();
        let mut u = UserInput {
            embedding: Some(c.index().vector(0)),
            // Newest first: `far` is the session, the rest is older.
            recent: vec![far.clone(), "i1".into(), "i2".into()],
            ..UserInput::default()
        };
        let plain = recommend(&c, &u, &Request::new(10), None).unwrap();
        assert_eq!(plain.explain.session_items, 0);
        let mut req = Request::new(10);
        req.session = Some(Session {
            items: 1,
            weight: 3.0,
        });
        let blended = recommend(&c, &u, &req, None).unwrap();
        assert_eq!(blended.explain.source, Some(VectorSource::Embedding));
        assert_eq!(blended.explain.session_items, 1);
        assert_ne!(plain.items, blended.items, "the session moves the answer");
        assert!(blended.items.iter().any(|(id, _)| *id == far));
        assert!(!plain.items.iter().any(|(id, _)| *id == far));
        // Weight 0 is the long-term vector alone.
        req.session = Some(Session {
            items: 1,
            weight: 0.0,
        });
        let ids = |r: &crate::pipeline::Recommendation| -> Vec<String> {
            r.items.iter().map(|(id, _)| id.clone()).collect()
        };
        assert_eq!(ids(&recommend(&c, &u, &req, None).unwrap()), ids(&plain));
        // No long-term vector: the mean of the n most recent items alone.
        u.embedding = None;
        req.session = Some(Session {
            items: 1,
            weight: 1.0,
        });
        let r = recommend(&c, &u, &req, None).unwrap();
        assert_eq!(r.explain.source, Some(VectorSource::Session(1)));
        assert_eq!(r.items[0].0, far);
    }

    #[test]
    fn session_and_cold_start() {
        let c = catalog(500);
        let u = UserInput {
            recent: vec!["i3".into(), "i4".into(), "nope".into()],
            ..UserInput::default()
        };
        let r = recommend(&c, &u, &Request::new(5), None).unwrap();
        assert_eq!(r.explain.source, Some(VectorSource::Session(2)));
        let cold = UserInput {
            now_ms: 1_000,
            ..UserInput::default()
        };
        for (i, w) in [(7u32, 5.0), (9, 1.0), (11, 3.0)] {
            c.record_popularity(i, w, 1_000);
        }
        let r = recommend(&c, &cold, &Request::new(3), None).unwrap();
        assert_eq!(r.explain.source, Some(VectorSource::Popular));
        let ids: Vec<&str> = r.items.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["i7", "i11", "i9"]);
    }
}

/// POSITIVE / NEGATIVE examples against exact computations over the
/// catalog (600 items: retrieval is an exact scan, so answers must match).
mod examples {
    use crate::catalog::Catalog;
    use crate::index::{IndexParams, Metric};
    use crate::pipeline::examples::{Examples, Strategy};
    use crate::pipeline::recommend;
    use crate::pipeline::request::{Request, UserInput};
    use crate::synth::clustered;

    fn catalog(metric: Metric) -> Catalog {
        let mut params = IndexParams::new(16);
        params.metric = metric;
        let mut c = Catalog::new(params).unwrap();
        for (i, v) in clustered(600, 16, 6, 0.5, 3).iter().enumerate() {
            c.set(&format!("i{i}"), v, None).unwrap();
        }
        c
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// The `k` best items by `score` (None: dropped), best first, leaving
    /// out the ids in `skip`.
    fn exact(
        c: &Catalog,
        k: usize,
        skip: &[&str],
        score: impl Fn(&[f32]) -> Option<f32>,
    ) -> Vec<String> {
        let mut all: Vec<(String, f32)> = (0..600)
            .map(|i| format!("i{i}"))
            .filter(|id| !skip.contains(&id.as_str()))
            .filter_map(|id| {
                let v = c.get(&id).unwrap().0;
                score(&v).map(|s| (id, s))
            })
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.into_iter().take(k).map(|(id, _)| id).collect()
    }

    fn request(k: usize, strategy: Strategy, pos: &[(&str, f32)], neg: &[(&str, f32)]) -> Request {
        let mut req = Request::new(k);
        let list = |l: &[(&str, f32)]| l.iter().map(|(id, w)| (id.to_string(), *w)).collect();
        req.examples = Examples {
            positive: list(pos),
            negative: list(neg),
            strategy,
        };
        req.validate().unwrap()
    }

    fn ids(r: &crate::pipeline::Recommendation) -> Vec<String> {
        r.items.iter().map(|(id, _)| id.clone()).collect()
    }

    /// AVERAGE without a user: one search with 2P - N over unit vectors,
    /// weights applied; the examples themselves never come back.
    #[test]
    fn average_equals_the_exact_search_for_two_p_minus_n() {
        let c = catalog(Metric::Ip);
        let v = |id: &str| unit(&c.get(id).unwrap().0);
        let (pos, neg) = ([("i1", 2.0), ("i7", 1.0)], [("i3", 1.0)]);
        let req = request(10, Strategy::Average, &pos, &neg);
        let r = recommend(&c, &UserInput::default(), &req, None).unwrap();
        let p: Vec<f32> = (0..16)
            .map(|d| (2.0 * v("i1")[d] + v("i7")[d]) / 3.0)
            .collect();
        let q: Vec<f32> = (0..16).map(|d| 2.0 * p[d] - v("i3")[d]).collect();
        let want = exact(&c, 10, &["i1", "i7", "i3"], |x| Some(dot(&q, x)));
        assert_eq!(ids(&r), want);
        assert_eq!(r.explain.examples_used, 3);
    }

    /// BEST_SCORE is a multi-query search: each candidate scored by its best
    /// weighted similarity to a positive (the user vector among them),
    /// candidates nearer a negative dropped. Two positives in different
    /// clusters: results come from both, unlike AVERAGE's.
    #[test]
    fn best_score_equals_the_exact_best_similarity() {
        for metric in [Metric::Ip, Metric::L2] {
            let c = catalog(metric);
            let (a, b) = ("i0", "i1");
            let sim = |q: &[f32], x: &[f32]| match metric {
                Metric::L2 => -q
                    .iter()
                    .zip(x)
                    .map(|(p, y)| (p - y) * (p - y))
                    .sum::<f32>()
                    .sqrt(),
                _ => dot(q, x),
            };
            let dir = |id: &str| {
                let v = c.get(id).unwrap().0;
                if metric == Metric::L2 {
                    v
                } else {
                    unit(&v)
                }
            };
            let w = |s: f32, w: f32| if s >= 0.0 { s * w } else { s / w };
            let user_v = c.get("i2").unwrap().0;
            let user = UserInput {
                vector_arg: Some(user_v.clone()),
                ..UserInput::default()
            };
            let req = request(10, Strategy::BestScore, &[(a, 1.0), (b, 3.0)], &[]);
            let r = recommend(&c, &user, &req, None).unwrap();
            let queries = [(dir("i2"), 1.0), (dir(a), 1.0), (dir(b), 3.0)];
            let best = |x: &[f32]| {
                queries
                    .iter()
                    .map(|(q, wt)| w(sim(q, x), *wt))
                    .fold(f32::MIN, f32::max)
            };
            let want = exact(&c, 10, &[a, b], |x| Some(best(x)));
            assert_eq!(ids(&r), want, "{metric:?}");
            for (id, score) in &r.items {
                let x = c.get(id).unwrap().0;
                assert!((score - best(&x)).abs() < 1e-4, "{metric:?} {id}");
            }
        }
    }

    #[test]
    fn best_score_drops_what_is_nearer_a_negative() {
        let c = catalog(Metric::Cosine);
        let req = request(20, Strategy::BestScore, &[("i0", 1.0)], &[("i5", 1.0)]);
        let r = recommend(&c, &UserInput::default(), &req, None).unwrap();
        let (p, n) = (c.get("i0").unwrap().0, c.get("i5").unwrap().0);
        for (id, _) in &r.items {
            let x = c.get(id).unwrap().0;
            assert!(dot(&p, &x) >= dot(&n, &x), "{id} is nearer the negative");
        }
        let nearer = (0..600)
            .map(|i| c.get(&format!("i{i}")).unwrap().0)
            .filter(|x| dot(&n, x) > dot(&p, x))
            .count();
        assert!(nearer > 0 && r.explain.nearer_negative > 0);
    }

    /// Missing ids are skipped and counted; an error only when nothing is
    /// left to search with.
    #[test]
    fn missing_examples_are_skipped_until_none_is_left() {
        let c = catalog(Metric::Ip);
        let req = request(
            5,
            Strategy::Average,
            &[("nope", 1.0), ("i4", 1.0)],
            &[("gone", 1.0)],
        );
        let r = recommend(&c, &UserInput::default(), &req, None).unwrap();
        assert_eq!(
            (r.explain.examples_used, r.explain.examples_missing),
            (1, 2)
        );
        let alone = request(5, Strategy::Average, &[("i4", 1.0)], &[]);
        let same = recommend(&c, &UserInput::default(), &alone, None).unwrap();
        assert_eq!(ids(&r), ids(&same));
        let none = request(5, Strategy::BestScore, &[("nope", 1.0)], &[]);
        let e = recommend(&c, &UserInput::default(), &none, None).unwrap_err();
        assert!(e.to_string().contains("none of the 1 POSITIVE"), "{e}");
        let only_negative = request(5, Strategy::Average, &[], &[("i4", 1.0)]);
        let e = recommend(&c, &UserInput::default(), &only_negative, None).unwrap_err();
        assert!(e.to_string().contains("NEGATIVE examples need"), "{e}");
        // With a user vector a missing positive is no error.
        let user = UserInput {
            vector_arg: Some(c.get("i9").unwrap().0),
            ..UserInput::default()
        };
        assert!(recommend(&c, &user, &none, None).is_ok());
    }

    #[test]
    fn strategy_and_weight_are_checked() {
        assert_eq!(Strategy::parse("best_score").unwrap(), Strategy::BestScore);
        let e = Strategy::parse("MAX").unwrap_err().to_string();
        assert!(e.contains("AVERAGE or BEST_SCORE"), "{e}");
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1001.0] {
            assert!(Examples::check_weight(bad).is_err(), "{bad}");
        }
        assert_eq!(Examples::check_weight(2.5).unwrap(), 2.5);
    }
}
