//! Fresh answers: RECOMMEND ... NOREPEAT n (a refresh does not serve what
//! the user's last n requests served; what was shown lives in the user
//! hash's `shown` field, text JSON, written after each reply as a
//! replicated HSET), and FALLBACK latest (the newest items fill K, in an
//! order that survives RDB, AOF and replication).

mod common;
use common::*;
use std::time::{Duration, Instant};

use recsys::vector::to_fp32_blob;
use redis::Connection;

fn ask(c: &mut Connection, user: &str, n: &str) -> redis::RedisResult<Vec<String>> {
    redis::cmd("RECSYS.RECOMMEND")
        .arg(&["cat", user, "K", "3", "NOREPEAT", n])
        .query(c)
}

#[test]
fn refreshes_serve_new_items_for_the_last_n_requests() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(200, 8, 3);
    load_catalog(&mut c, "cat", &vs, "");
    let _: i64 = redis::cmd("HSET")
        .arg(&["u1", "emb"])
        .arg(to_fp32_blob(&vs[5]))
        .query(&mut c)
        .unwrap();
    let plain: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg(&["cat", "u1", "K", "9"])
        .query(&mut c)
        .unwrap();
    let a = ask(&mut c, "u1", "2").unwrap();
    let b = ask(&mut c, "u1", "2").unwrap();
    let third = ask(&mut c, "u1", "2").unwrap();
    // Each refresh is the next best items not shown by the last two.
    assert_eq!(a, plain[0..3]);
    assert_eq!(b, plain[3..6]);
    assert_eq!(third, plain[6..9]);
    // The first answer left the window: it is served again.
    assert_eq!(ask(&mut c, "u1", "2").unwrap(), a);
    // A longer window looks further back (the field keeps what NOREPEAT
    // asked for: the last 2 requests here).
    let four = ask(&mut c, "u1", "3").unwrap();
    assert!(four.iter().all(|id| !a.contains(id) && !third.contains(id)));
    // The field is text app code can read.
    let shown: String = redis::cmd("HGET")
        .arg(&["u1", "shown"])
        .query(&mut c)
        .unwrap();
    let parsed: Vec<Vec<String>> = serde_json::from_str(&shown).unwrap();
    assert_eq!(parsed, vec![four.clone(), a.clone(), third.clone()]);
    // Requests without NOREPEAT neither read nor change it.
    let _: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg(&["cat", "u1"])
        .query(&mut c)
        .unwrap();
    let again: String = redis::cmd("HGET")
        .arg(&["u1", "shown"])
        .query(&mut c)
        .unwrap();
    assert_eq!(again, shown);

    for (n, expected) in [("0", "NOREPEAT"), ("51", "NOREPEAT"), ("x", "NOREPEAT")] {
        let e = ask(&mut c, "u1", n).unwrap_err().to_string();
        assert!(e.contains(expected), "{n}: {e}");
    }
    let _: i64 = redis::cmd("HSET")
        .arg(&["u2", "shown", "{oops"])
        .query(&mut c)
        .unwrap();
    let e = ask(&mut c, "u2", "2").unwrap_err().to_string();
    assert!(e.contains("field 'shown' of user 'u2'"), "{e}");
    // A user that may only read user hashes may not record impressions.
    cmd(&mut c, "ACL SETUSER reader on >pw ~cat %R~u* +@all").unwrap();
    let mut r = s.connection().unwrap();
    cmd(&mut r, "AUTH reader pw").unwrap();
    let e = ask(&mut r, "u1", "2").unwrap_err().to_string();
    assert!(e.contains("may not write"), "{e}");
    assert!(redis::cmd("RECSYS.RECOMMEND")
        .arg(&["cat", "u1"])
        .query::<Vec<String>>(&mut r)
        .is_ok());
}

#[test]
fn what_was_shown_replicates_and_replicas_refuse_norepeat() {
    let master = server();
    let mut m = master.connection().unwrap();
    // Large enough that requests run on a worker: the field is written
    // from the reply callback (a small catalog answers inline).
    load_catalog(&mut m, "cat", &vectors(30_000, 32, 4), "");
    let replica = server_with(&[], &["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let mut r = replica.connection().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while info(&mut r, "replication")["master_link_status"] != "up" {
        assert!(Instant::now() < deadline, "replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    let on_workers = |c: &mut Connection| -> i64 {
        info(c, "recsys")["recsys_requests_on_workers"]
            .parse()
            .unwrap()
    };
    let before = on_workers(&mut m);
    let served = ask(&mut m, "fresh", "5").unwrap();
    assert_eq!(served.len(), 3, "a user without a hash gets popular items");
    let _: i64 = redis::cmd("HSET")
        .arg(&["fresh", "emb"])
        .arg(to_fp32_blob(&[0.5; 32]))
        .query(&mut m)
        .unwrap();
    let next = ask(&mut m, "fresh", "5").unwrap();
    assert!(next.iter().all(|id| !served.contains(id)));
    assert!(on_workers(&mut m) > before, "the search ran on a worker");
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    let on_master: String = redis::cmd("HGET")
        .arg(&["fresh", "shown"])
        .query(&mut m)
        .unwrap();
    let on_replica: String = redis::cmd("HGET")
        .arg(&["fresh", "shown"])
        .query(&mut r)
        .unwrap();
    assert_eq!(on_master, on_replica);
    let e = ask(&mut r, "fresh", "5").unwrap_err().to_string();
    assert!(e.contains("send it to the master"), "{e}");
}

fn newest(c: &mut Connection, n: &str) -> Vec<String> {
    // MIN_SCORE 2 admits nothing by similarity (cosine): the fallback fills K.
    redis::cmd("RECSYS.RECOMMEND")
        .arg(&[
            "cat",
            "nobody",
            "K",
            n,
            "MIN_SCORE",
            "2",
            "FALLBACK",
            "latest",
            "VECTOR",
        ])
        .arg(to_fp32_blob(&[1.0; 8]))
        .query(c)
        .unwrap()
}

#[test]
fn fallback_latest_fills_k_with_the_newest_items_in_a_lasting_order() {
    let extra = ["--appendonly", "yes", "--aof-use-rdb-preamble", "no"];
    let s = server_with(&[], &extra);
    let mut c = s.connection().unwrap();
    let vs = vectors(50, 8, 6);
    load_catalog(&mut c, "cat", &vs, "");
    assert_eq!(newest(&mut c, "3"), ["item:49", "item:48", "item:47"]);
    // Set again: newest; deleted: gone; WHERE and EXCLUDE still apply.
    let _: i64 = redis::cmd("RECSYS.ITEM.SET")
        .arg(&["cat", "item:3", "FP32"])
        .arg(to_fp32_blob(&vs[3]))
        .query(&mut c)
        .unwrap();
    cmd(&mut c, "RECSYS.ITEM.DEL cat item:49").unwrap();
    assert_eq!(newest(&mut c, "3"), ["item:3", "item:48", "item:47"]);
    let excluded: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg(&[
            "cat",
            "nobody",
            "K",
            "2",
            "MIN_SCORE",
            "2",
            "EXCLUDE",
            "1",
            "item:3",
        ])
        .arg(&["FALLBACK", "latest", "WITHSOURCE", "VECTOR"])
        .arg(to_fp32_blob(&[1.0; 8]))
        .query(&mut c)
        .unwrap();
    assert_eq!(excluded, ["item:48", "fallback", "item:47", "fallback"]);
    let before = newest(&mut c, "10");
    cmd(&mut c, "DEBUG RELOAD").unwrap();
    assert_eq!(newest(&mut c, "10"), before, "after DEBUG RELOAD");
    cmd(&mut c, "BGREWRITEAOF").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while info(&mut c, "persistence")["aof_rewrite_in_progress"] != "0"
        || info(&mut c, "persistence")["aof_rewrite_scheduled"] != "0"
    {
        assert!(Instant::now() < deadline, "rewrite never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let module = s.module.clone();
    let dir = s.stop(false);
    let s = recsys_cli::server::RedisServer::start_in(dir, &module, &[], &extra).unwrap();
    let mut c = s.connection().unwrap();
    assert_eq!(newest(&mut c, "10"), before, "after a rewritten AOF");
    let e = err_line(&mut c, "RECSYS.RECOMMEND cat u FALLBACK oldest");
    assert!(e.contains("popular or latest"), "{e}");
}
