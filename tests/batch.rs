//! RECSYS.BATCH: background recommendations for every matching user hash,
//! written as lists; RECSYS.BATCH.STATUS; replacement; replication; errors.

mod common;
use common::*;
use redis::{Connection, Value};
use std::time::{Duration, Instant};

fn status_field(c: &mut Connection, id: i64, field: &str) -> Value {
    let v: Vec<Value> = redis::cmd("RECSYS.BATCH.STATUS").arg(id).query(c).unwrap();
    let mut it = v.into_iter();
    while let (Some(k), Some(val)) = (it.next(), it.next()) {
        if redis::from_redis_value::<String>(&k).unwrap() == field {
            return val;
        }
    }
    panic!("no field {field}");
}

fn wait_done(c: &mut Connection, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let state: String = redis::from_redis_value(&status_field(c, id, "state")).unwrap();
        if state != "running" {
            assert_eq!(state, "done");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("batch {id} did not finish");
}

#[test]
fn batch_writes_lists_for_every_matching_user() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(2000, 16, 71);
    load_catalog(&mut c, "cat", &vs, "");
    // 500 users with vectors, 100 with histories only, one broken, one non-matching.
    let mut p = redis::pipe();
    for (u, v) in vs.iter().enumerate().take(500) {
        p.cmd("HSET")
            .arg(format!("user:{u}"))
            .arg("emb")
            .arg(recsys::vector::to_fp32_blob(v))
            .ignore();
    }
    for u in 500..600 {
        p.cmd("RECSYS.EVENT")
            .arg("cat")
            .arg(format!("user:{u}"))
            .arg(format!("item:{u}"))
            .ignore();
    }
    p.cmd("HSET")
        .arg("user:broken")
        .arg("emb")
        .arg("xyz")
        .ignore();
    p.cmd("HSET")
        .arg("other:1")
        .arg("emb")
        .arg(recsys::vector::to_fp32_blob(&vs[1]))
        .ignore();
    p.query::<()>(&mut c).unwrap();

    let id = batch_id(
        &redis::cmd("RECSYS.BATCH")
            .arg("cat")
            .arg("MATCH")
            .arg("user:*")
            .arg("K")
            .arg(5)
            .arg("INTO")
            .arg("recs:")
            .arg("TTL")
            .arg(3600)
            .arg("EXCLUDE_SEEN")
            .query::<Value>(&mut c)
            .unwrap(),
    );
    // The server keeps serving while the batch runs.
    assert_eq!(
        cmd(&mut c, "PING").unwrap(),
        Value::SimpleString("PONG".into())
    );
    wait_done(&mut c, id);
    assert_eq!(status_field(&mut c, id, "users"), Value::Int(601));
    assert_eq!(status_field(&mut c, id, "written"), Value::Int(600));
    assert_eq!(status_field(&mut c, id, "errors"), Value::Int(1));
    let last: String = redis::from_redis_value(&status_field(&mut c, id, "last_error")).unwrap();
    assert!(last.contains("user:broken"), "{last}");

    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("recs:{user:7}")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0], "item:7", "the user's own vector is nearest item:7");
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("recs:{user:550}")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(list.len(), 5);
    assert!(
        !list.contains(&"item:550".to_string()),
        "EXCLUDE_SEEN applies in batch"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg("recs:{user:7}")
        .query(&mut c)
        .unwrap();
    assert!(ttl > 3500);
    assert_eq!(cmd(&mut c, "EXISTS recs:{other:1}").unwrap(), Value::Int(0));

    // A newer batch replaces the older results.
    let id2 = batch_id(
        &redis::cmd("RECSYS.BATCH")
            .arg("cat")
            .arg("MATCH")
            .arg("user:1*")
            .arg("K")
            .arg(2)
            .arg("INTO")
            .arg("recs:")
            .query::<Value>(&mut c)
            .unwrap(),
    );
    assert!(id2 > id);
    wait_done(&mut c, id2);
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("recs:{user:17}")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(list.len(), 2);
    let all: Vec<Value> = redis::cmd("RECSYS.BATCH.STATUS").query(&mut c).unwrap();
    assert_eq!(all.len(), 2);
}

#[test]
fn batch_results_reach_replicas() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(300, 8, 72);
    load_catalog(&mut c, "cat", &vs, "");
    let replica = server_with(&[], &["--replicaof", "127.0.0.1", &s.port.to_string()]);
    let mut r = replica.connection().unwrap();
    for (u, v) in vs.iter().enumerate().take(20) {
        let _: () = redis::cmd("HSET")
            .arg(format!("u:{u}"))
            .arg("emb")
            .arg(recsys::vector::to_fp32_blob(v))
            .query(&mut c)
            .unwrap();
    }
    let id = batch_id(
        &redis::cmd("RECSYS.BATCH")
            .arg("cat")
            .arg("MATCH")
            .arg("u:*")
            .arg("K")
            .arg(3)
            .arg("INTO")
            .arg("out:")
            .query::<Value>(&mut c)
            .unwrap(),
    );
    wait_done(&mut c, id);
    let master: Vec<String> = redis::cmd("LRANGE")
        .arg("out:{u:3}")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(master.len(), 3, "the master wrote the list: {master:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<String> = redis::cmd("LRANGE")
            .arg("out:{u:3}")
            .arg(0)
            .arg(-1)
            .query(&mut r)
            .unwrap_or_default();
        if got == master {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica never got the batch results"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn batch_bad_input() {
    let s = server();
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 2").unwrap();
    for (line, want) in [
        (
            "RECSYS.BATCH cat MATCH u:* K 3",
            "wrong number of arguments",
        ),
        (
            "RECSYS.BATCH cat MATCH u:* K 3 EXCLUDE_SEEN INTO",
            "missing INTO prefix",
        ),
        (
            "RECSYS.BATCH cat MATCH u:* INTO r: CANDIDATES 5",
            "K is required",
        ),
        (
            "RECSYS.BATCH cat K 3 INTO r: TTL 5",
            "MATCH pattern is required",
        ),
        (
            "RECSYS.BATCH cat MATCH u:* K 0 INTO r:",
            "K must be between",
        ),
        ("RECSYS.BATCH nope MATCH u:* K 3 INTO r:", "does not exist"),
        (
            "RECSYS.BATCH cat MATCH u:* K 3 INTO r: TTL 0",
            "TTL must be between",
        ),
        (
            "RECSYS.BATCH cat MATCH u:* K 3 INTO r: VECTOR x",
            "unknown option 'VECTOR'",
        ),
        ("RECSYS.BATCH.STATUS 999", "no batch with id 999"),
    ] {
        let e = err_line(&mut c, line);
        assert!(e.contains(want), "{line}: {e}");
    }
}
