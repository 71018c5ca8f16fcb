//! A catalog is an ordinary Redis key: DEL, UNLINK, RENAME, COPY, EXPIRE,
//! TYPE, MEMORY USAGE, FLUSHALL, and memory accounting through Redis's allocator.

mod common;
use common::*;
use redis::Value;

fn used_memory(c: &mut redis::Connection) -> i64 {
    let info: String = redis::cmd("INFO").arg("memory").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn catalogs_behave_like_keys() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(2000, 32, 3);
    let before = used_memory(&mut c);
    load_catalog(&mut c, "cat", &vs, "");
    let after = used_memory(&mut c);
    // 2000 x 32 floats alone are 256 KB: Redis must see the module's memory.
    assert!(
        after - before > 256_000,
        "INFO memory grew by {}",
        after - before
    );

    assert_eq!(
        cmd(&mut c, "TYPE cat").unwrap(),
        Value::SimpleString("RecSysCat".into())
    );
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("cat")
        .query(&mut c)
        .unwrap();
    assert!(usage > 256_000, "MEMORY USAGE {usage}");

    cmd(&mut c, "RENAME cat cat2").unwrap();
    assert_eq!(info_field(&mut c, "cat2", "items"), 2000);
    cmd(&mut c, "COPY cat2 cat3").unwrap();
    cmd(&mut c, "RECSYS.ITEM.DEL cat3 item:1").unwrap();
    assert_eq!(info_field(&mut c, "cat2", "items"), 2000, "COPY is deep");
    assert_eq!(info_field(&mut c, "cat3", "items"), 1999);
    assert_eq!(search_ids(&mut c, "cat3", &vs[5], 1), vec!["item:5"]);

    cmd(&mut c, "PEXPIRE cat3 50").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(cmd(&mut c, "EXISTS cat3").unwrap(), Value::Int(0));

    assert_eq!(cmd(&mut c, "UNLINK cat2").unwrap(), Value::Int(1));
    load_catalog(&mut c, "cat", &vs, "");
    assert_eq!(cmd(&mut c, "DEL cat").unwrap(), Value::Int(1));
    load_catalog(&mut c, "cat", &vs, "");
    cmd(&mut c, "FLUSHALL").unwrap();
    assert_eq!(cmd(&mut c, "DBSIZE").unwrap(), Value::Int(0));
}

#[test]
fn memory_is_returned_when_catalogs_go_away() {
    let s = server_with(&[], &["--slowlog-log-slower-than", "-1"]);
    let mut c = s.connection().unwrap();
    let vs = vectors(2000, 32, 3);
    let mut after_cycle = Vec::new();
    for _ in 0..4 {
        load_catalog(&mut c, "cat", &vs, "");
        search_ids(&mut c, "cat", &vs[0], 10);
        cmd(&mut c, "COPY cat copy").unwrap();
        cmd(&mut c, "RENAME cat moved").unwrap();
        cmd(&mut c, "RECSYS.ITEM.DEL copy item:1 item:2").unwrap();
        cmd(&mut c, "DEL copy").unwrap();
        cmd(&mut c, "UNLINK moved").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        after_cycle.push(used_memory(&mut c));
    }
    // Each cycle allocates ~2 MB of catalogs; none of it may stay behind.
    let growth = after_cycle[3] - after_cycle[0];
    assert!(
        growth < 64_000,
        "memory grew by {growth} bytes over 3 cycles: {after_cycle:?}"
    );
}

#[test]
fn deleting_a_big_catalog_does_not_stall_the_server() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(20_000, 32, 4);
    load_catalog(&mut c, "big", &vs, "M 8 EF_CONSTRUCTION 40");
    let t = std::time::Instant::now();
    cmd(&mut c, "DEL big").unwrap();
    let del = t.elapsed();
    assert_eq!(
        cmd(&mut c, "PING").unwrap(),
        Value::SimpleString("PONG".into())
    );
    // Freed on the module's reaper thread: the DEL itself is cheap.
    assert!(del.as_millis() < 200, "DEL took {del:?}");
}
