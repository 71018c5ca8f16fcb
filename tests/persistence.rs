//! Persistence: DEBUG RELOAD, restart from RDB, restart from AOF (with and
//! without the RDB preamble), and corrupt or truncated payloads that must fail
//! cleanly without taking the server down.

mod common;
use common::*;
use redis::{Connection, Value};

fn fill(c: &mut Connection) -> Vec<Vec<f32>> {
    let vs = vectors(1500, 24, 11);
    load_catalog(c, "cat", &vs, "METRIC COSINE M 12");
    cmd(c, "RECSYS.ITEM.SET cat special VALUES 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 ATTRS {\"k\":\"v\"}").unwrap();
    let removed: i64 = redis::cmd("RECSYS.ITEM.DEL")
        .arg("cat")
        .arg("item:3")
        .arg("item:4")
        .query(c)
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(session_default(c), "off");
    cmd(c, "RECSYS.ALTER cat SESSION 5 0.5").unwrap();
    vs
}

/// The catalog's default SESSION blend as INFO shows it.
fn session_default(c: &mut Connection) -> String {
    let info: Vec<Value> = redis::cmd("RECSYS.INFO").arg("cat").query(c).unwrap();
    let at = info
        .iter()
        .position(|v| redis::from_redis_value::<String>(v).ok().as_deref() == Some("session"))
        .expect("INFO has session");
    redis::from_redis_value(&info[at + 1]).unwrap()
}

/// Answers to a fixed set of queries, to compare before and after.
fn answers(c: &mut Connection, vs: &[Vec<f32>]) -> Vec<Vec<String>> {
    vs.iter()
        .step_by(97)
        .map(|q| search_ids(c, "cat", q, 10))
        .collect()
}

fn check_same(c: &mut Connection, vs: &[Vec<f32>], before: &[Vec<String>]) {
    assert_eq!(info_field(c, "cat", "items"), 1499);
    assert_eq!(&answers(c, vs), before, "answers changed across reload");
    let got: Vec<Value> = redis::cmd("RECSYS.ITEM.GET")
        .arg("cat")
        .arg("special")
        .query(c)
        .unwrap();
    assert_eq!(
        redis::from_redis_value::<String>(&got[3]).unwrap(),
        r#"{"k":"v"}"#
    );
    assert_eq!(cmd(c, "RECSYS.ITEM.GET cat item:3").unwrap(), Value::Nil);
    assert_eq!(session_default(c), "5 0.5");
}

#[test]
fn debug_reload_keeps_the_graph() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = fill(&mut c);
    let before = answers(&mut c, &vs);
    cmd(&mut c, "DEBUG RELOAD").unwrap();
    check_same(&mut c, &vs, &before);
}

#[test]
fn restart_from_rdb() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = fill(&mut c);
    let before = answers(&mut c, &vs);
    let module = s.module.clone();
    let dir = s.stop(true);
    assert!(dir.path().join("dump.rdb").exists());
    let s = RedisServer::start_in(dir, &module, &[], &[]).unwrap();
    let mut c = s.connection().unwrap();
    check_same(&mut c, &vs, &before);
}

fn aof_restart(preamble: &str) {
    let extra = ["--appendonly", "yes", "--aof-use-rdb-preamble", preamble];
    let s = server_with(&[], &extra);
    let mut c = s.connection().unwrap();
    let vs = fill(&mut c);
    let before = answers(&mut c, &vs);
    // Once from the command log, once after a rewrite.
    let module = s.module.clone();
    let dir = s.stop(false);
    let s = RedisServer::start_in(dir, &module, &[], &extra).unwrap();
    let mut c = s.connection().unwrap();
    check_same(&mut c, &vs, &before);
    cmd(&mut c, "BGREWRITEAOF").unwrap();
    for _ in 0..200 {
        let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
        if info.contains("aof_rewrite_in_progress:0") && !info.contains("aof_rewrite_scheduled:1") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dir = s.stop(false);
    let s = RedisServer::start_in(dir, &module, &[], &extra).unwrap();
    let mut c = s.connection().unwrap();
    assert_eq!(info_field(&mut c, "cat", "items"), 1499);
    // A rewritten AOF rebuilds the graph from the items: same items, and
    // answers that agree with the exact neighbours.
    let items: Vec<(String, Vec<f32>)> = vs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(i, v)| (format!("item:{i}"), v.clone()))
        .collect();
    let mut hits = 0;
    let qs: Vec<&Vec<f32>> = vs.iter().step_by(97).collect();
    for q in &qs {
        let got = search_ids(&mut c, "cat", q, 10);
        let exact = exact_ids(&items, q, 10);
        hits += got.iter().filter(|g| exact.contains(g)).count();
    }
    assert!(hits as f64 / (10 * qs.len()) as f64 >= 0.95);
    let got: Vec<Value> = redis::cmd("RECSYS.ITEM.GET")
        .arg("cat")
        .arg("special")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        redis::from_redis_value::<String>(&got[3]).unwrap(),
        r#"{"k":"v"}"#
    );
    let p: Vec<Value> = redis::cmd("RECSYS.INFO").arg("cat").query(&mut c).unwrap();
    assert!(format!("{p:?}").contains("COSINE"));
    assert_eq!(info_field(&mut c, "cat", "m"), 12);
    assert_eq!(session_default(&mut c), "5 0.5");
}

#[test]
fn restart_from_aof_with_commands_only() {
    aof_restart("no");
}

#[test]
fn restart_from_aof_with_rdb_preamble() {
    aof_restart("yes");
}

#[test]
fn corrupt_and_truncated_payloads_fail_cleanly() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(300, 8, 5);
    load_catalog(&mut c, "cat", &vs, "");
    let dump: Vec<u8> = redis::cmd("DUMP").arg("cat").query(&mut c).unwrap();
    // A faithful DUMP restores.
    let _: () = redis::cmd("RESTORE")
        .arg("copy")
        .arg(0)
        .arg(&dump)
        .query(&mut c)
        .unwrap();
    assert_eq!(info_field(&mut c, "copy", "items"), 300);
    // Skip the checksum so corrupt bodies reach the module's loader.
    cmd(&mut c, "DEBUG SET-SKIP-CHECKSUM-VALIDATION 1").unwrap();
    let body = dump.len() - 10; // RDB version (2 bytes) + CRC64 (8 bytes) trail the body
    let mut rejected = 0;
    for cut in [5, 12, 40, body / 2, body - 3] {
        let mut bad = dump[..cut].to_vec();
        bad.extend_from_slice(&dump[body..]);
        if redis::cmd("RESTORE")
            .arg("bad")
            .arg(0)
            .arg(&bad)
            .query::<()>(&mut c)
            .is_err()
        {
            rejected += 1;
        }
    }
    assert_eq!(rejected, 5, "every truncated payload is refused");
    let mut seed = 7u64;
    for _ in 0..200 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut bad = dump.clone();
        let i = 1 + (seed >> 33) as usize % (body - 1);
        bad[i] ^= 1 << ((seed >> 20) % 8);
        let _ = redis::cmd("DEL").arg("bad").query::<i64>(&mut c);
        if redis::cmd("RESTORE")
            .arg("bad")
            .arg(0)
            .arg(&bad)
            .query::<()>(&mut c)
            .is_ok()
        {
            // Whatever loaded must be usable.
            let _ = redis::cmd("RECSYS.SEARCH")
                .arg("bad")
                .arg(5)
                .arg("FP32")
                .arg(recsys::vector::to_fp32_blob(&vs[0]))
                .query::<Value>(&mut c);
            let _ = redis::cmd("RECSYS.INFO").arg("bad").query::<Value>(&mut c);
        }
    }
    assert_eq!(
        cmd(&mut c, "PING").unwrap(),
        Value::SimpleString("PONG".into())
    );
    assert_eq!(info_field(&mut c, "cat", "items"), 300);
    let log = std::fs::read_to_string(s.dir.path().join("redis.log")).unwrap();
    assert!(
        log.contains("recsys: corrupt catalog"),
        "a log line names the bad payload"
    );
}
