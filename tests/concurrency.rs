//! Worker threads: many clients searching while others write, delete items,
//! DEL the catalog or FLUSHALL. The server must keep answering correctly.

mod common;
use common::*;
use std::thread;

#[test]
fn searches_with_concurrent_writes_and_deletes() {
    let s = server_with(&["WORKERS", "3"], &[]);
    let mut c = s.connection().unwrap();
    let vs = vectors(4000, 16, 31);
    load_catalog(&mut c, "cat", &vs, "M 8 EF_CONSTRUCTION 64");
    let url = s.url();
    let mut readers = Vec::new();
    for t in 0..8 {
        let url = url.clone();
        let qs = vectors(150, 16, 100 + t);
        readers.push(thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            for q in qs {
                let ids = search_ids(&mut c, "cat", &q, 10);
                // At least 3,000 items are live at any time: K is always met.
                assert_eq!(ids.len(), 10, "{ids:?}");
                // Deleted ids ("item:<even>" below 2000) must never come back
                // once their DEL has been answered; checked after the writers.
            }
        }));
    }
    let writer = {
        let url = url.clone();
        let vs = vs.clone();
        thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            for i in (0..2000).step_by(2) {
                let _: i64 = redis::cmd("RECSYS.ITEM.DEL")
                    .arg("cat")
                    .arg(format!("item:{i}"))
                    .query(&mut c)
                    .unwrap();
            }
            for (i, v) in vs.iter().enumerate().take(500) {
                let _: i64 = redis::cmd("RECSYS.ITEM.SET")
                    .arg("cat")
                    .arg(format!("new:{i}"))
                    .arg("FP32")
                    .arg(recsys::vector::to_fp32_blob(v))
                    .query(&mut c)
                    .unwrap();
            }
        })
    };
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(info_field(&mut c, "cat", "items"), 4000 - 1000 + 500);
    for q in vs.iter().step_by(40) {
        for id in search_ids(&mut c, "cat", q, 20) {
            if let Some(n) = id
                .strip_prefix("item:")
                .and_then(|n| n.parse::<usize>().ok())
            {
                assert!(!(n < 2000 && n % 2 == 0), "deleted {id} returned");
            }
        }
    }
}

#[test]
fn del_and_flushall_with_searches_in_flight() {
    let s = server_with(&["WORKERS", "2"], &[]);
    let mut c = s.connection().unwrap();
    let vs = vectors(5000, 32, 41);
    for round in 0..2 {
        load_catalog(&mut c, "cat", &vs, "M 8 EF_CONSTRUCTION 40");
        // 100 searches in flight from pipelined clients while the key goes away.
        let url = s.url();
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let url = url.clone();
                let qs = vectors(25, 32, 500 + t);
                thread::spawn(move || {
                    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                    let mut p = redis::pipe();
                    for q in &qs {
                        p.cmd("RECSYS.SEARCH")
                            .arg("cat")
                            .arg(10)
                            .arg("FP32")
                            .arg(recsys::vector::to_fp32_blob(q))
                            .arg("EF")
                            .arg(500);
                    }
                    // Each answer is either results or "does not exist": never a crash.
                    let _ = p.query::<Vec<redis::Value>>(&mut c);
                })
            })
            .collect();
        thread::sleep(std::time::Duration::from_millis(5));
        if round == 0 {
            cmd(&mut c, "DEL cat").unwrap();
        } else {
            cmd(&mut c, "FLUSHALL").unwrap();
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(
            cmd(&mut c, "PING").unwrap(),
            redis::Value::SimpleString("PONG".into())
        );
    }
    let mut s = s;
    assert!(s.is_alive());
}
