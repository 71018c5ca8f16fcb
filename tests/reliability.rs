//! What hostile input, races and odd operations must not break: each test
//! reproduces a failure seen from outside, through a real redis-server.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recsys::vector::to_fp32_blob;
use recsys_cli::server::{find_module, free_port};

fn ping(c: &mut redis::Connection) {
    let pong: String = redis::cmd("PING").query(c).expect("server still answers");
    assert_eq!(pong, "PONG");
}

fn replace_all(haystack: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= haystack.len() {
        if &haystack[i..i + from.len()] == from {
            haystack[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}

#[test]
fn restored_payload_with_a_nul_id_twice_is_refused_cleanly() {
    // Uncompressed RDB strings, so the ids can be edited in the DUMP payload.
    let s = server_with(&[], &["--rdbcompression", "no"]);
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 2").unwrap();
    call(
        &mut c,
        &[b"RECSYS.ITEM.SET", b"cat", b"x\0a", b"VALUES", b"1", b"0"],
    )
    .unwrap();
    call(
        &mut c,
        &[b"RECSYS.ITEM.SET", b"cat", b"x\0b", b"VALUES", b"0", b"1"],
    )
    .unwrap();
    let mut payload: Vec<u8> = redis::cmd("DUMP").arg("cat").query(&mut c).unwrap();
    // Both ids become "x\0a": a duplicate id whose name holds a NUL byte.
    assert_eq!(replace_all(&mut payload, b"x\0b", b"x\0a"), 1);
    cmd(&mut c, "DEBUG SET-SKIP-CHECKSUM-VALIDATION 1").unwrap();
    let e = redis::cmd("RESTORE")
        .arg("copy")
        .arg(0)
        .arg(payload)
        .query::<()>(&mut c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Bad data format"), "{e}");
    ping(&mut c);
    let log = std::fs::read_to_string(s.dir.path().join("redis.log")).unwrap();
    assert!(log.contains("duplicate item id"), "the refusal is logged");
    // The module's own log lines survive any module argument too.
    let e = redis::cmd("MODULE")
        .arg("LOAD")
        .arg(s.module.to_string_lossy().to_string())
        .arg("FOO\0")
        .arg("1")
        .query::<()>(&mut c);
    assert!(e.is_err());
    ping(&mut c);
}

#[test]
fn event_with_a_nul_item_id_is_applied_and_replicated_exactly() {
    let master = server_with(&[], &["--appendonly", "yes"]);
    let mut m = master.connection().unwrap();
    let replica = server_with(&[], &["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let mut r = replica.connection().unwrap();
    cmd(&mut m, "RECSYS.CREATE cat DIM 2").unwrap();
    call(
        &mut m,
        &[b"RECSYS.ITEM.SET", b"cat", b"a\0b", b"VALUES", b"1", b"0"],
    )
    .unwrap();
    cmd(&mut m, "RECSYS.ITEM.SET cat plain VALUES 0 1").unwrap();
    let n: i64 = redis::cmd("RECSYS.EVENT")
        .arg("cat")
        .arg("u:1")
        .arg(&b"a\0b"[..])
        .query(&mut m)
        .unwrap();
    assert_eq!(n, 1);
    let want: Vec<u8> = redis::cmd("HGET")
        .arg("u:1")
        .arg("recent")
        .query(&mut m)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got: Option<Vec<u8>> = redis::cmd("HGET")
            .arg("u:1")
            .arg("recent")
            .query(&mut r)
            .unwrap();
        if got.as_deref() == Some(&want[..]) {
            break;
        }
        assert!(Instant::now() < deadline, "the replica never saw the event");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The replica's popularity counts it too: cold start puts it first.
    let cold: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("nobody")
        .arg("K")
        .arg(1)
        .query(&mut r)
        .unwrap();
    assert_eq!(cold, vec!["a\0b".to_string()]);
    // A user key with a NUL byte goes through BATCH like any other.
    call(&mut m, &[b"HSET", b"u:\0x", b"recent", b"[\"plain\"]"]).unwrap();
    let id = batch_id(
        &redis::cmd("RECSYS.BATCH")
            .arg("cat")
            .arg("MATCH")
            .arg("u:*")
            .arg("K")
            .arg(1)
            .arg("INTO")
            .arg("rec:")
            .query::<redis::Value>(&mut m)
            .unwrap(),
    );
    let status = wait_batch(&mut m, id);
    assert_eq!(status["errors"], "0", "{status:?}");
    assert_eq!(status["written"], "2", "{status:?}");
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(&b"rec:{u:\0x}"[..])
        .arg(0)
        .arg(-1)
        .query(&mut m)
        .unwrap();
    // Its session is "plain" alone, whose nearest item is itself.
    assert_eq!(list, vec!["plain".to_string()]);
}

/// Waits for a batch to finish; its status as text fields.
fn wait_batch(c: &mut redis::Connection, id: i64) -> std::collections::HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Vec<redis::Value> = redis::cmd("RECSYS.BATCH.STATUS").arg(id).query(c).unwrap();
        let fields: std::collections::HashMap<String, String> = v
            .chunks(2)
            .map(|p| {
                let k: String = redis::from_redis_value(&p[0]).unwrap();
                let v: String = redis::from_redis_value(&p[1]).unwrap_or_default();
                (k, v)
            })
            .collect();
        if fields["state"] != "running" {
            return fields;
        }
        assert!(Instant::now() < deadline, "batch {id} did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn batch_counts_failed_writes_as_errors() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(50, 4, 3);
    load_catalog(&mut c, "cat", &vs, "");
    for u in 0..300 {
        cmd(
            &mut c,
            &format!("HSET user:{u} recent [\"item:{}\"]", u % 50),
        )
        .unwrap();
    }
    // The batch starts, then maxmemory drops to the floor before it writes
    // anything (its thread waits for the transaction to end): every list
    // write must fail with OOM, and be counted so.
    redis::cmd("MULTI").query::<()>(&mut c).unwrap();
    cmd(&mut c, "RECSYS.BATCH cat MATCH user:* K 3 INTO rec:").unwrap();
    cmd(&mut c, "CONFIG SET maxmemory 1").unwrap();
    let replies: Vec<redis::Value> = redis::cmd("EXEC").query(&mut c).unwrap();
    let id = batch_id(&replies[0]);
    let status = wait_batch(&mut c, id);
    cmd(&mut c, "CONFIG SET maxmemory 0").unwrap();
    assert_eq!(status["state"], "done", "{status:?}");
    assert_eq!(status["users"], "300", "{status:?}");
    assert_eq!(status["written"], "0", "{status:?}");
    assert_eq!(status["errors"], "300", "{status:?}");
    assert!(status["last_error"].contains("OOM"), "{status:?}");
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 301, "no list was written");
}

#[test]
fn cold_start_under_concurrent_events_never_fails() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(2000, 8, 5);
    load_catalog(&mut c, "cat", &vs, "");
    let url = s.url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut w = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut p = redis::pipe();
                for _ in 0..100 {
                    i += 1;
                    p.cmd("RECSYS.EVENT")
                        .arg("cat")
                        .arg(format!("u:{}", i % 50))
                        .arg(format!("item:{}", (i * 7919) % 2000))
                        .arg("WEIGHT")
                        .arg(1 + (i % 5))
                        .ignore();
                }
                p.query::<()>(&mut w).unwrap();
            }
        })
    };
    for _ in 0..3000 {
        let ids: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
            .arg("cat")
            .arg("newcomer")
            .arg("K")
            .arg(10)
            .arg("CANDIDATES")
            .arg(2000)
            .query(&mut c)
            .expect("cold start while events arrive");
        assert_eq!(ids.len(), 10);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn event_times_and_weights_are_bounded_and_popularity_stays_finite() {
    let s = server();
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 2").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 0").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET cat b VALUES 0 1").unwrap();
    let e = err_line(&mut c, "RECSYS.EVENT cat u b TS 4611686018427387903");
    assert!(e.contains("TS must be between 0 and"), "{e}");
    let far = 4_000_000_000_000i64; // year 2096
    let e = err_line(&mut c, &format!("RECSYS.EVENT cat u b TS {far}"));
    assert!(e.contains("more than a day ahead"), "{e}");
    let e = err_line(&mut c, "RECSYS.EVENT cat u b WEIGHT 1e300");
    assert!(e.contains("WEIGHT must be between"), "{e}");
    // Nothing of the refused events stuck.
    let exists: i64 = redis::cmd("EXISTS").arg("u").query(&mut c).unwrap();
    assert_eq!(exists, 0);
    // Accepted events still count, in order of weight.
    cmd(&mut c, "RECSYS.EVENT cat u a WEIGHT 1").unwrap();
    cmd(&mut c, "RECSYS.EVENT cat u b WEIGHT 1000000").unwrap();
    cmd(&mut c, "RECSYS.EVENT cat u b WEIGHT 1000000").unwrap();
    let v: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("nobody")
        .arg("K")
        .arg(2)
        .arg("WITHSCORES")
        .query(&mut c)
        .unwrap();
    assert_eq!(v[0], "b");
    assert_eq!(v[2], "a");
    let (sb, sa): (f64, f64) = (v[1].parse().unwrap(), v[3].parse().unwrap());
    assert!(
        sb.is_finite() && sa.is_finite() && sb > sa && sa > 0.0,
        "{v:?}"
    );
}

/// A redis-server without the module (MODULE LOAD allowed); killed on drop.
struct Plain(
    std::process::Child,
    u16,
    #[allow(dead_code)] tempfile::TempDir,
);

impl Drop for Plain {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn plain_server() -> Plain {
    let port = free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(recsys_cli::server::server_binary())
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--enable-module-command", "yes", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut c) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|cl| cl.get_connection())
        {
            if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                return Plain(child, port, dir);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("plain redis-server did not start");
}

#[test]
fn a_failed_module_load_leaves_nothing_that_blocks_the_next_one() {
    let p = plain_server();
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/", p.1))
        .unwrap()
        .get_connection()
        .unwrap();
    let module = find_module().unwrap().to_string_lossy().to_string();
    let load = |c: &mut redis::Connection, args: &[&[u8]]| -> redis::RedisResult<()> {
        let mut cmd = redis::cmd("MODULE");
        cmd.arg("LOAD").arg(&module);
        for a in args {
            cmd.arg(*a);
        }
        cmd.query(c)
    };
    assert!(load(&mut c, &[b"FOO\0", b"1"]).is_err());
    assert!(load(&mut c, &[b"WORKERS", b"0"]).is_err());
    let gpu_present = load(&mut c, &[b"GPU", b"on"]).is_ok();
    if gpu_present {
        eprintln!("note: GPU on loaded (this machine has a GPU); the failure path is tested where there is none");
    } else {
        load(&mut c, &[]).expect("a plain load after failed ones");
    }
    cmd(&mut c, "RECSYS.CREATE cat DIM 2").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 0").unwrap();
    assert_eq!(search_ids(&mut c, "cat", &[1.0, 0.0], 1), vec!["a"]);
}

#[test]
fn where_expressions_have_a_size_shape_and_time_budget() {
    let s = server();
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 4").unwrap();
    let vs = vectors(20_000, 4, 9);
    for (chunk_no, chunk) in vs.chunks(1000).enumerate() {
        let mut p = redis::pipe();
        for (i, v) in chunk.iter().enumerate() {
            let n = chunk_no * 1000 + i;
            p.cmd("RECSYS.ITEM.SET")
                .arg("cat")
                .arg(format!("i{n}"))
                .arg("FP32")
                .arg(to_fp32_blob(v))
                .arg("ATTRS")
                .arg(format!(r#"{{"u":{n}}}"#))
                .ignore();
        }
        p.query::<()>(&mut c).unwrap();
    }
    let recommend = |c: &mut redis::Connection, w: &str| -> redis::RedisResult<Vec<String>> {
        redis::cmd("RECSYS.RECOMMEND")
            .arg("cat")
            .arg("nobody")
            .arg("K")
            .arg(5)
            .arg("VECTOR")
            .arg(to_fp32_blob(&vs[0]))
            .arg("WHERE")
            .arg(w)
            .query(c)
    };
    let big = "u == 1 || ".repeat(600) + "true";
    let e = recommend(&mut c, &big).unwrap_err().to_string();
    assert!(e.contains("the limit is 4096"), "{e}");
    let e = recommend(&mut c, "[1,2,3].all(a, [4,5,6].all(b, a != b))")
        .unwrap_err()
        .to_string();
    assert!(e.contains("inside another"), "{e}");
    // Allowed, but costly for every item and never true: the walk falls
    // back to scanning all 20,000 items and runs out of budget.
    let list: Vec<String> = (0..700).map(|i| i.to_string()).collect();
    let slow = format!("[{}].exists(x, x == u + 100000)", list.join(","));
    let t = Instant::now();
    let e = recommend(&mut c, &slow).unwrap_err().to_string();
    assert!(e.contains("evaluation budget"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the budget cut it short"
    );
    ping(&mut c);
    assert_eq!(recommend(&mut c, "u < 3").unwrap().len(), 3);
}

/// Runs a batch and waits for it: (written, denied) from its status.
fn batch_outcome(c: &mut redis::Connection, pattern: &str, into: &str) -> (String, String) {
    let id = batch_id(
        &redis::cmd("RECSYS.BATCH")
            .arg("tenantA:cat")
            .arg("MATCH")
            .arg(pattern)
            .arg("K")
            .arg(2)
            .arg("INTO")
            .arg(into)
            .query::<redis::Value>(c)
            .unwrap(),
    );
    let st = wait_batch(c, id);
    (st["written"].clone(), st["denied"].clone())
}

#[test]
fn batch_reads_and_writes_only_keys_the_caller_may() {
    let s = server();
    let mut admin = s.connection().unwrap();
    let vs = vectors(20, 4, 3);
    load_catalog(&mut admin, "tenantA:cat", &vs, "");
    for u in 0..5 {
        cmd(
            &mut admin,
            &format!("HSET tenantA:u{u} recent [\"item:{u}\"]"),
        )
        .unwrap();
        cmd(
            &mut admin,
            &format!("HSET secret:u{u} recent [\"item:{u}\"]"),
        )
        .unwrap();
    }
    cmd(&mut admin, "ACL SETUSER tenant on >pw ~tenantA:* +@all").unwrap();
    let mut t = redis::Client::open(format!("redis://tenant:pw@127.0.0.1:{}/", s.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let pair = |w: &str, d: &str| (w.to_string(), d.to_string());
    // Another tenant's users: scanned but not read, no list written.
    assert_eq!(
        batch_outcome(&mut t, "secret:*", "tenantA:out:"),
        pair("0", "5")
    );
    // Lists outside the user's keys are not written either.
    assert_eq!(batch_outcome(&mut t, "tenantA:u*", "x:"), pair("0", "5"));
    let leaked: Vec<String> = redis::cmd("KEYS").arg("x:*").query(&mut admin).unwrap();
    assert!(leaked.is_empty(), "{leaked:?}");
    // An empty prefix would overwrite the hashes themselves.
    let e = err(
        &mut t,
        &[
            b"RECSYS.BATCH",
            b"tenantA:cat",
            b"MATCH",
            b"tenantA:u*",
            b"K",
            b"2",
            b"INTO",
            b"",
        ],
    );
    assert!(e.contains("INTO prefix must not be empty"), "{e}");
    // What the user may touch works.
    assert_eq!(
        batch_outcome(&mut t, "tenantA:u*", "tenantA:out:"),
        pair("5", "0")
    );
}

#[test]
fn code_installing_commands_are_admin_grade() {
    let s = server();
    let mut admin = s.connection().unwrap();
    let info: Vec<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("RECSYS.PLUGIN.LOAD")
        .arg("RECSYS.PLUGIN.DEL")
        .arg("RECSYS.MODEL.SET")
        .arg("RECSYS.MODEL.DEL")
        .query(&mut admin)
        .unwrap();
    for entry in &info {
        let text = format!("{entry:?}");
        assert!(text.contains("admin"), "flagged admin: {text}");
    }
    // Redis 7.0 has no module ACL categories: the documented rule for an
    // application user (docs/operations.md) keeps it from installing code.
    cmd(
        &mut admin,
        "ACL SETUSER app on >pw ~* +@all -@admin -@dangerous -recsys.plugin.load -recsys.plugin.del -recsys.model.set -recsys.model.del -recsys.plugin_load -recsys.plugin_del -recsys.model_set -recsys.model_del",
    )
    .unwrap();
    let mut app = redis::Client::open(format!("redis://app:pw@127.0.0.1:{}/", s.port))
        .unwrap()
        .get_connection()
        .unwrap();
    for line in [
        "RECSYS.PLUGIN.DEL anything",
        "RECSYS.PLUGIN.LOAD p xyz",
        "RECSYS.MODEL.DEL cat m",
        "RECSYS.PLUGIN_DEL anything",
        "RECSYS.MODEL_DEL cat m",
    ] {
        let e = err_line(&mut app, line);
        assert!(
            e.contains("NOPERM") || e.contains("no permissions"),
            "{line}: {e}"
        );
    }
    cmd(&mut app, "RECSYS.CREATE cat DIM 2").unwrap();
    cmd(&mut app, "RECSYS.PLUGIN.LIST").unwrap();
}

/// Waits until no AOF rewrite is running or scheduled, and asserts one ran.
fn wait_rewrite(c: &mut redis::Connection, rewrites_before: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info: String = redis::cmd("INFO").arg("persistence").query(c).unwrap();
        let done =
            info.contains("aof_rewrite_in_progress:0") && !info.contains("aof_rewrite_scheduled:1");
        let count = info_line(&info, "aof_rewrites").unwrap_or(0);
        if done && count > rewrites_before {
            assert!(info.contains("aof_last_bgrewrite_status:ok"), "{info}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the rewrite did not finish: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn info_line(info: &str, field: &str) -> Option<i64> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn aof_rewrite_without_rdb_preamble_keeps_popularity_and_plugins() {
    let extra = ["--appendonly", "yes", "--aof-use-rdb-preamble", "no"];
    let s = server_with(&[], &extra);
    let mut c = s.connection().unwrap();
    let vs = vectors(30, 4, 8);
    load_catalog(&mut c, "cat", &vs, "");
    for (item, times) in [("item:7", 5), ("item:3", 3), ("item:20", 1)] {
        for _ in 0..times {
            cmd(&mut c, &format!("RECSYS.EVENT cat u {item}")).unwrap();
        }
    }
    redis::cmd("RECSYS.PLUGIN.LOAD")
        .arg("nostock")
        .arg(wasm("exclude-attr"))
        .query::<redis::Value>(&mut c)
        .unwrap();
    let cold = |c: &mut redis::Connection| -> Vec<String> {
        redis::cmd("RECSYS.RECOMMEND")
            .arg("cat")
            .arg("nobody")
            .arg("K")
            .arg(3)
            .arg("WITHSCORES")
            .query(c)
            .unwrap()
    };
    let before = cold(&mut c);
    assert_eq!(before[0], "item:7");
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
    let rewrites = info_line(&info, "aof_rewrites").unwrap_or(0);
    cmd(&mut c, "BGREWRITEAOF").unwrap();
    wait_rewrite(&mut c, rewrites);
    let module = s.module.clone();
    let dir = s.stop(false);
    let s = RedisServer::start_in(dir, &module, &[], &extra).unwrap();
    let mut c = s.connection().unwrap();
    let after = cold(&mut c);
    let ids = |v: &[String]| v.iter().step_by(2).cloned().collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before), "cold start order survives");
    for (a, b) in after.iter().zip(&before).skip(1).step_by(2) {
        let (a, b): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
        assert!((a - b).abs() <= 1e-3 * b.abs(), "scores {a} vs {b}");
    }
    let plugins: Vec<redis::Value> = redis::cmd("RECSYS.PLUGIN.LIST").query(&mut c).unwrap();
    assert_eq!(plugins.len(), 1, "the plugin survives: {plugins:?}");
    // POPULARITY.SET checks every pair before applying any.
    let e = err_line(
        &mut c,
        "RECSYS.POPULARITY.SET cat EPOCH 1000 item:1 2 nope 3",
    );
    assert!(e.contains("'nope' does not exist"), "{e}");
    let e = err_line(&mut c, "RECSYS.POPULARITY.SET cat EPOCH 1000 item:1 nan");
    assert!(e.contains("finite number"), "{e}");
    assert_eq!(ids(&cold(&mut c)), ids(&before));
}
