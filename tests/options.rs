//! Options that earlier tests accepted without checking what they do, each
//! asserted through Redis: SIMILAR EF/WITHSCORES, BATCH with the RECOMMEND
//! options and its atomic list swap, SCHEMA DEFAULT/VOCAB and the `score`
//! source, PLUGIN_STACK_KB, GPU_MIN_ROWS, deny-oom, and the size caps on
//! ATTRS and ids.

mod common;
use common::*;
use recsys::vector::to_fp32_blob;
use redis::{Connection, Value};
use std::time::{Duration, Instant};

fn pairs(v: Vec<String>) -> Vec<(String, f64)> {
    v.chunks(2)
        .map(|p| (p[0].clone(), p[1].parse().unwrap()))
        .collect()
}

#[test]
fn similar_takes_ef_and_returns_exact_scores() {
    let s = server();
    let mut c = s.connection().unwrap();
    // 2,000 items: above the exact-scan size at EF 10 (1,024), so the
    // catalog's EF_SEARCH walks the graph; EF 400 scans it.
    let vs = vectors(2000, 16, 81);
    load_catalog(&mut c, "cat", &vs, "EF_SEARCH 10");
    let items: Vec<(String, Vec<f32>)> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("item:{i}"), v.clone()))
        .collect();
    let mut found_low = 0;
    let mut found_high = 0;
    for probe in 0..40 {
        let id = format!("item:{probe}");
        // The exact 10 nearest other items (cosine on unit vectors).
        let exact: Vec<String> = exact_ids(&items, &vs[probe], 11)
            .into_iter()
            .filter(|x| *x != id)
            .take(10)
            .collect();
        let low: Vec<String> = redis::cmd("RECSYS.SIMILAR")
            .arg("cat")
            .arg(&id)
            .arg(10)
            .query(&mut c)
            .unwrap();
        let high = pairs(
            redis::cmd("RECSYS.SIMILAR")
                .arg("cat")
                .arg(&id)
                .arg(10)
                .arg("EF")
                .arg(400)
                .arg("WITHSCORES")
                .query(&mut c)
                .unwrap(),
        );
        assert_eq!(high.len(), 10);
        assert!(high.iter().all(|(x, _)| *x != id), "never the item itself");
        for w in high.windows(2) {
            assert!(w[0].1 >= w[1].1, "best first: {high:?}");
        }
        for (x, score) in &high {
            let i: usize = x.strip_prefix("item:").unwrap().parse().unwrap();
            let dot: f32 = vs[i].iter().zip(&vs[probe]).map(|(a, b)| a * b).sum();
            assert!((*score - dot as f64).abs() < 1e-4, "{x}: {score} vs {dot}");
        }
        found_low += low.iter().filter(|x| exact.contains(x)).count();
        found_high += high.iter().filter(|(x, _)| exact.contains(x)).count();
    }
    // EF 400 searches (nearly) exactly; the catalog's EF_SEARCH 10 does not.
    assert!(found_high >= 398, "recall with EF 400: {found_high}/400");
    assert!(
        found_high > found_low,
        "EF changes the search: {found_low} vs {found_high}"
    );
    assert!(err_line(&mut c, "RECSYS.SIMILAR cat item:1 5 EF 0").contains("EF must be between"));
}

/// Users u:0..u:59 with vectors; items with a genre, a category and stock.
fn shop(c: &mut Connection) {
    cmd(c, "RECSYS.CREATE cat DIM 8").unwrap();
    let vs = vectors(600, 8, 82);
    let mut p = redis::pipe();
    for (i, v) in vs.iter().enumerate() {
        let attrs = format!(
            r#"{{"genre":"g{}","category":"c{}","stock":"{}","sponsored":{}}}"#,
            i % 4,
            i % 3,
            if i % 5 == 0 { "out" } else { "in" },
            (i % 11 == 0) as i32
        );
        p.cmd("RECSYS.ITEM.SET")
            .arg("cat")
            .arg(format!("item:{i}"))
            .arg("FP32")
            .arg(to_fp32_blob(v))
            .arg("ATTRS")
            .arg(attrs)
            .ignore();
    }
    for (u, v) in vectors(60, 8, 83).iter().enumerate() {
        p.cmd("HSET")
            .arg(format!("u:{u}"))
            .arg("emb")
            .arg(to_fp32_blob(v))
            .ignore();
    }
    p.query::<()>(c).unwrap();
}

fn run_batch(c: &mut Connection, into: &str, opts: &[&str]) {
    let id = batch_id(
        &redis::cmd("RECSYS.BATCH")
            .arg("cat")
            .arg("MATCH")
            .arg("u:*")
            .arg("K")
            .arg(6)
            .arg("INTO")
            .arg(into)
            .arg(opts)
            .query::<Value>(c)
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Vec<Value> = redis::cmd("RECSYS.BATCH.STATUS").arg(id).query(c).unwrap();
        let text = format!("{v:?}");
        if !text.contains("running") {
            assert!(text.contains("done"), "{text}");
            assert!(
                text.contains(r#""written"'), int(60)"#),
                "60 users written: {text}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "batch did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn batch_applies_every_recommend_option() {
    let s = server();
    let mut c = s.connection().unwrap();
    shop(&mut c);
    for (name, file) in [("nostock", "exclude-attr"), ("boost", "boost-sponsored")] {
        redis::cmd("RECSYS.PLUGIN.LOAD")
            .arg(name)
            .arg(wasm(file))
            .query::<()>(&mut c)
            .unwrap();
    }
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("where:", vec!["WHERE", r#"genre == "g1""#]),
        ("ef:", vec!["EF", "300", "CANDIDATES", "100"]),
        ("div:", vec!["DIVERSITY", "category", "2"]),
        ("soft:", vec!["SOFTMAX", "0.05", "SEED", "9"]),
        (
            "plug:",
            vec![
                "FILTER",
                "nostock",
                "ARGS",
                "stock=out",
                "ORDER",
                "boost",
                "ARGS",
                "sponsored:5",
            ],
        ),
    ];
    for (into, opts) in &cases {
        run_batch(&mut c, into, opts);
        let mut differs_from_plain = false;
        for u in 0..60 {
            let user = format!("u:{u}");
            let listed: Vec<String> = redis::cmd("LRANGE")
                .arg(format!("{into}{{{user}}}"))
                .arg(0)
                .arg(-1)
                .query(&mut c)
                .unwrap();
            let direct: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
                .arg("cat")
                .arg(&user)
                .arg("K")
                .arg(6)
                .arg(opts)
                .query(&mut c)
                .unwrap();
            assert_eq!(listed, direct, "{into} {user}: BATCH and RECOMMEND differ");
            let plain: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
                .arg("cat")
                .arg(&user)
                .arg("K")
                .arg(6)
                .query(&mut c)
                .unwrap();
            differs_from_plain |= listed != plain;
            let attrs_of = |c: &mut Connection, id: &str| -> String {
                let v: Vec<Value> = redis::cmd("RECSYS.ITEM.GET")
                    .arg("cat")
                    .arg(id)
                    .query(c)
                    .unwrap();
                redis::from_redis_value(&v[3]).unwrap()
            };
            for id in &listed {
                let attrs = attrs_of(&mut c, id);
                match *into {
                    "where:" => assert!(attrs.contains(r#""genre":"g1""#), "{id} {attrs}"),
                    "plug:" => assert!(attrs.contains(r#""stock":"in""#), "{id} {attrs}"),
                    _ => {}
                }
            }
            if *into == "div:" {
                let mut per: std::collections::HashMap<String, usize> = Default::default();
                for id in &listed {
                    let a = attrs_of(&mut c, id);
                    let cat = a.split(r#""category":""#).nth(1).unwrap()[..2].to_string();
                    *per.entry(cat).or_default() += 1;
                }
                assert!(per.values().all(|&n| n <= 2), "{user}: {per:?}");
            }
        }
        if *into != "ef:" {
            assert!(differs_from_plain, "{into}: the option changed nothing");
        }
    }
}

#[test]
fn batch_replaces_each_list_atomically() {
    let s = server();
    let mut c = s.connection().unwrap();
    shop(&mut c);
    let mut p = redis::pipe();
    for u in 0..60 {
        p.cmd("RPUSH")
            .arg(format!("r:{{u:{u}}}"))
            .arg(&["old1", "old2", "old3", "old4", "old5", "old6", "old7"][..])
            .ignore();
    }
    p.query::<()>(&mut c).unwrap();
    // A reader polls the lists while batches rewrite them: every list it sees
    // is the whole old one or a whole new one, never empty, never mixed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let mut r = s.connection().unwrap();
        std::thread::spawn(move || {
            let mut seen = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for u in 0..60 {
                    let l: Vec<String> = redis::cmd("LRANGE")
                        .arg(format!("r:{{u:{u}}}"))
                        .arg(0)
                        .arg(-1)
                        .query(&mut r)
                        .unwrap();
                    let old = l.len() == 7 && l.iter().all(|x| x.starts_with("old"));
                    let new = l.len() == 6 && l.iter().all(|x| x.starts_with("item:"));
                    assert!(old || new, "u:{u} read as {l:?}");
                    seen += 1;
                }
            }
            seen
        })
    };
    for _ in 0..20 {
        run_batch(&mut c, "r:", &[]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    // No scratch keys are left behind.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(
        keys.iter()
            .all(|k| k == "cat" || k.starts_with("u:") || k.starts_with("r:{u:")),
        "{keys:?}"
    );
}

/// Scores of RECOMMEND ... RANK `model` WITHSCORES, by item.
fn ranked(c: &mut Connection, model: &str) -> std::collections::HashMap<String, f64> {
    pairs(
        redis::cmd("RECSYS.RECOMMEND")
            .arg("cat")
            .arg("u")
            .arg("K")
            .arg(10)
            .arg("RANK")
            .arg(model)
            .arg("WITHSCORES")
            .query(c)
            .unwrap(),
    )
    .into_iter()
    .collect()
}

#[test]
fn schema_defaults_vocabularies_and_the_score_source_reach_the_model() {
    let s = server();
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 4").unwrap();
    let near = [1.0f32, 0.0, 0.0, 0.0];
    let far = [0.6f32, 0.8, 0.0, 0.0];
    for (id, v, attrs) in [
        ("p5", near, r#"{"price":5,"genre":"a"}"#),
        ("nop", near, r#"{"genre":"a"}"#),
        ("p7", near, r#"{"price":7,"genre":"a"}"#),
        ("unk", near, r#"{"price":5,"genre":"zzz"}"#),
        ("gb", near, r#"{"price":5,"genre":"b"}"#),
        ("far", far, r#"{"price":5,"genre":"a"}"#),
    ] {
        redis::cmd("RECSYS.ITEM.SET")
            .arg("cat")
            .arg(id)
            .arg("FP32")
            .arg(to_fp32_blob(&v))
            .arg("ATTRS")
            .arg(attrs)
            .query::<i64>(&mut c)
            .unwrap();
    }
    let mut h = redis::cmd("HSET");
    h.arg("u").arg("emb").arg(to_fp32_blob(&near));
    for i in 2..8 {
        h.arg(format!("d{i}"))
            .arg(format!("{}", i as f32 / 3.0 - 1.0));
    }
    h.query::<i64>(&mut c).unwrap();
    // 8 dense and 8 sparse features, as the reference DLRM expects.
    let users: String = (2..8).map(|i| format!(" DENSE user.d{i}")).collect();
    let items: String = (1..8).map(|i| format!(" SPARSE item.c{i} 100")).collect();
    for (name, second) in [
        ("with_score", "DENSE score"),
        ("no_score", "DENSE item.none DEFAULT 0"),
    ] {
        let schema = format!(
            "DENSE item.price DEFAULT 5 {second}{users} SPARSE item.genre 100 VOCAB a,b,c DEFAULT 0{items}"
        );
        redis::cmd("RECSYS.MODEL.SET")
            .arg("cat")
            .arg(name)
            .arg("DLRM")
            .arg(fixture("dlrm_ranker.safetensors"))
            .arg("SCHEMA")
            .arg(&schema)
            .query::<()>(&mut c)
            .unwrap_or_else(|e| panic!("{schema}: {e}"));
    }
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    let m = ranked(&mut c, "with_score");
    assert_eq!(m.len(), 6);
    assert!(
        close(m["p5"], m["nop"]),
        "a missing price is DEFAULT 5: {m:?}"
    );
    assert!(!close(m["p5"], m["p7"]), "the price is read: {m:?}");
    assert!(
        close(m["p5"], m["unk"]),
        "an unknown genre is DEFAULT 0 = 'a': {m:?}"
    );
    assert!(!close(m["p5"], m["gb"]), "'b' is vocabulary id 1: {m:?}");
    assert!(
        !close(m["p5"], m["far"]),
        "the retrieval score is a feature: {m:?}"
    );
    let m = ranked(&mut c, "no_score");
    assert!(
        close(m["p5"], m["far"]),
        "without `score` only attributes count: {m:?}"
    );
}

#[test]
fn plugin_stack_kb_bounds_recursion_in_wasm_frames() {
    let rec = |c: &mut Connection, depth: usize| -> redis::RedisResult<Vec<String>> {
        redis::cmd("RECSYS.RECOMMEND")
            .arg("cat")
            .arg("u")
            .arg("VECTOR")
            .arg(to_fp32_blob(&[1.0, 0.0]))
            .arg("K")
            .arg(2)
            .arg("FILTER")
            .arg("deep")
            .arg("ARGS")
            .arg(format!("deep:{depth}"))
            .query(c)
    };
    let setup = |c: &mut Connection| {
        cmd(c, "RECSYS.CREATE cat DIM 2").unwrap();
        cmd(c, "RECSYS.ITEM.SET cat a VALUES 1 0").unwrap();
        cmd(c, "RECSYS.ITEM.SET cat b VALUES 0 1").unwrap();
        redis::cmd("RECSYS.PLUGIN.LOAD")
            .arg("deep")
            .arg(wasm("hostile"))
            .query::<()>(c)
            .unwrap();
    };
    // Default 128 KiB: shallow recursion works, 8,000 calls exhaust it.
    let s = server();
    let mut c = s.connection().unwrap();
    setup(&mut c);
    assert_eq!(rec(&mut c, 100).unwrap().len(), 2);
    let e = rec(&mut c, 8000).unwrap_err().to_string();
    assert!(e.contains("stack"), "{e}");
    assert!(!e.contains("deadline"), "the stack cap, not the clock: {e}");
    drop(c);
    drop(s);
    // 1024 KiB: the same depth fits.
    let s = server_with(&["PLUGIN_STACK_KB", "1024"], &[]);
    let mut c = s.connection().unwrap();
    setup(&mut c);
    assert_eq!(rec(&mut c, 8000).unwrap().len(), 2);
    // Out-of-range values fail the load.
    for bad in ["8", "2048", "x"] {
        assert!(
            recsys_cli::server::RedisServer::start(&["PLUGIN_STACK_KB", bad], &[]).is_err(),
            "PLUGIN_STACK_KB {bad} was accepted"
        );
    }
}

#[test]
fn gpu_min_rows_is_validated_at_load() {
    // Which rows go to the GPU is only observable with a GPU (see
    // tests/models.rs); here: the argument's range.
    let s = server_with(&["GPU", "off", "GPU_MIN_ROWS", "0"], &[]);
    drop(s);
    for bad in ["-1", "99999999", "many"] {
        assert!(
            recsys_cli::server::RedisServer::start(&["GPU_MIN_ROWS", bad], &[]).is_err(),
            "GPU_MIN_ROWS {bad} was accepted"
        );
    }
}

#[test]
fn writes_are_refused_over_maxmemory_and_reads_still_work() {
    let s = server();
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 2").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 0").unwrap();
    cmd(&mut c, "CONFIG SET maxmemory-policy noeviction").unwrap();
    cmd(&mut c, "CONFIG SET maxmemory 1").unwrap();
    for line in [
        "RECSYS.CREATE other DIM 2",
        "RECSYS.ITEM.SET cat b VALUES 0 1",
        "RECSYS.ITEM.MSET cat b 0000",
        "RECSYS.EVENT cat u a",
        "RECSYS.POPULARITY.SET cat EPOCH 0 a 1",
        "RECSYS.BATCH cat MATCH u:* K 1 INTO r:",
    ] {
        let e = err_line(&mut c, line);
        assert!(e.starts_with("OOM"), "{line}: {e}");
    }
    let ids: Vec<String> = redis::cmd("RECSYS.SEARCH")
        .arg("cat")
        .arg(1)
        .arg("VALUES")
        .arg(1)
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(ids, vec!["a"]);
    cmd(&mut c, "CONFIG SET maxmemory 0").unwrap();
    assert_eq!(info_field(&mut c, "cat", "items"), 1, "nothing was written");
    cmd(&mut c, "RECSYS.ITEM.SET cat b VALUES 0 1").unwrap();
    assert_eq!(info_field(&mut c, "cat", "items"), 2);
}

#[test]
fn attrs_and_ids_have_size_caps() {
    let s = server();
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 2").unwrap();
    let set = |c: &mut Connection, id: &str, attrs: &str| {
        redis::cmd("RECSYS.ITEM.SET")
            .arg("cat")
            .arg(id)
            .arg("VALUES")
            .arg(1)
            .arg(0)
            .arg("ATTRS")
            .arg(attrs)
            .query::<i64>(c)
    };
    let at_cap = format!(r#"{{"x":"{}"}}"#, "a".repeat(64 * 1024 - 8));
    assert_eq!(at_cap.len(), 64 * 1024);
    set(&mut c, "big", &at_cap).unwrap();
    let over = format!(r#"{{"x":"{}"}}"#, "a".repeat(64 * 1024 - 7));
    let e = set(&mut c, "bigger", &over).unwrap_err().to_string();
    assert!(e.contains("ATTRS larger than 65536 bytes"), "{e}");
    set(&mut c, &"i".repeat(1024), "{}").unwrap();
    let e = set(&mut c, &"i".repeat(1025), "{}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("longer than 1024 bytes"), "{e}");
    assert_eq!(info_field(&mut c, "cat", "items"), 2);
}
