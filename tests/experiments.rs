//! A/B experiments (RECSYS.EXPERIMENT.*, RECOMMEND ... EXPERIMENT, EVENT
//! ... REQUEST) through a real redis-server: input checks, the documented
//! assignment, variant options that change the answer, an A/B test on a
//! generated shop whose simulated clicks favour one variant, and counts
//! that persist (RDB, AOF), replicate and survive a failover.

mod common;
use common::*;
use std::time::{Duration, Instant};

use recsys::vector::to_fp32_blob;
use recsys_cli::verbs::simulate::{report, simulate, Simulate, VariantReport};
use redis::{Connection, Value};
use sha2::{Digest, Sha256};

/// A RECOMMEND ... EXPERIMENT answer: ids, request id, variant.
fn served(
    c: &mut Connection,
    user: &str,
    vector: &[f32],
    extra: &[&str],
) -> (Vec<String>, String, String) {
    let v: Value = redis::cmd("RECSYS.RECOMMEND")
        .arg("shop")
        .arg(user)
        .arg("VECTOR")
        .arg(to_fp32_blob(vector))
        .arg(extra)
        .arg("EXPERIMENT")
        .arg("ab")
        .query(c)
        .unwrap();
    let m = pairs(&v);
    let get = |k: &str| {
        m.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let ids = match get("items") {
        Value::Array(a) => a.iter().map(text).collect(),
        other => panic!("{other:?}"),
    };
    (ids, text(&get("request")), text(&get("variant")))
}

fn plain_ids(c: &mut Connection, user: &str, vector: &[f32], opts: &[&str]) -> Vec<String> {
    redis::cmd("RECSYS.RECOMMEND")
        .arg("shop")
        .arg(user)
        .arg("VECTOR")
        .arg(to_fp32_blob(vector))
        .arg(opts)
        .query(c)
        .unwrap()
}

fn small_shop(c: &mut Connection) -> Vec<Vec<f32>> {
    let vs = vectors(300, 8, 5);
    load_catalog(c, "shop", &vs, "");
    for i in 0..300 {
        let attrs = format!(
            r#"{{"price":{},"color":"{}"}}"#,
            i % 50,
            ["red", "blue"][i % 2]
        );
        let _: String = redis::cmd("RECSYS.ITEM.SETATTRS")
            .arg(&["shop", &format!("item:{i}"), &attrs])
            .query(c)
            .unwrap();
    }
    vs
}

fn set_ab(c: &mut Connection, a: &str, b: &str) {
    let r: String = redis::cmd("RECSYS.EXPERIMENT.SET")
        .arg(&["shop", "ab", "VARIANT", "a", "WEIGHT", "70", "OPTIONS", a])
        .arg(&["VARIANT", "b", "WEIGHT", "30", "OPTIONS", b])
        .query(c)
        .unwrap();
    assert_eq!(r, "OK");
}

fn event(c: &mut Connection, user: &str, item: &str, kind: &str, request: &str) {
    let _: i64 = redis::cmd("RECSYS.EVENT")
        .arg(&["shop", user, item, "TYPE", kind, "REQUEST", request])
        .query(c)
        .unwrap();
}

fn counters(c: &mut Connection) -> Vec<(String, i64, i64, i64)> {
    try_counters(c).expect("RECSYS.EXPERIMENT.REPORT shop ab")
}

/// The experiment's counters, or None while it does not exist (yet: a
/// replica gets the experiment from the replication stream).
fn try_counters(c: &mut Connection) -> Option<Vec<(String, i64, i64, i64)>> {
    let variants = report(c, "shop", "ab").ok()?;
    Some(
        variants
            .into_iter()
            .map(|v: VariantReport| (v.name, v.impressions, v.clicks, v.purchases))
            .collect(),
    )
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn experiments_check_their_input_and_never_fail_a_late_click() {
    let s = server();
    let mut c = s.connection().unwrap();
    small_shop(&mut c);
    let set = |c: &mut Connection, args: &[&str]| {
        let mut all = vec!["RECSYS.EXPERIMENT.SET", "shop"];
        all.extend_from_slice(args);
        let parts: Vec<&[u8]> = all.iter().map(|a| a.as_bytes()).collect();
        err(c, &parts)
    };
    for (args, expected) in [
        (&["ab", "CREATED", "5"][..], "1 to 16 variants"),
        (&["bad name", "VARIANT", "a"], "experiment name"),
        (&["ab", "VARIANT", "a", "VARIANT", "a"], "named twice"),
        (&["ab", "VARIANT", "a", "WEIGHT", "0"], "WEIGHT above 0"),
        (
            &["ab", "VARIANT", "a", "WEIGHT", "-1"],
            "WEIGHT must be between 0",
        ),
        (
            &["ab", "VARIANT", "a", "OPTIONS", "ORDER nope"],
            "no plugin named 'nope'",
        ),
        (
            &["ab", "VARIANT", "a", "OPTIONS", "RANK nope"],
            "no model named 'nope'",
        ),
        (
            &["ab", "VARIANT", "a", "OPTIONS", "K 0"],
            "K must be between",
        ),
        (
            &["ab", "VARIANT", "a", "OPTIONS", "WITHSCORES"],
            "not a RECOMMEND pipeline option",
        ),
        (
            &["ab", "VARIANT", "a", "OPTIONS", "WHERE 'price"],
            "unclosed quote",
        ),
        (
            &["ab", "VARIANT", "a", "OPTIONS", "WHERE 'price <'"],
            "variant 'a'",
        ),
        (&["ab", "FLAVOUR", "x"], "unknown option 'FLAVOUR'"),
    ] {
        let e = set(&mut c, args);
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    assert!(
        err_line(&mut c, "RECSYS.EXPERIMENT.SET nothing ab VARIANT a").contains("does not exist")
    );
    // Nothing was set by the failures.
    assert!(err_line(&mut c, "RECSYS.EXPERIMENT.REPORT shop ab").contains("does not exist"));
    let v = vectors(1, 8, 9).remove(0);
    let e = err(
        &mut c,
        &[
            b"RECSYS.RECOMMEND",
            b"shop",
            b"u",
            b"VECTOR",
            &to_fp32_blob(&v),
            b"EXPERIMENT",
            b"ab",
        ],
    );
    assert!(e.contains("experiment 'ab' does not exist"), "{e}");
    assert!(err_line(&mut c, "RECSYS.EXPERIMENT.SYNC shop ADD ab 1 x").contains("internal"));

    set_ab(&mut c, "K 2", "K 3");
    let (_, request, _) = served(&mut c, "user:1", &v, &[]);
    // A late, foreign, duplicate or made-up request id is counted, never an error.
    event(&mut c, "user:1", "item:1", "click", &request);
    event(&mut c, "user:1", "item:1", "click", &request);
    event(
        &mut c,
        "user:1",
        "item:1",
        "click",
        "ab:1:0:1:0000000000000001",
    );
    event(&mut c, "user:1", "item:1", "click", "no such thing");
    let info = info(&mut c, "recsys");
    assert_eq!(info["recsys_experiment_feedback_credited"], "1");
    assert_eq!(info["recsys_experiment_duplicate_feedback"], "1");
    assert_eq!(info["recsys_experiment_mismatched_requests"], "1");
    assert_eq!(info["recsys_experiment_unknown_requests"], "1");
    let old = request.clone();
    // Setting it again starts a new generation: old ids no longer count.
    set_ab(&mut c, "K 2", "K 3");
    event(&mut c, "user:1", "item:1", "purchase", &old);
    assert!(counters(&mut c)
        .iter()
        .all(|(_, i, cl, p)| (*i, *cl, *p) == (0, 0, 0)));
    assert_eq!(
        cmd(&mut c, "RECSYS.EXPERIMENT.DEL shop ab").unwrap(),
        Value::Int(1)
    );
    assert_eq!(
        cmd(&mut c, "RECSYS.EXPERIMENT.DEL shop ab").unwrap(),
        Value::Int(0)
    );
}

/// The variant of `user` by the documented rule: the first 8 bytes of
/// SHA-256("ab\n" user), big-endian, modulo the weights (70, 30).
fn documented_variant(user: &str) -> &'static str {
    let d = Sha256::digest(format!("ab\n{user}").as_bytes());
    let bucket = u64::from_be_bytes(d[..8].try_into().unwrap()) % 100;
    if bucket < 70 {
        "a"
    } else {
        "b"
    }
}

#[test]
fn users_get_the_documented_variant_and_its_options() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = small_shop(&mut c);
    set_ab(
        &mut c,
        "K 2 WHERE 'color == \"red\"'",
        "K 4 EXCLUDE 1 item:0",
    );
    let mut b_users = 0;
    for u in 0..200 {
        let user = format!("user:{u}");
        let q = &vs[u * 7 % vs.len()];
        let (ids, request, variant) = served(&mut c, &user, q, &[]);
        assert_eq!(variant, documented_variant(&user), "{user}");
        let parts: Vec<&str> = request.split(':').collect();
        assert_eq!(
            (parts[0], parts[2]),
            ("ab", if variant == "a" { "0" } else { "1" })
        );
        // The variant's options, applied after the request's own.
        let expected = match variant.as_str() {
            "a" => plain_ids(&mut c, &user, q, &["K", "2", "WHERE", "color == \"red\""]),
            _ => {
                b_users += 1;
                plain_ids(&mut c, &user, q, &["K", "4", "EXCLUDE", "1", "item:0"])
            }
        };
        assert_eq!(ids, expected, "{user} ({variant})");
        // Options of the request itself still apply.
        let (fewer, _, _) = served(&mut c, &user, q, &["MIN_SCORE", "2"]);
        assert!(fewer.is_empty());
    }
    assert!(
        (40..=80).contains(&b_users),
        "{b_users} of 200 users in b (30%)"
    );
    let r = counters(&mut c);
    assert_eq!(r[0].1 + r[1].1, 400);
    assert_eq!(r[1].1, 2 * b_users);
}

#[test]
fn an_ab_test_on_a_generated_shop_reports_the_better_variant() {
    use recsys_cli::data::generate::{shop, Shape};
    use recsys_cli::loader::{self, CatalogSettings, Keys};
    use recsys_cli::train::Plan;
    let ds = shop(Shape {
        users: 400,
        items: 600,
        per_user: 25,
        seed: 11,
    });
    let plan = Plan {
        tune: None,
        ranker: None,
        tower: None,
        holdout: false,
        ..Plan::default()
    };
    let emb = recsys_cli::train::fit(&ds, &plan, |_| {}).unwrap();
    let s = server();
    let mut c = s.connection().unwrap();
    let keys = Keys {
        prefix: "ab".into(),
    };
    loader::load(
        &mut c,
        &ds,
        &emb,
        &keys,
        &CatalogSettings::default(),
        false,
        |_, _, _| {},
    )
    .unwrap();
    let _: () = redis::cmd("RECSYS.PLUGIN.LOAD")
        .arg("exclude-attr")
        .arg(wasm("exclude-attr"))
        .query(&mut c)
        .unwrap();
    // The treatment hides two categories that users like.
    let r: String = redis::cmd("RECSYS.EXPERIMENT.SET")
        .arg(&["ab:items", "hide", "VARIANT", "control", "WEIGHT", "50"])
        .arg(&["VARIANT", "hidden", "WEIGHT", "50", "OPTIONS"])
        .arg("FILTER exclude-attr ARGS category=running FILTER exclude-attr ARGS category=hiking FILTER exclude-attr ARGS category=kitchen")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, "OK");
    let dir = tempfile::tempdir().unwrap();
    let args = Simulate {
        data: dir.path().join("unused.rsd"),
        redis: s.url(),
        prefix: "ab".into(),
        experiment: "hide".into(),
        requests: 3000,
        k: 10,
        like_attr: "category".into(),
        like: 0.6,
        other: 0.01,
        buy: 0.2,
        seed: 7,
        json: None,
    };
    let out = simulate(&mut c, &ds, &args).unwrap();
    let (control, hidden) = (&out.variants[0], &out.variants[1]);
    assert_eq!(control.impressions + hidden.impressions, 3000);
    assert_eq!(control.impressions as usize, out.served["control"]);
    assert_eq!((control.clicks + hidden.clicks) as usize, out.clicks_sent);
    assert!(
        control.users + hidden.users <= 400 && control.users > 150,
        "{out:?}"
    );
    assert!(control.ctr > hidden.ctr, "{out:?}");
    assert_eq!(hidden.ctr_significant, Some(true), "{out:?}");
    assert!(hidden.ctr_lift.unwrap() < 0.0 && hidden.ctr_p_value.unwrap() < 0.05);
    // An A/A test (same options in both variants) finds no difference.
    let r: String = redis::cmd("RECSYS.EXPERIMENT.SET")
        .arg(&["ab:items", "same", "VARIANT", "x", "VARIANT", "y"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, "OK");
    let aa = simulate(
        &mut c,
        &ds,
        &Simulate {
            experiment: "same".into(),
            seed: 8,
            ..args
        },
    )
    .unwrap();
    assert_eq!(aa.variants[1].ctr_significant, Some(false), "{aa:?}");
}

fn master_offset(c: &mut Connection) -> String {
    info(c, "replication")["master_repl_offset"].clone()
}

#[test]
fn counts_persist_replicate_and_survive_a_failover() {
    let extra = ["--appendonly", "yes", "--aof-use-rdb-preamble", "no"];
    let master = server_with(&[], &extra);
    let mut m = master.connection().unwrap();
    let vs = small_shop(&mut m);
    let replica = server_with(&[], &["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let mut r = replica.connection().unwrap();
    wait_until("the replica's sync", || {
        info(&mut r, "replication")["master_link_status"] == "up"
    });
    set_ab(&mut m, "K 2", "K 3");
    let mut requests = Vec::new();
    for (u, v) in vs.iter().enumerate().take(60) {
        let user = format!("user:{u}");
        let (ids, request, _) = served(&mut m, &user, v, &[]);
        if u % 3 == 0 {
            event(&mut m, &user, &ids[0], "click", &request);
        }
        requests.push((user, ids, request));
    }
    let on_master = counters(&mut m);
    assert_eq!(on_master.iter().map(|v| v.1).sum::<i64>(), 60);
    assert_eq!(on_master.iter().map(|v| v.2).sum::<i64>(), 20);
    // Within a flush (a second) the replica has the experiment and the
    // same counts.
    wait_until("counts on the replica", || {
        try_counters(&mut r).is_some_and(|counts| counts == on_master)
    });
    wait_until("the flush in the replication stream", || {
        master_offset(&mut m) == info(&mut r, "replication")["slave_repl_offset"]
    });

    // RDB (DEBUG RELOAD) and AOF (restart from commands, then a rewrite).
    cmd(&mut m, "DEBUG RELOAD").unwrap();
    assert_eq!(counters(&mut m), on_master);
    let module = master.module.clone();
    let port = master.port;
    drop(r);
    let dir = master.stop(false);
    let master =
        recsys_cli::server::RedisServer::start_on(dir, &module, &[], &extra, port).unwrap();
    let mut m = master.connection().unwrap();
    assert_eq!(counters(&mut m), on_master, "after an AOF restart");
    cmd(&mut m, "BGREWRITEAOF").unwrap();
    wait_until("the rewrite", || {
        info(&mut m, "persistence")["aof_rewrite_in_progress"] == "0"
            && info(&mut m, "persistence")["aof_rewrite_scheduled"] == "0"
    });
    let dir = master.stop(false);
    let master =
        recsys_cli::server::RedisServer::start_on(dir, &module, &[], &extra, port).unwrap();
    let mut m = master.connection().unwrap();
    assert_eq!(counters(&mut m), on_master, "after a rewritten AOF");

    // Failover: the replica (which reconnected) is promoted; clicks on
    // requests the old master issued still count there, once.
    let mut r = replica.connection().unwrap();
    wait_until("the replica back in sync", || {
        info(&mut r, "replication")["master_link_status"] == "up"
            && master_offset(&mut m) == info(&mut r, "replication")["slave_repl_offset"]
    });
    cmd(&mut r, "REPLICAOF NO ONE").unwrap();
    let (user, ids, request) = &requests[1];
    event(&mut r, user, &ids[0], "click", request);
    let (user0, ids0, request0) = &requests[0];
    event(&mut r, user0, &ids0[0], "click", request0); // already credited on the old master
    let after = counters(&mut r);
    assert_eq!(after.iter().map(|v| v.1).sum::<i64>(), 60);
    assert_eq!(after.iter().map(|v| v.2).sum::<i64>(), 21, "{after:?}");
    assert_eq!(
        info(&mut r, "recsys")["recsys_experiment_duplicate_feedback"],
        "1"
    );
}

#[test]
fn the_documented_walkthrough_runs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/experiments.md")).unwrap();
    let block = doc
        .split("<!-- walkthrough -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /walkthrough -->").next())
        .expect("docs/experiments.md has the walkthrough block");
    let lines: Vec<&str> = block
        .lines()
        .filter(|l| l.starts_with("recsys ") || l.starts_with("redis-cli "))
        .collect();
    assert_eq!(lines.len(), 7, "{block}");
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("recsys");
    for line in &lines {
        let line = line
            .replace("127.0.0.1:6379", &format!("127.0.0.1:{}", s.port))
            .replace("redis-cli ", &format!("redis-cli -p {} ", s.port))
            .replace("plugins/dist/", &format!("{root}/plugins/dist/"));
        let line = match line.strip_prefix("recsys ") {
            Some(rest) => format!("{} {rest}", bin.display()),
            None => line,
        };
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !said.contains("ERR"),
            "{line}: {said}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let v = report["variants"].as_array().unwrap();
    let (diverse, focused) = (&v[0], &v[1]);
    assert_eq!(
        (diverse["name"].as_str(), focused["name"].as_str()),
        (Some("diverse"), Some("focused"))
    );
    let imp = |x: &serde_json::Value| x["impressions"].as_i64().unwrap();
    assert_eq!(imp(diverse) + imp(focused), 3000);
    // What the walkthrough says: the focused variant wins, significantly.
    assert!(
        focused["ctr"].as_f64() > diverse["ctr"].as_f64(),
        "{report}"
    );
    assert_eq!(focused["ctr_significant"].as_bool(), Some(true), "{report}");
}
