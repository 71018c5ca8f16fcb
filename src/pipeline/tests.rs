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
