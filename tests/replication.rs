//! Replication: every write reaches a replica, which answers searches like the
//! master (same graph: node levels come from a seeded generator).

mod common;
use common::*;
use std::time::{Duration, Instant};

fn wait_for(
    c: &mut redis::Connection,
    what: &str,
    mut ok: impl FnMut(&mut redis::Connection) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ok(c) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn replica_receives_every_write_and_answers_like_the_master() {
    let master = server();
    let mut m = master.connection().unwrap();
    // Some data before the replica attaches (full sync through RDB)...
    let vs = vectors(3000, 32, 21);
    load_catalog(&mut m, "cat", &vs[..1500], "");
    let replica = server_with(&[], &["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let mut r = replica.connection().unwrap();
    wait_for(&mut r, "initial sync", |r| {
        let info: String = redis::cmd("INFO").arg("replication").query(r).unwrap();
        info.contains("master_link_status:up")
    });
    // ...and more after (command stream).
    let mut mset = redis::cmd("RECSYS.ITEM.MSET");
    mset.arg("cat");
    for (i, v) in vs.iter().enumerate().skip(1500) {
        mset.arg(format!("item:{i}"))
            .arg(recsys::vector::to_fp32_blob(v));
    }
    let _: i64 = mset.query(&mut m).unwrap();
    cmd(&mut m, "RECSYS.ITEM.SET cat extra VALUES 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 ATTRS {\"a\":1}").unwrap();
    let dels: Vec<String> = (0..300).map(|i| format!("item:{}", i * 7)).collect();
    let _: i64 = redis::cmd("RECSYS.ITEM.DEL")
        .arg("cat")
        .arg(&dels)
        .query(&mut m)
        .unwrap();
    cmd(&mut m, "RECSYS.CREATE other DIM 4 METRIC L2").unwrap();
    let offset: i64 = {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut m).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("master_repl_offset:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    wait_for(&mut r, "replica offset", |r| {
        let info: String = redis::cmd("INFO").arg("replication").query(r).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("slave_repl_offset:"))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .is_some_and(|o| o >= offset)
    });

    assert_eq!(
        info_field(&mut r, "cat", "items"),
        info_field(&mut m, "cat", "items")
    );
    assert_eq!(info_field(&mut r, "other", "dim"), 4);
    assert_ne!(
        cmd(&mut r, "RECSYS.ITEM.GET cat extra").unwrap(),
        redis::Value::Nil
    );
    assert_eq!(
        cmd(&mut r, "RECSYS.ITEM.GET cat item:7").unwrap(),
        redis::Value::Nil
    );
    // The same writes build the same graph: the same answers, in order.
    for q in vectors(100, 32, 99) {
        let a = search_ids(&mut m, "cat", &q, 10);
        let b = search_ids(&mut r, "cat", &q, 10);
        assert_eq!(a.len(), 10);
        assert_eq!(a, b, "replica answers differ");
    }
}
