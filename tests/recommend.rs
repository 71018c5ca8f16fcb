//! RECSYS.RECOMMEND and RECSYS.EVENT through a real redis-server: user
//! vectors from every source, filters, ordering, EXPLAIN, and bad input.

mod common;
use common::*;
use recsys::vector::to_fp32_blob;
use redis::{Connection, Value};
use std::collections::HashMap;

const DIM: usize = 16;
const N: usize = 3000;

/// A catalog where item i has genre "g{i%5}", year 1950+i%70 and rare=(i%100==0).
fn shop(c: &mut Connection) -> Vec<Vec<f32>> {
    let vs = vectors(N, DIM, 61);
    cmd(c, &format!("RECSYS.CREATE cat DIM {DIM}")).unwrap();
    for chunk in vs.chunks(500).enumerate() {
        let mut p = redis::pipe();
        for (j, v) in chunk.1.iter().enumerate() {
            let i = chunk.0 * 500 + j;
            let attrs = format!(
                r#"{{"genre":"g{}","year":{},"rare":{},"tags":["t{}"]}}"#,
                i % 5,
                1950 + i % 70,
                i % 100 == 0,
                i % 3
            );
            p.cmd("RECSYS.ITEM.SET")
                .arg("cat")
                .arg(format!("i{i}"))
                .arg("FP32")
                .arg(to_fp32_blob(v))
                .arg("ATTRS")
                .arg(attrs)
                .ignore();
        }
        p.query::<()>(c).unwrap();
    }
    vs
}

fn rec(c: &mut Connection, user: &str, opts: &[&str]) -> Vec<String> {
    redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg(user)
        .arg(opts)
        .query(c)
        .unwrap()
}

/// Sets the user's `emb`.
fn set_emb(c: &mut Connection, user: &str, v: &[f32]) {
    let _: () = redis::cmd("HSET")
        .arg(user)
        .arg("emb")
        .arg(to_fp32_blob(v))
        .query(c)
        .unwrap();
}

fn num(id: &str) -> usize {
    id[1..].parse().unwrap()
}

#[test]
fn user_vector_sources_in_order() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = shop(&mut c);
    // VECTOR argument beats everything.
    let r: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("u:1")
        .arg("K")
        .arg(5)
        .arg("VECTOR")
        .arg(to_fp32_blob(&vs[42]))
        .query(&mut c)
        .unwrap();
    assert_eq!(r[0], "i42");
    // The user's emb field (written with a plain HSET).
    let _: () = redis::cmd("HSET")
        .arg("u:2")
        .arg("emb")
        .arg(to_fp32_blob(&vs[7]))
        .arg("age")
        .arg(31)
        .query(&mut c)
        .unwrap();
    assert_eq!(rec(&mut c, "u:2", &["K", "3"])[0], "i7");
    // Session: mean of recent events' vectors.
    cmd(&mut c, "RECSYS.EVENT cat u:3 i100 TYPE view").unwrap();
    cmd(&mut c, "RECSYS.EVENT cat u:3 i100 TYPE click").unwrap();
    let recent: String = redis::cmd("HGET")
        .arg("u:3")
        .arg("recent")
        .query(&mut c)
        .unwrap();
    assert_eq!(recent, r#"["i100"]"#, "an item appears once, newest first");
    let r = rec(&mut c, "u:3", &["K", "3"]);
    assert_eq!(r[0], "i100");
    let explain = format!(
        "{:?}",
        cmd(&mut c, "RECSYS.RECOMMEND cat u:3 K 3 EXPLAIN").unwrap()
    );
    assert!(explain.contains("mean of 1 recent items"), "{explain}");
    // Cold start: a missing hash gets the most popular items.
    for (item, times) in [("i5", 3), ("i6", 1), ("i9", 2)] {
        for _ in 0..times {
            cmd(&mut c, &format!("RECSYS.EVENT cat someone {item}")).unwrap();
        }
    }
    // i100 and i9 both have two events; i9's are later, so they weigh more.
    let cold = rec(&mut c, "nobody", &["K", "4"]);
    assert_eq!(cold, vec!["i5", "i9", "i100", "i6"]);
    let explain = format!(
        "{:?}",
        cmd(&mut c, "RECSYS.RECOMMEND cat nobody K 2 EXPLAIN").unwrap()
    );
    assert!(explain.contains("cold start"), "{explain}");
}

#[test]
fn filters_never_leak_and_fill_k() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = shop(&mut c);
    set_emb(&mut c, "u", &vs[1]);
    let r = rec(
        &mut c,
        "u",
        &["K", "20", "WHERE", r#"genre == "g2" && year >= 1990"#],
    );
    assert_eq!(r.len(), 20);
    assert!(
        r.iter()
            .all(|id| num(id) % 5 == 2 && 1950 + num(id) % 70 >= 1990),
        "{r:?}"
    );
    // 1%-selective: 30 rare items exist, K=25 must be filled.
    let r = rec(&mut c, "u", &["K", "25", "WHERE", "rare"]);
    assert_eq!(r.len(), 25, "{r:?}");
    assert!(r.iter().all(|id| num(id).is_multiple_of(100)));
    let r = rec(&mut c, "u", &["K", "50", "WHERE", "rare"]);
    assert_eq!(r.len(), 30, "all 30 rare items, no more");
    let r = rec(
        &mut c,
        "u",
        &[
            "K",
            "10",
            "WHERE",
            r#""t1" in tags && genre in ["g0", "g1"]"#,
        ],
    );
    assert!(
        r.iter().all(|id| num(id) % 3 == 1 && num(id) % 5 <= 1),
        "{r:?}"
    );
    assert!(rec(&mut c, "u", &["K", "10", "WHERE", "nosuchattr > 3"]).is_empty());
    let v = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("u")
        .arg("K")
        .arg(5)
        .arg("WHERE")
        .arg("rare")
        .arg("EXPLAIN")
        .query::<Value>(&mut c)
        .unwrap();
    let text = format!("{v:?}");
    // 3,000 items at CANDIDATES 200: an exact scan of the catalog.
    assert!(text.contains("scan (small catalog)"), "{text}");
}

#[test]
fn exclude_seen_never_returns_seen_items() {
    let s = server_with(&["HISTORY", "20"], &[]);
    let mut c = s.connection().unwrap();
    let vs = shop(&mut c);
    set_emb(&mut c, "u", &vs[10]);
    let before = rec(&mut c, "u", &["K", "10"]);
    for id in &before {
        cmd(
            &mut c,
            &format!("RECSYS.EVENT cat u {id} TYPE purchase WEIGHT 2"),
        )
        .unwrap();
    }
    let after = rec(&mut c, "u", &["K", "10", "EXCLUDE_SEEN"]);
    assert_eq!(after.len(), 10);
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "{before:?} vs {after:?}"
    );
    // HISTORY bounds the recent list.
    for i in 0..30 {
        cmd(&mut c, &format!("RECSYS.EVENT cat u i{}", 500 + i)).unwrap();
    }
    let recent = recent_items(&mut c, "u");
    assert_eq!(recent.len(), 20);
    assert_eq!(recent[0], "i529");
    let purchases: i64 = redis::cmd("HGET")
        .arg("u")
        .arg("events:purchase")
        .query(&mut c)
        .unwrap();
    assert_eq!(purchases, 10);
}

#[test]
fn exclude_seen_covers_the_full_history() {
    use recsys::user::SeenSet;
    let s = server_with(&["HISTORY", "20"], &[]);
    let mut c = s.connection().unwrap();
    let (n, dim, seen_n) = (12_000, 16, 10_000);
    let vs = vectors(n, dim, 77);
    load_catalog(&mut c, "big", &vs, "METRIC IP");
    let user = &vs[0];
    // The user has seen the 10,000 items they like most (by exact score),
    // written by a loader in shuffled order; the rest are the candidates.
    let dot = |v: &[f32]| v.iter().zip(user).map(|(a, b)| a * b).sum::<f32>();
    let mut by_score: Vec<usize> = (0..n).collect();
    by_score.sort_by(|&a, &b| dot(&vs[b]).total_cmp(&dot(&vs[a])));
    let ids: Vec<String> = (0..n).map(|i| format!("item:{i}")).collect();
    let mut seen: Vec<&str> = by_score[..seen_n]
        .iter()
        .map(|&i| ids[i].as_str())
        .collect();
    seen.reverse();
    let _: () = redis::cmd("HSET")
        .arg("u")
        .arg("emb")
        .arg(to_fp32_blob(user))
        .arg("seen")
        .arg(SeenSet::from_ids(seen.iter().copied()).to_bytes())
        .query(&mut c)
        .unwrap();
    let recommend = |c: &mut Connection, opts: &[&str]| -> Vec<String> {
        redis::cmd("RECSYS.RECOMMEND")
            .arg("big")
            .arg("u")
            .arg(opts)
            .query(c)
            .unwrap()
    };
    let plain = recommend(&mut c, &["K", "50"]);
    assert!(
        plain.iter().all(|id| seen.contains(&id.as_str())),
        "the test can fail"
    );
    let got = recommend(&mut c, &["K", "50", "EXCLUDE_SEEN"]);
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|id| !seen.contains(&id.as_str())), "{got:?}");
    let unseen_best: Vec<&String> = by_score[seen_n..seen_n + 50]
        .iter()
        .map(|&i| &ids[i])
        .collect();
    let hits = got.iter().filter(|id| unseen_best.contains(id)).count();
    assert!(
        hits >= 45,
        "EXCLUDE_SEEN finds the best unseen items: {hits}/50"
    );
    // EVENT adds to the set beyond HISTORY, and writes it as text: `b` and
    // the base64 of 8 bytes per item.
    let len = |c: &mut Connection| -> usize {
        redis::cmd("HSTRLEN").arg("u").arg("seen").query(c).unwrap()
    };
    assert_eq!(len(&mut c), 8 * seen_n);
    let first = got[0].clone();
    cmd(&mut c, &format!("RECSYS.EVENT big u {first}")).unwrap();
    cmd(&mut c, &format!("RECSYS.EVENT big u {first}")).unwrap();
    assert_eq!(len(&mut c), 1 + 4 * (8 * (seen_n + 1)).div_ceil(3));
    let again = recommend(&mut c, &["K", "50", "EXCLUDE_SEEN"]);
    assert!(!again.contains(&first) && again.len() == 50);
    // A user with only events: every one of 30 events is excluded, not
    // only the 20 `recent` keeps.
    let _: () = redis::cmd("HSET")
        .arg("v")
        .arg("emb")
        .arg(to_fp32_blob(user))
        .query(&mut c)
        .unwrap();
    let top30 = recommend(&mut c, &["K", "30"]);
    for id in top30.iter().rev() {
        cmd(&mut c, &format!("RECSYS.EVENT big v {id}")).unwrap();
    }
    let after: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg("big")
        .arg("v")
        .arg("K")
        .arg(30)
        .arg("EXCLUDE_SEEN")
        .query(&mut c)
        .unwrap();
    assert!(after.iter().all(|id| !top30.contains(id)), "{after:?}");
    // A malformed field is refused with its name; EVENT writes nothing then.
    let _: () = redis::cmd("HSET")
        .arg("w")
        .arg("seen")
        .arg("1234567")
        .query(&mut c)
        .unwrap();
    let e = err_line(&mut c, "RECSYS.RECOMMEND big w EXCLUDE_SEEN");
    assert!(
        e.contains("field 'seen' of user 'w'") && e.contains("8-byte"),
        "{e}"
    );
    assert!(err_line(&mut c, "RECSYS.EVENT big w item:1").contains("8-byte"));
    assert_eq!(cmd(&mut c, "HLEN w").unwrap(), Value::Int(1));
    // Without EXCLUDE_SEEN the field is not read.
    assert_eq!(recommend_len(&mut c, "w"), 10);
}

fn recommend_len(c: &mut Connection, user: &str) -> usize {
    let v: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg("big")
        .arg(user)
        .query(c)
        .unwrap();
    v.len()
}

#[test]
fn softmax_is_reproducible_and_diversity_caps() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = shop(&mut c);
    set_emb(&mut c, "u", &vs[3]);
    let a = rec(&mut c, "u", &["K", "10", "SOFTMAX", "0.05", "SEED", "42"]);
    let b = rec(&mut c, "u", &["K", "10", "SOFTMAX", "0.05", "SEED", "42"]);
    let d = rec(&mut c, "u", &["K", "10", "SOFTMAX", "0.05", "SEED", "43"]);
    assert_eq!(a, b);
    assert_ne!(a, d);
    assert_eq!(a.len(), 10);
    let r = rec(&mut c, "u", &["K", "10", "DIVERSITY", "genre", "2"]);
    assert_eq!(r.len(), 10);
    let mut per: HashMap<usize, usize> = HashMap::new();
    for id in &r {
        *per.entry(num(id) % 5).or_default() += 1;
    }
    assert!(per.values().all(|&n| n <= 2), "{per:?}");
    let with: Vec<(String, f64)> = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("u")
        .arg("K")
        .arg(3)
        .arg("WITHSCORES")
        .query(&mut c)
        .unwrap();
    assert_eq!(with.len(), 3);
    assert!(with[0].1 >= with[1].1);
    // CANDIDATES and EF are accepted and bound the work.
    assert_eq!(
        rec(&mut c, "u", &["K", "5", "CANDIDATES", "50", "EF", "60"]).len(),
        5
    );
}

#[test]
fn resp3_explain_is_a_map_with_stages() {
    let s = server();
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{}/?protocol=resp3", s.port)).unwrap();
    let mut c = client.get_connection().unwrap();
    let vs = shop(&mut c);
    set_emb(&mut c, "u", &vs[3]);
    let v = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("u")
        .arg("K")
        .arg(5)
        .arg("WHERE")
        .arg("year > 1960")
        .arg("WITHSCORES")
        .arg("EXPLAIN")
        .query::<Value>(&mut c)
        .unwrap();
    let Value::Map(top) = v else {
        panic!("expected a map")
    };
    assert!(matches!(&top[0].1, Value::Map(items) if items.len() == 5));
    let Value::Map(stages) = &top[1].1 else {
        panic!("explain map")
    };
    let names: Vec<String> = stages
        .iter()
        .map(|(k, _)| redis::from_redis_value(k).unwrap())
        .collect();
    for want in [
        "user_vector",
        "retrieve_us",
        "filter_mode",
        "filter_evaluated",
        "rank_us",
        "rank_features_us",
        "order_us",
        "returned",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

/// EXPLAIN's `filter_mode` for a WHERE (VECTOR given, no history).
fn filter_mode(
    c: &mut Connection,
    vector: &[f32],
    where_: &str,
    candidates: usize,
) -> (String, usize) {
    let v: Value = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("nobody")
        .arg("K")
        .arg(5)
        .arg("CANDIDATES")
        .arg(candidates)
        .arg("VECTOR")
        .arg(to_fp32_blob(vector))
        .arg("WHERE")
        .arg(where_)
        .arg("EXPLAIN")
        .query(c)
        .unwrap();
    let Value::Array(top) = v else {
        panic!("RESP2 map as array: {v:?}")
    };
    let Value::Array(items) = &top[1] else {
        panic!()
    };
    let Value::Array(ex) = &top[3] else { panic!() };
    let field = |name: &str| {
        let i = ex
            .iter()
            .position(|k| redis::from_redis_value::<String>(k).ok().as_deref() == Some(name))
            .unwrap();
        ex[i + 1].clone()
    };
    (
        redis::from_redis_value(&field("filter_mode")).unwrap(),
        items.len(),
    )
}

#[test]
fn explain_says_how_filters_ran() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = shop(&mut c);
    // CANDIDATES 20: the 3,000 items are walked, not scanned.
    // A permissive filter stays in the graph walk...
    let (mode, n) = filter_mode(&mut c, &vs[0], "year > 1960", 20);
    assert_eq!((mode.as_str(), n), ("in-graph", 5));
    // ...a typed one that matches a few items scattered over the catalog
    // is known to be selective before the walk (its pass rate is sampled)
    // and the matching items are scanned, still filling K...
    let (mode, n) = filter_mode(&mut c, &vs[0], "rare && year == 1950", 20);
    assert_eq!(
        (mode.as_str(), n),
        ("scan (selective filter, estimated)", 5)
    );
    // ...the same filter through the interpreter (`||` is not typed) gives
    // up on the walk and scans.
    let (mode, n) = filter_mode(&mut c, &vs[0], "(rare && year == 1950) || false", 20);
    assert_eq!(
        (mode.as_str(), n),
        ("in-graph, then scan (selective filter)", 5)
    );
    let (mode, _) = filter_mode(&mut c, &vs[0], "true", 20);
    assert_eq!(mode, "in-graph");
    // At CANDIDATES 200 the whole catalog is scanned, exactly.
    let (mode, n) = filter_mode(&mut c, &vs[0], "rare && year == 1950", 200);
    assert_eq!((mode.as_str(), n), ("scan (small catalog)", 5));
}

#[test]
fn events_persist_and_replicate() {
    let s = server();
    let mut c = s.connection().unwrap();
    shop(&mut c);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for _ in 0..3 {
        cmd(&mut c, &format!("RECSYS.EVENT cat a i77 TS {now}")).unwrap();
    }
    cmd(&mut c, &format!("RECSYS.EVENT cat a i88 TS {now}")).unwrap();
    // Events from three years ago have decayed to nothing (half-life: one day).
    cmd(
        &mut c,
        "RECSYS.EVENT cat a i66 WEIGHT 1000 TS 1700000000000",
    )
    .unwrap();
    let before = rec(&mut c, "cold", &["K", "2"]);
    assert_eq!(before, vec!["i77", "i88"]);
    cmd(&mut c, "DEBUG RELOAD").unwrap();
    assert_eq!(
        rec(&mut c, "cold", &["K", "2"]),
        before,
        "popularity survives a reload"
    );
    let replica = server_with(&[], &["--replicaof", "127.0.0.1", &s.port.to_string()]);
    let mut r = replica.connection().unwrap();
    for _ in 0..200 {
        if cmd(&mut r, "RECSYS.INFO cat").is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    cmd(&mut c, "RECSYS.EVENT cat a i99 WEIGHT 10").unwrap();
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut c).unwrap();
    for _ in 0..100 {
        if rec(&mut r, "cold", &["K", "1"]) == vec!["i99"] {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        rec(&mut r, "cold", &["K", "3"]),
        rec(&mut c, "cold", &["K", "3"])
    );
    let recent: String = redis::cmd("HGET")
        .arg("a")
        .arg("recent")
        .query(&mut r)
        .unwrap();
    assert_eq!(recent, r#"["i99","i66","i88","i77"]"#);
}

#[test]
fn bad_input_gets_clear_errors() {
    let s = server();
    let mut c = s.connection().unwrap();
    shop(&mut c);
    cmd(&mut c, "SET str x").unwrap();
    for (line, want) in [
        ("RECSYS.RECOMMEND nope u", "does not exist"),
        ("RECSYS.RECOMMEND str u", "WRONGTYPE"),
        ("RECSYS.RECOMMEND cat str", "user key 'str' must be a hash"),
        (
            "RECSYS.RECOMMEND cat u K 0",
            "K must be between 1 and 10000",
        ),
        (
            "RECSYS.RECOMMEND cat u K 10001",
            "K must be between 1 and 10000",
        ),
        (
            "RECSYS.RECOMMEND cat u CANDIDATES 0",
            "CANDIDATES must be between",
        ),
        (
            "RECSYS.RECOMMEND cat u SOFTMAX 0",
            "SOFTMAX temperature must be between",
        ),
        ("RECSYS.RECOMMEND cat u SEED 3", "SEED must follow SOFTMAX"),
        (
            "RECSYS.RECOMMEND cat u DIVERSITY genre 0",
            "DIVERSITY max must be between",
        ),
        (
            "RECSYS.RECOMMEND cat u VECTOR abc",
            "VECTOR: FP32 blob must be 64 bytes",
        ),
        ("RECSYS.RECOMMEND cat u FASTER", "unknown option 'FASTER'"),
        ("RECSYS.RECOMMEND cat u K", "missing K"),
        (
            "RECSYS.EVENT cat u nosuchitem",
            "item 'nosuchitem' does not exist",
        ),
        ("RECSYS.EVENT cat str i1", "WRONGTYPE"),
        (
            "RECSYS.EVENT cat u i1 WEIGHT nan",
            "WEIGHT must be a finite number",
        ),
        ("RECSYS.EVENT cat u i1 TS -5", "TS must be between"),
        ("RECSYS.EVENT cat u i1 TYPE a:b", "TYPE must be"),
        ("RECSYS.EVENT nope u i1", "does not exist"),
    ] {
        let e = err_line(&mut c, line);
        assert!(e.contains(want), "{line}: {e}");
    }
    let e = err(
        &mut c,
        &[
            b"RECSYS.RECOMMEND",
            b"cat",
            b"u",
            b"WHERE",
            b"year >= && genre",
        ],
    );
    assert!(e.contains("does not parse") && e.contains("column"), "{e}");
    let _: () = redis::cmd("HSET")
        .arg("bademb")
        .arg("emb")
        .arg("short")
        .query(&mut c)
        .unwrap();
    assert!(
        err_line(&mut c, "RECSYS.RECOMMEND cat bademb").contains("field 'emb' of user 'bademb'")
    );
    let _: () = redis::cmd("HSET")
        .arg("badrecent")
        .arg("recent")
        .arg("not json")
        .query(&mut c)
        .unwrap();
    assert!(err_line(&mut c, "RECSYS.RECOMMEND cat badrecent").contains("must be a JSON array"));
    assert!(err_line(&mut c, "RECSYS.EVENT cat badrecent i1").contains("must be a JSON array"));
    // Nothing half-written: the failed events left no hash behind.
    assert_eq!(cmd(&mut c, "EXISTS u").unwrap(), Value::Int(0));
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("RECSYS.RECOMMEND")
        .arg("{s}:cat")
        .arg("{s}:user:1")
        .arg("K")
        .arg(3)
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, vec!["{s}:cat", "{s}:user:1"]);
    assert_eq!(
        cmd(&mut c, "PING").unwrap(),
        Value::SimpleString("PONG".into())
    );
}

#[test]
fn session_blends_the_user_vector_with_recent_events() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = shop(&mut c);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    // An item unrelated to the user's long-term taste (orthogonal-ish).
    let far = (0..N)
        .min_by(|&a, &b| {
            dot(&vs[a], &vs[0])
                .abs()
                .total_cmp(&dot(&vs[b], &vs[0]).abs())
        })
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg("u:s")
        .arg("emb")
        .arg(to_fp32_blob(&vs[0]))
        .query(&mut c)
        .unwrap();
    cmd(&mut c, &format!("RECSYS.EVENT cat u:s i{far}")).unwrap();
    let far_id = format!("i{far}");
    let plain = rec(&mut c, "u:s", &["K", "10"]);
    assert!(!plain.contains(&far_id));
    let blended = rec(&mut c, "u:s", &["K", "10", "SESSION", "1", "3"]);
    assert!(blended.contains(&far_id), "{blended:?}");
    assert_eq!(rec(&mut c, "u:s", &["K", "10", "SESSION", "5", "0"]), plain);
    let v: Value = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("u:s")
        .arg("SESSION")
        .arg(1)
        .arg(3)
        .arg("EXPLAIN")
        .query(&mut c)
        .unwrap();
    let text = format!("{v:?}");
    assert!(
        text.contains(r#""session_items"'), int(1)"#),
        "EXPLAIN shows the blend: {text}"
    );
    // The catalog's default: requests without SESSION blend, SESSION 0 0
    // turns it off, and it survives a reload.
    cmd(&mut c, "RECSYS.ALTER cat SESSION 1 3").unwrap();
    assert_eq!(rec(&mut c, "u:s", &["K", "10"]), blended);
    assert_eq!(rec(&mut c, "u:s", &["K", "10", "SESSION", "0", "0"]), plain);
    cmd(&mut c, "DEBUG RELOAD").unwrap();
    assert_eq!(rec(&mut c, "u:s", &["K", "10"]), blended);
    cmd(&mut c, "RECSYS.ALTER cat SESSION 0 0").unwrap();
    assert_eq!(rec(&mut c, "u:s", &["K", "10"]), plain);
    cmd(&mut c, "RECSYS.CREATE cat2 DIM 4 SESSION 10 0.5").unwrap();
    let info = format!("{:?}", cmd(&mut c, "RECSYS.INFO cat2").unwrap());
    assert!(info.contains("10 0.5"), "{info}");
    for (line, want) in [
        ("RECSYS.ALTER cat", "nothing to change"),
        ("RECSYS.ALTER cat SESSION 2", "SESSION weight"),
        ("RECSYS.ALTER cat FOO 1", "unknown option 'FOO'"),
        ("RECSYS.ALTER nope SESSION 1 1", "does not exist"),
        ("RECSYS.CREATE cat3 DIM 4 SESSION 1001 1", "SESSION items"),
    ] {
        let e = err_line(&mut c, line);
        assert!(e.contains(want), "{line}: {e}");
    }
    assert_eq!(cmd(&mut c, "EXISTS cat3").unwrap(), Value::Int(0));
    for (opts, want) in [
        ("SESSION -1 1", "SESSION items"),
        ("SESSION 1001 1", "SESSION items"),
        ("SESSION 1 -1", "SESSION weight"),
        ("SESSION 1 nan", "SESSION weight"),
        ("SESSION 1", "SESSION weight"),
    ] {
        let e = err_line(&mut c, &format!("RECSYS.RECOMMEND cat u:s {opts}"));
        assert!(e.contains(want), "{opts}: {e}");
    }
}

/// The integer `recsys_<field>` of `INFO recsys`.
fn recsys_counter(c: &mut Connection, field: &str) -> i64 {
    info(c, "recsys")
        .get(&format!("recsys_{field}"))
        .unwrap_or_else(|| panic!("no {field} in INFO recsys"))
        .parse()
        .unwrap()
}

/// A catalog below the scan limit is searched exactly (every answer equals
/// brute force) on the main thread; a typed WHERE and EXCLUDE_SEEN admit
/// exactly what the interpreter and the seen set say; RECSYS.INFO says
/// which path the catalog takes, and INFO counts where requests ran.
#[test]
fn small_catalogs_are_scanned_exactly_on_the_main_thread() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(1500, DIM, 77);
    load_catalog(&mut c, "cat", &vs, "EF_SEARCH 100");
    let items: Vec<(String, Vec<f32>)> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("item:{i}"), v.clone()))
        .collect();
    let info: Value = redis::cmd("RECSYS.INFO").arg("cat").query(&mut c).unwrap();
    let text = format!("{info:?}");
    assert!(text.contains("exact scan"), "{text}");
    assert_eq!(info_field(&mut c, "cat", "scan_up_to"), 2000);

    let inline_before = recsys_counter(&mut c, "requests_inline");
    let workers_before = recsys_counter(&mut c, "requests_on_workers");
    for q in vectors(30, DIM, 78) {
        assert_eq!(
            search_ids(&mut c, "cat", &q, 10),
            exact_ids(&items, &q, 10),
            "a scanned catalog answers exactly"
        );
    }
    assert_eq!(
        recsys_counter(&mut c, "requests_inline") - inline_before,
        30
    );
    assert_eq!(
        recsys_counter(&mut c, "requests_on_workers"),
        workers_before
    );

    // Attributes: a price per item; a user who saw 40 items.
    let mut p = redis::pipe();
    for i in 0..1500 {
        p.cmd("RECSYS.ITEM.SETATTRS")
            .arg("cat")
            .arg(format!("item:{i}"))
            .arg(format!(
                r#"{{"price":{}.5,"in_stock":{}}}"#,
                i % 97,
                i % 4 != 0
            ))
            .ignore();
    }
    for i in 0..40 {
        p.cmd("RECSYS.EVENT")
            .arg("cat")
            .arg("u")
            .arg(format!("item:{}", i * 37))
            .ignore();
    }
    p.cmd("HSET")
        .arg("u")
        .arg("emb")
        .arg(to_fp32_blob(&vs[3]))
        .ignore();
    p.query::<()>(&mut c).unwrap();
    let seen: Vec<String> = (0..40).map(|i| format!("item:{}", i * 37)).collect();
    let typed = "in_stock && price < 20";
    let interpreted = "(in_stock && price < 20) || false";
    let a = rec(&mut c, "u", &["K", "50", "EXCLUDE_SEEN", "WHERE", typed]);
    let b = rec(
        &mut c,
        "u",
        &["K", "50", "EXCLUDE_SEEN", "WHERE", interpreted],
    );
    assert_eq!(a, b, "typed terms answer as the interpreter does");
    assert_eq!(a.len(), 50);
    let passing: Vec<(String, Vec<f32>)> = items
        .iter()
        .enumerate()
        .filter(|(i, (id, _))| i % 4 != 0 && (i % 97) < 20 && !seen.contains(id))
        .map(|(_, item)| item.clone())
        .collect();
    assert_eq!(
        a,
        exact_ids(&passing, &vs[3], 50),
        "exactly the best 50 unseen items that pass WHERE"
    );

    // A WHERE never seen before is compiled on a worker, never on the main
    // thread; once compiled, the same request runs inline.
    let fresh = "price >= 96";
    let workers_before = recsys_counter(&mut c, "requests_on_workers");
    let inline_before = recsys_counter(&mut c, "requests_inline");
    let first = rec(&mut c, "u", &["K", "5", "WHERE", fresh]);
    assert_eq!(
        recsys_counter(&mut c, "requests_on_workers"),
        workers_before + 1
    );
    assert_eq!(rec(&mut c, "u", &["K", "5", "WHERE", fresh]), first);
    assert_eq!(recsys_counter(&mut c, "requests_inline"), inline_before + 1);

    // A long history is work too: a user with 10,000 seen items (hashes of
    // ids the catalog may not have) is answered on a worker.
    let seen: Vec<u8> = (0u64..10_000)
        .flat_map(|i| (i * 0x9E37_79B9_7F4A_7C15).to_le_bytes())
        .collect();
    let _: () = redis::cmd("HSET")
        .arg("heavy")
        .arg("emb")
        .arg(to_fp32_blob(&vs[3]))
        .arg("seen")
        .arg(seen)
        .query(&mut c)
        .unwrap();
    let (inline_before, workers_before) = (
        recsys_counter(&mut c, "requests_inline"),
        recsys_counter(&mut c, "requests_on_workers"),
    );
    assert_eq!(rec(&mut c, "heavy", &["K", "10", "EXCLUDE_SEEN"]).len(), 10);
    assert_eq!(recsys_counter(&mut c, "requests_inline"), inline_before);
    assert_eq!(
        recsys_counter(&mut c, "requests_on_workers"),
        workers_before + 1
    );
    // Without EXCLUDE_SEEN the history is not read: inline again.
    assert_eq!(rec(&mut c, "heavy", &["K", "10"]).len(), 10);
    assert_eq!(recsys_counter(&mut c, "requests_inline"), inline_before + 1);
}

#[test]
fn exclude_lists_and_min_score_change_the_answer_as_they_say() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = shop(&mut c);
    set_emb(&mut c, "u", &vs[7]);
    let with_scores = |c: &mut Connection, opts: &[&str]| -> Vec<(String, f32)> {
        let flat: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
            .arg("cat")
            .arg("u")
            .arg(opts)
            .arg("WITHSCORES")
            .query(c)
            .unwrap();
        flat.chunks(2)
            .map(|p| (p[0].clone(), p[1].parse().unwrap()))
            .collect()
    };
    let plain = rec(&mut c, "u", &["K", "20"]);
    // EXCLUDE: the listed ids never come back, the next ones move up, and
    // an id the catalog does not have is no error.
    let dropped = [&plain[0], &plain[3], &plain[4]];
    let mut opts = vec!["K", "20", "EXCLUDE", "4", "no-such-item"];
    opts.extend(dropped.iter().map(|s| s.as_str()));
    let excluded = rec(&mut c, "u", &opts);
    let want: Vec<&String> = plain.iter().filter(|id| !dropped.contains(id)).collect();
    assert_eq!(excluded.len(), 20);
    assert_eq!(excluded[..17].iter().collect::<Vec<_>>(), want);
    // It adds to EXCLUDE_SEEN rather than replacing it.
    cmd(&mut c, &format!("RECSYS.EVENT cat u {}", plain[1])).unwrap();
    let both = rec(
        &mut c,
        "u",
        &["K", "20", "EXCLUDE_SEEN", "EXCLUDE", "1", plain[0].as_str()],
    );
    assert!(
        !both.contains(&plain[0]) && !both.contains(&plain[1]),
        "{both:?}"
    );
    // MIN_SCORE: a floor between the 5th and 6th scores keeps 5.
    let scored = with_scores(&mut c, &["K", "20"]);
    let floor = (scored[4].1 + scored[5].1) / 2.0;
    let floored = with_scores(&mut c, &["K", "20", "MIN_SCORE", &floor.to_string()]);
    assert_eq!(floored, scored[..5].to_vec());
    let r = cmd(
        &mut c,
        &format!("RECSYS.RECOMMEND cat u K 20 MIN_SCORE {floor} EXPLAIN"),
    )
    .unwrap();
    let explain = format!("{r:?}");
    assert!(explain.contains("below_min_score"), "{explain}");
    // Cold start (popularity) has no similarity: MIN_SCORE leaves it alone.
    assert_eq!(
        rec(&mut c, "nobody", &["K", "5", "MIN_SCORE", "1e9"]).len(),
        5
    );
    // Bad input.
    for (opts, want) in [
        ("K 5 EXCLUDE 0", "EXCLUDE count"),
        ("K 5 EXCLUDE 3 a b", "EXCLUDE id"),
        ("K 5 EXCLUDE x", "EXCLUDE count"),
        ("K 5 MIN_SCORE nan", "MIN_SCORE must be a finite number"),
        ("K 5 MIN_SCORE", "MIN_SCORE"),
    ] {
        let e = err_line(&mut c, &format!("RECSYS.RECOMMEND cat u {opts}"));
        assert!(e.contains(want), "{opts}: {e}");
    }
}

/// POSITIVE / NEGATIVE through Redis (3,000 items: an exact scan, so the
/// answer must equal the exact computation): AVERAGE with a user, BEST_SCORE
/// keyless, missing ids counted, examples never returned, bad input refused.
#[test]
fn examples_steer_recommendations_exactly() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = shop(&mut c);
    let unit = |v: &[f32]| -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    };
    let cos =
        |a: &[f32], b: &[f32]| -> f32 { unit(a).iter().zip(unit(b)).map(|(x, y)| x * y).sum() };
    let exact = |k: usize, skip: &[usize], score: &dyn Fn(&[f32]) -> Option<f32>| {
        let mut all: Vec<(usize, f32)> = (0..N)
            .filter(|i| !skip.contains(i))
            .filter_map(|i| score(&vs[i]).map(|s| (i, s)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.iter()
            .take(k)
            .map(|(i, _)| format!("i{i}"))
            .collect::<Vec<_>>()
    };
    // AVERAGE with the user's emb as a positive of weight 1: q = 2P - N.
    set_emb(&mut c, "u", &vs[7]);
    let got = rec(
        &mut c,
        "u",
        &[
            "K", "10", "POSITIVE", "2", "i100", "WEIGHT", "3", "nope", "NEGATIVE", "1", "i200",
        ],
    );
    let (a, b, n) = (unit(&vs[7]), unit(&vs[100]), unit(&vs[200]));
    let q: Vec<f32> = (0..DIM)
        .map(|d| 2.0 * (a[d] + 3.0 * b[d]) / 4.0 - n[d])
        .collect();
    let want = exact(10, &[100, 200], &|x| Some(cos(&q, x)));
    assert_eq!(got, want);
    let plain = rec(&mut c, "u", &["K", "10"]);
    assert_ne!(got, plain, "the examples must change the answer");
    // BEST_SCORE without a user (key "-"): the best similarity to either
    // positive, items nearer the negative dropped.
    let got = rec(
        &mut c,
        "-",
        &[
            "K",
            "10",
            "POSITIVE",
            "2",
            "i1",
            "i2",
            "NEGATIVE",
            "1",
            "i3",
            "STRATEGY",
            "BEST_SCORE",
        ],
    );
    let want = exact(10, &[1, 2, 3], &|x| {
        let best = cos(&vs[1], x).max(cos(&vs[2], x));
        (best >= cos(&vs[3], x)).then_some(best)
    });
    assert_eq!(got, want);
    let avg = rec(&mut c, "-", &["K", "10", "POSITIVE", "2", "i1", "i2"]);
    assert_ne!(got, avg, "BEST_SCORE is not the average");
    let r = cmd(
        &mut c,
        "RECSYS.RECOMMEND cat - K 5 POSITIVE 2 i1 gone NEGATIVE 1 i3 STRATEGY best_score EXPLAIN",
    )
    .unwrap();
    let explain = format!("{r:?}");
    for field in [
        "examples_used\"'), int(2)",
        "examples_missing\"'), int(1)",
        "POSITIVE examples",
    ] {
        assert!(explain.contains(field), "{field}: {explain}");
    }
    // Bad input.
    for (opts, want) in [
        ("K 5 POSITIVE 0 i1", "POSITIVE count"),
        ("K 5 POSITIVE 2 i1", "POSITIVE id"),
        (
            "K 5 POSITIVE 1 i1 WEIGHT 0",
            "example WEIGHT must be a finite number above 0",
        ),
        (
            "K 5 POSITIVE 1 i1 WEIGHT inf",
            "example WEIGHT must be a finite number",
        ),
        ("K 5 POSITIVE 1 i1 WEIGHT -2", "above 0"),
        (
            "K 5 POSITIVE 1 i1 STRATEGY MAX",
            "unknown STRATEGY 'MAX', expected AVERAGE or BEST_SCORE",
        ),
        ("K 5 WEIGHT 2", "WEIGHT must follow"),
        ("K 5 POSITIVE 1 nope", "none of the 1 POSITIVE examples"),
        ("K 5 NEGATIVE 1 i1", "NEGATIVE examples need"),
    ] {
        let e = err_line(&mut c, &format!("RECSYS.RECOMMEND cat - {opts}"));
        assert!(e.contains(want), "{opts}: {e}");
    }
}

/// The user hash stays readable by text clients: RECSYS.EVENT writes
/// `seen` as text; a hash written in the older binary form still works,
/// becomes text at its next EVENT, and `recsys migrate-users` converts the
/// rest without losing an item.
#[test]
fn user_hashes_stay_text_and_old_binary_ones_migrate() {
    use recsys::user::SeenSet;
    let s = server();
    let mut c = s.connection().unwrap();
    shop(&mut c);
    let all_text = |c: &mut Connection, key: &str| -> bool {
        let fields: Vec<Vec<u8>> = redis::cmd("HGETALL").arg(key).query(c).unwrap();
        !fields.is_empty() && fields.iter().all(|f| std::str::from_utf8(f).is_ok())
    };
    cmd(&mut c, "RECSYS.EVENT cat fresh i1").unwrap();
    cmd(&mut c, "RECSYS.EVENT cat fresh i2").unwrap();
    assert!(all_text(&mut c, "fresh"));
    // Two hashes in the older binary form (as written before).
    let old = SeenSet::from_ids(["i5", "i6", "i7"]).to_bytes();
    for key in ["old:a", "old:b"] {
        let _: () = redis::cmd("HSET")
            .arg(key)
            .arg("seen")
            .arg(&old)
            .query(&mut c)
            .unwrap();
        assert!(!all_text(&mut c, key), "the test can fail");
    }
    let seen_items = |c: &mut Connection, key: &str| -> SeenSet {
        let raw: Vec<u8> = redis::cmd("HGET").arg(key).arg("seen").query(c).unwrap();
        SeenSet::parse(Some(&raw), || key.into()).unwrap()
    };
    // Read as it is; rewritten as text by the next EVENT (even one that
    // adds nothing new).
    let got = rec(&mut c, "old:a", &["K", "3000", "EXCLUDE_SEEN"]);
    assert!(!got
        .iter()
        .any(|id| ["i5", "i6", "i7"].contains(&id.as_str())));
    cmd(&mut c, "RECSYS.EVENT cat old:a i5").unwrap();
    assert!(all_text(&mut c, "old:a"));
    assert_eq!(
        seen_items(&mut c, "old:a"),
        SeenSet::from_ids(["i5", "i6", "i7"])
    );
    // The migration converts the other one and leaves text ones alone.
    let mut con = s.connection().unwrap();
    let m = recsys_cli::verbs::migrate::migrate(&mut con, "*").unwrap();
    assert_eq!(m.rewritten, 1, "{m:?}");
    assert!(all_text(&mut c, "old:b"));
    assert_eq!(
        seen_items(&mut c, "old:b"),
        SeenSet::from_ids(["i5", "i6", "i7"])
    );
    assert_eq!(
        recsys_cli::verbs::migrate::migrate(&mut con, "*")
            .unwrap()
            .rewritten,
        0
    );
    // A value in neither form is an error that says what is expected.
    cmd(&mut c, "HSET broken seen xyz").unwrap();
    let e = err_line(&mut c, "RECSYS.RECOMMEND cat broken EXCLUDE_SEEN");
    assert!(e.contains("base64 of 8-byte item hashes"), "{e}");
}

/// SOURCES through Redis (3,000 items: exact scans): the merged answer
/// equals a reciprocal rank fusion of each source's own answer computed
/// here, WITHSOURCE names the source that ranked each item best, `similar`
/// equals the exact nearest items to the recent ones, FALLBACK fills K.
#[test]
fn sources_merge_by_rrf_and_fallback_fills_k() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = shop(&mut c);
    set_emb(&mut c, "u", &vs[11]);
    // Popularity: item i{3*j} gets 100 - j.
    let mut pop = vec![
        "RECSYS.POPULARITY.SET".to_string(),
        "cat".into(),
        "EPOCH".into(),
        "0".into(),
    ];
    for j in 0..30 {
        pop.extend([format!("i{}", 3 * j), (100 - j).to_string()]);
    }
    let _: () = redis::cmd(&pop[0]).arg(&pop[1..]).query(&mut c).unwrap();
    let user_list = rec(&mut c, "u", &["K", "6", "SOURCES", "1", "user", "6"]);
    assert_eq!(
        user_list,
        rec(&mut c, "u", &["K", "6"]),
        "SOURCES 1 user = plain"
    );
    let popular = rec(&mut c, "u", &["K", "6", "SOURCES", "1", "popular", "6"]);
    assert_eq!(
        popular,
        (0..6).map(|j| format!("i{}", 3 * j)).collect::<Vec<_>>()
    );
    // The reference RRF merge of the two lists.
    let mut fused: HashMap<String, (f64, usize, &str)> = HashMap::new();
    for (name, list) in [("user", &user_list), ("popular", &popular)] {
        for (rank, id) in list.iter().enumerate() {
            let e = fused.entry(id.clone()).or_insert((0.0, usize::MAX, name));
            e.0 += 1.0 / (60.0 + rank as f64 + 1.0);
            if rank < e.1 {
                (e.1, e.2) = (rank, name);
            }
        }
    }
    let mut want: Vec<(String, (f64, usize, &str))> = fused.into_iter().collect();
    want.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0).then(num(&a.0).cmp(&num(&b.0))));
    let got: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg(&[
            "cat",
            "u",
            "K",
            "8",
            "SOURCES",
            "2",
            "user",
            "6",
            "popular",
            "6",
            "WITHSOURCE",
        ])
        .query(&mut c)
        .unwrap();
    let pairs: Vec<(String, String)> = got
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    assert_eq!(pairs.len(), 8);
    for ((id, source), (wid, (_, _, wsource))) in pairs.iter().zip(&want) {
        assert_eq!(
            (id.as_str(), source.as_str()),
            (wid.as_str(), *wsource),
            "{pairs:?}"
        );
    }
    // `similar`: the items nearest the user's recent ones (never those).
    for id in ["i40", "i41", "i42"] {
        cmd(&mut c, &format!("RECSYS.EVENT cat v {id}")).unwrap();
    }
    let cos = |a: &[f32], b: &[f32]| -> f32 {
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (n(a) * n(b))
    };
    let mut best: Vec<(usize, f32)> = (0..N)
        .filter(|i| ![40, 41, 42].contains(i))
        .map(|i| {
            (
                i,
                [40, 41, 42]
                    .iter()
                    .map(|&s| cos(&vs[s], &vs[i]))
                    .fold(f32::MIN, f32::max),
            )
        })
        .collect();
    best.sort_by(|a, b| b.1.total_cmp(&a.1));
    let want: Vec<String> = best.iter().take(10).map(|(i, _)| format!("i{i}")).collect();
    assert_eq!(
        rec(&mut c, "v", &["K", "10", "SOURCES", "1", "similar", "10"]),
        want
    );
    // FALLBACK: a floor no item reaches leaves nothing; popular items fill
    // K, still admitted by WHERE.
    let floor = ["K", "5", "MIN_SCORE", "2", "WHERE", "genre != \"g0\""];
    assert!(rec(&mut c, "u", &floor).is_empty());
    let mut opts = floor.to_vec();
    opts.extend(["FALLBACK", "popular", "WITHSOURCE"]);
    let filled: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("u")
        .arg(&opts)
        .query(&mut c)
        .unwrap();
    let filled: Vec<(String, String)> = filled
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    let want: Vec<String> = (0..30)
        .map(|j| 3 * j)
        .filter(|i| i % 5 != 0)
        .take(5)
        .map(|i| format!("i{i}"))
        .collect();
    assert_eq!(filled.iter().map(|p| p.0.clone()).collect::<Vec<_>>(), want);
    assert!(filled.iter().all(|p| p.1 == "fallback"));
    // Bad input.
    for (opts, want) in [
        ("K 5 SOURCES 0", "SOURCES count"),
        (
            "K 5 SOURCES 1 latest 5",
            "unknown source 'latest', expected user, similar or popular",
        ),
        ("K 5 SOURCES 2 user 5 user 5", "named twice"),
        (
            "K 5 SOURCES 1 user 3",
            "add up to 3 candidates, expected between K (5)",
        ),
        ("K 5 SOURCES 1 user 5 MERGE MAX", "unknown MERGE 'MAX'"),
        ("K 5 MERGE RRF", "MERGE needs SOURCES"),
        (
            "K 5 FALLBACK oldest",
            "unknown FALLBACK 'oldest', expected popular or latest",
        ),
    ] {
        let e = err_line(&mut c, &format!("RECSYS.RECOMMEND cat u {opts}"));
        assert!(e.contains(want), "{opts}: {e}");
    }
}
