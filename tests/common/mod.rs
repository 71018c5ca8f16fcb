//! Shared helpers for the integration tests: a real redis-server with the
//! module on a free port, generated catalogs, and small query helpers.
#![allow(dead_code)]

use recsys::synth::clustered;
use recsys::vector::to_fp32_blob;
pub use recsys_cli::server::RedisServer;
use redis::{Connection, Value};

pub fn server() -> RedisServer {
    RedisServer::start(&[], &[]).expect("start redis-server with the module")
}

pub fn server_with(module_args: &[&str], extra: &[&str]) -> RedisServer {
    RedisServer::start(module_args, extra).expect("start redis-server with the module")
}

/// A reply value as text (ids, names, numbers).
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// A map reply (a RESP2 flat array or a RESP3 map) as pairs.
pub fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Array(a) => a
            .chunks_exact(2)
            .map(|p| (text(&p[0]), p[1].clone()))
            .collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        other => panic!("expected a map, got {other:?}"),
    }
}

/// The batch id of RECSYS.BATCH's reply (a map: `id`, `slots`).
pub fn batch_id(reply: &Value) -> i64 {
    let fields = pairs(reply);
    let slots = fields
        .iter()
        .find(|(k, _)| k == "slots")
        .map(|(_, v)| text(v));
    assert!(slots.is_some_and(|s| !s.is_empty()), "{reply:?}");
    match fields.iter().find(|(k, _)| k == "id") {
        Some((_, Value::Int(id))) => *id,
        _ => panic!("RECSYS.BATCH replied without an id: {reply:?}"),
    }
}

/// Runs a command and returns the raw reply (errors become `Err`).
pub fn call(c: &mut Connection, args: &[&[u8]]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

/// Runs a command given as words (text arguments only).
pub fn cmd(c: &mut Connection, line: &str) -> redis::RedisResult<Value> {
    let parts: Vec<&[u8]> = line.split_whitespace().map(|s| s.as_bytes()).collect();
    call(c, &parts)
}

/// The error text of a command that must fail.
pub fn err(c: &mut Connection, args: &[&[u8]]) -> String {
    match call(c, args) {
        Ok(v) => panic!(
            "expected an error from {:?}, got {v:?}",
            String::from_utf8_lossy(args[0])
        ),
        Err(e) => e.to_string(),
    }
}

pub fn err_line(c: &mut Connection, line: &str) -> String {
    let parts: Vec<&[u8]> = line.split_whitespace().map(|s| s.as_bytes()).collect();
    err(c, &parts)
}

/// Generated unit vectors of `dim` components (deterministic).
pub fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    clustered(n, dim, 20, 0.3, seed)
}

/// Creates `key` with DIM `dim` and loads `vs` as items "item:<i>" via MSET.
pub fn load_catalog(c: &mut Connection, key: &str, vs: &[Vec<f32>], create_opts: &str) {
    let dim = vs[0].len();
    cmd(c, &format!("RECSYS.CREATE {key} DIM {dim} {create_opts}")).expect("create");
    for (chunk_no, chunk) in vs.chunks(500).enumerate() {
        let mut c2 = redis::cmd("RECSYS.ITEM.MSET");
        c2.arg(key);
        for (i, v) in chunk.iter().enumerate() {
            c2.arg(format!("item:{}", chunk_no * 500 + i))
                .arg(to_fp32_blob(v));
        }
        let _: i64 = c2.query(c).expect("mset");
    }
}

/// Item ids of a SEARCH for `v`.
pub fn search_ids(c: &mut Connection, key: &str, v: &[f32], k: usize) -> Vec<String> {
    redis::cmd("RECSYS.SEARCH")
        .arg(key)
        .arg(k)
        .arg("FP32")
        .arg(to_fp32_blob(v))
        .query(c)
        .expect("search")
}

/// Exact top-k ids by brute force over `vs` (cosine on unit vectors).
pub fn exact_ids(vs: &[(String, Vec<f32>)], q: &[f32], k: usize) -> Vec<String> {
    let mut scored: Vec<(f32, &String)> = vs
        .iter()
        .map(|(id, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), id))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(k)
        .map(|(_, id)| id.clone())
        .collect()
}

/// `INFO section` as field -> value.
pub fn info(c: &mut Connection, section: &str) -> std::collections::BTreeMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

pub fn info_field(c: &mut Connection, key: &str, field: &str) -> i64 {
    let v: Vec<Value> = redis::cmd("RECSYS.INFO").arg(key).query(c).expect("info");
    let mut it = v.into_iter();
    while let (Some(k), Some(val)) = (it.next(), it.next()) {
        if redis::from_redis_value::<String>(&k).ok().as_deref() == Some(field) {
            return redis::from_redis_value(&val).expect("integer field");
        }
    }
    panic!("no field {field} in RECSYS.INFO");
}

/// A plugin component built by plugins/build.sh.
pub fn wasm(name: &str) -> Vec<u8> {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("plugins/dist/{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|_| panic!("{} missing: run plugins/build.sh", p.display()))
}

/// A file of tests/fixtures (generated ranking models).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The schema of the reference ranker fixture over the test catalogs: 8
/// dense user features d0..d7, 8 item categorical attributes c0..c7 (0..99).
pub fn ranker_schema() -> String {
    let dense = (0..8).map(|i| format!("DENSE user.d{i}"));
    let sparse = (0..8).map(|i| format!("SPARSE item.c{i} 100"));
    dense.chain(sparse).collect::<Vec<_>>().join(" ")
}

/// The user's `recent` field, parsed (newest first).
pub fn recent_items(c: &mut Connection, user: &str) -> Vec<String> {
    let recent: String = redis::cmd("HGET").arg(user).arg("recent").query(c).unwrap();
    serde_json::from_str(&recent).unwrap()
}
