//! What operators, monitoring and Redis's own machinery see of the module:
//! worker time in commandstats and SLOWLOG, `INFO recsys`, WATCH and
//! keyspace events for every write, `CONFIG GET/SET recsys.*` and CONFIG
//! REWRITE, COMMAND DOCS arguments, one version everywhere, DEBUG DIGEST,
//! and the ACL rules docs/operations.md gives. Runs on whatever
//! redis-server the harness starts (Redis 7.0 and 7.4 in CI).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use recsys::vector::to_fp32_blob;
use redis::{Connection, Value};

fn num(m: &BTreeMap<String, String>, k: &str) -> f64 {
    m.get(k)
        .unwrap_or_else(|| panic!("no field {k} in {m:?}"))
        .parse()
        .unwrap()
}

/// (major, minor) of the server.
fn server_version(c: &mut Connection) -> (u32, u32) {
    let v = info(c, "server")["redis_version"].clone();
    let mut p = v.split('.').map(|x| x.parse::<u32>().unwrap());
    (p.next().unwrap(), p.next().unwrap())
}

#[test]
fn worker_time_reaches_commandstats_slowlog_and_info() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(20_000, 64, 7);
    load_catalog(&mut c, "cat", &vs, "M 16 EF_CONSTRUCTION 64");
    cmd(&mut c, "CONFIG SET slowlog-log-slower-than 0").unwrap();
    cmd(&mut c, "SLOWLOG RESET").unwrap();
    cmd(&mut c, "CONFIG RESETSTAT").unwrap();
    // Wide searches, all on a worker thread: at EF 4000 the 20,000 items
    // are scanned exactly, 1.3 M multiply-adds, ten times the most a
    // request may run inline.
    for v in vs.iter().take(5) {
        let _: Vec<String> = redis::cmd("RECSYS.SEARCH")
            .arg("cat")
            .arg(100)
            .arg("FP32")
            .arg(to_fp32_blob(v))
            .arg("EF")
            .arg(4000)
            .query(&mut c)
            .unwrap();
    }
    let ours = info(&mut c, "recsys");
    assert_eq!(num(&ours, "recsys_cmd_search_calls"), 5.0);
    assert_eq!(num(&ours, "recsys_cmd_search_errors"), 0.0);
    let p50 = num(&ours, "recsys_cmd_search_p50_us");
    // Far above the main thread's part (parsing, a few µs): the test below
    // tells worker time from no worker time.
    assert!(
        p50 >= 100.0,
        "a search of EF 4000 over 20,000 items took {p50} us"
    );
    // Redis's own accounting includes the worker's time: commandstats and
    // every SLOWLOG entry's duration. At least half the calls took the
    // median or more, so the sum is at least 2.5 medians.
    let stats = info(&mut c, "commandstats");
    let line = &stats["cmdstat_RECSYS.SEARCH"];
    let field = |name: &str| -> f64 {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name))
            .unwrap()
            .parse()
            .unwrap()
    };
    let total = field("usec=");
    assert!(
        total >= 0.8 * 2.5 * p50,
        "commandstats says {total} us for 5 SEARCHes, the module measured a median of {p50} us"
    );
    let slow: Vec<Vec<Value>> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(10)
        .query(&mut c)
        .unwrap();
    let durations: Vec<i64> = slow
        .iter()
        .filter(|e| format!("{:?}", e[3]).contains("RECSYS.SEARCH"))
        .map(|e| match e[2] {
            Value::Int(us) => us,
            ref other => panic!("SLOWLOG duration {other:?}"),
        })
        .collect();
    assert_eq!(
        durations.len(),
        5,
        "SLOWLOG (threshold 0) holds every SEARCH"
    );
    let logged: i64 = durations.iter().sum();
    assert!(
        logged as f64 >= 0.8 * 2.5 * p50,
        "SLOWLOG durations {durations:?} miss the worker time (median {p50} us)"
    );

    // The gauges: catalogs, items, workers, and a failed command counted.
    assert_eq!(num(&ours, "recsys_catalogs"), 1.0);
    assert_eq!(num(&ours, "recsys_items"), 20_000.0);
    assert!(num(&ours, "recsys_catalog_memory_bytes") > 20_000.0 * 64.0 * 4.0);
    assert!(num(&ours, "recsys_workers") >= 1.0);
    assert!(num(&ours, "recsys_stage_retrieve_p50_us") == 0.0);
    let _ = err_line(&mut c, "RECSYS.SEARCH cat 0 VALUES 1");
    cmd(&mut c, "RECSYS.RECOMMEND cat nobody K 5").unwrap();
    let after = info(&mut c, "recsys");
    assert_eq!(num(&after, "recsys_cmd_search_errors"), 1.0);
    assert_eq!(num(&after, "recsys_cmd_recommend_calls"), 1.0);
    // Every field is a number: monitoring reads them without parsing.
    for (k, v) in &after {
        if k.starts_with("recsys_") {
            assert!(v.parse::<i64>().is_ok(), "{k}:{v} is not an integer");
        }
    }
    // `INFO recsys_commands` alone, as scrapers ask for one section.
    assert!(info(&mut c, "recsys_commands").contains_key("recsys_cmd_recommend_p99_us"));
}

#[test]
fn the_metrics_script_for_redis_exporter_returns_every_field() {
    let s = server();
    let mut c = s.connection().unwrap();
    load_catalog(&mut c, "cat", &vectors(100, 8, 1), "");
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring/recsys.lua"),
    )
    .unwrap();
    // redis_exporter runs it with EVAL and reads a flat key/value array.
    let kv: Vec<String> = redis::cmd("EVAL")
        .arg(&script)
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert!(kv.len() > 100 && kv.len().is_multiple_of(2), "{kv:?}");
    let pairs: BTreeMap<&str, &str> = kv
        .chunks(2)
        .map(|p| (p[0].as_str(), p[1].as_str()))
        .collect();
    assert_eq!(pairs["recsys_items"], "100");
    assert_eq!(pairs["recsys_cmd_item_mset_calls"], "1");
    assert!(pairs.values().all(|v| v.parse::<f64>().is_ok()));
}

/// WATCH `key` on `w`, run `write` on `other`, then EXEC on `w`: the
/// transaction must abort.
fn assert_aborts_watch(w: &mut Connection, other: &mut Connection, key: &str, write: &[&[u8]]) {
    let _: () = redis::cmd("WATCH").arg(key).query(w).unwrap();
    call(other, write).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(write[0])));
    let _: () = redis::cmd("MULTI").query(w).unwrap();
    let _: () = redis::cmd("PING").query(w).unwrap();
    let exec: Value = redis::cmd("EXEC").query(w).unwrap();
    assert_eq!(
        exec,
        Value::Nil,
        "{} {:?} did not abort a transaction watching {key}",
        String::from_utf8_lossy(write[0]),
        write.get(1).map(|a| String::from_utf8_lossy(a))
    );
}

#[test]
fn every_write_aborts_watch_and_publishes_a_keyspace_event() {
    let s = server();
    let mut c = s.connection().unwrap();
    let mut w = s.connection().unwrap();
    cmd(&mut c, "CONFIG SET notify-keyspace-events KEA").unwrap();
    let client = redis::Client::open(s.url()).unwrap();
    let mut sub = client.get_connection().unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.psubscribe("__keyevent@0__:recsys.*").unwrap();

    let v = |x: f32| to_fp32_blob(&[x, 1.0 - x]);
    let (b1, b2) = (v(0.1), v(0.7));
    let model = fixture("dlrm_ranker.safetensors");
    let schema = ranker_schema();
    let mut model_set: Vec<&[u8]> = vec![
        b"RECSYS.MODEL.SET",
        b"cat",
        b"m",
        b"DLRM",
        &model,
        b"SCHEMA",
    ];
    model_set.extend(schema.split_whitespace().map(str::as_bytes));
    let writes: Vec<(&str, Vec<&[u8]>, &str)> = vec![
        (
            "cat",
            vec![b"RECSYS.CREATE", b"cat", b"DIM", b"2"],
            "recsys.create",
        ),
        (
            "cat",
            vec![b"RECSYS.ITEM.SET", b"cat", b"a", b"VALUES", b"1", b"0"],
            "recsys.item.set",
        ),
        (
            "cat",
            vec![b"RECSYS.ITEM.MSET", b"cat", b"b", &b1, b"c", &b2],
            "recsys.item.mset",
        ),
        (
            "cat",
            vec![b"RECSYS.ITEM.SETATTRS", b"cat", b"a", br#"{"c0":1}"#],
            "recsys.item.setattrs",
        ),
        (
            "cat",
            vec![b"RECSYS.ALTER", b"cat", b"SESSION", b"3", b"1"],
            "recsys.alter",
        ),
        (
            "cat",
            vec![b"RECSYS.POPULARITY.SET", b"cat", b"EPOCH", b"0", b"a", b"2"],
            "recsys.popularity.set",
        ),
        (
            "user:1",
            vec![b"RECSYS.EVENT", b"cat", b"user:1", b"a"],
            "recsys.event",
        ),
        (
            "cat",
            vec![b"RECSYS.EVENT", b"cat", b"user:1", b"b"],
            "recsys.event",
        ),
        (
            "cat",
            vec![b"RECSYS.ITEM.DEL", b"cat", b"c"],
            "recsys.item.del",
        ),
        ("cat", model_set.clone(), "recsys.model.set"),
        (
            "cat",
            vec![b"RECSYS.MODEL.DEL", b"cat", b"m"],
            "recsys.model.del",
        ),
    ];
    for (key, write, event) in &writes {
        assert_aborts_watch(&mut w, &mut c, key, write);
        // EVENT publishes on both keys: user hash first, then the catalog.
        let mut expected = vec![(event.to_string(), key.to_string())];
        if *event == "recsys.event" {
            expected = vec![
                (event.to_string(), "user:1".to_string()),
                (event.to_string(), "cat".to_string()),
            ];
        }
        for (ev, k) in expected {
            let msg = pubsub.get_message().expect("a keyspace event within 5 s");
            assert_eq!(msg.get_channel_name(), format!("__keyevent@0__:{ev}"));
            let payload: String = msg.get_payload().unwrap();
            assert_eq!(payload, k);
        }
    }
    // A write that changes nothing (deleting a missing item) publishes nothing
    // and leaves WATCH alone.
    let _: () = redis::cmd("WATCH").arg("cat").query(&mut w).unwrap();
    cmd(&mut c, "RECSYS.ITEM.DEL cat missing").unwrap();
    let _: () = redis::cmd("MULTI").query(&mut w).unwrap();
    let _: () = redis::cmd("PING").query(&mut w).unwrap();
    let exec: Value = redis::cmd("EXEC").query(&mut w).unwrap();
    assert_ne!(exec, Value::Nil);
    pubsub
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        pubsub.get_message().is_err(),
        "no event for a write that changed nothing"
    );
}

fn config(c: &mut Connection, name: &str) -> String {
    let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(c).unwrap();
    assert_eq!(v.len(), 2, "CONFIG GET {name}: {v:?}");
    v[1].clone()
}

#[test]
fn settings_are_redis_configs_that_config_rewrite_keeps() {
    // A module argument sets the default, redis.conf wins over it.
    let s = RedisServer::start_with_conf(
        &["HISTORY", "7", "PLUGIN_TIMEOUT_MS", "9"],
        "recsys.plugin-timeout-ms 11\n",
    )
    .unwrap();
    let mut c = s.connection().unwrap();
    let all: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("recsys.*")
        .query(&mut c)
        .unwrap();
    let names: Vec<&str> = all.iter().step_by(2).map(String::as_str).collect();
    for n in [
        "recsys.workers",
        "recsys.history",
        "recsys.plugin-memory-mb",
        "recsys.plugin-stack-kb",
        "recsys.plugin-timeout-ms",
        "recsys.plugin-max-kb",
        "recsys.model-max-mb",
        "recsys.gpu-min-rows",
        "recsys.gpu",
    ] {
        assert!(
            names.contains(&n),
            "CONFIG GET recsys.* lacks {n}: {names:?}"
        );
    }
    assert_eq!(config(&mut c, "recsys.history"), "7");
    assert_eq!(config(&mut c, "recsys.plugin-timeout-ms"), "11");

    // HISTORY at run time: the next EVENT keeps 3 recent items.
    load_catalog(&mut c, "cat", &vectors(20, 4, 2), "");
    cmd(&mut c, "CONFIG SET recsys.history 3").unwrap();
    for i in 0..6 {
        cmd(&mut c, &format!("RECSYS.EVENT cat u item:{i}")).unwrap();
    }
    let recent = recent_items(&mut c, "u");
    assert_eq!(recent, ["item:5", "item:4", "item:3"]);

    // The plugin size limit at run time: 1 KiB refuses a real component.
    cmd(&mut c, "CONFIG SET recsys.plugin-max-kb 1").unwrap();
    let wasm = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/exclude-attr.wasm"),
    )
    .unwrap();
    let e = err(&mut c, &[b"RECSYS.PLUGIN.LOAD", b"p", &wasm]);
    assert!(e.contains("the limit is 1024"), "{e}");
    cmd(&mut c, "CONFIG SET recsys.plugin-max-kb 8192").unwrap();
    call(&mut c, &[b"RECSYS.PLUGIN.LOAD", b"p", &wasm]).unwrap();

    // Bounds and immutables are refused, and change nothing.
    for (name, value) in [
        ("recsys.history", "0"),
        ("recsys.history", "lots"),
        ("recsys.workers", "3"),
        ("recsys.gpu", "on"),
        ("recsys.plugin-memory-mb", "32"),
    ] {
        let before = config(&mut c, name);
        let e = err(
            &mut c,
            &[b"CONFIG", b"SET", name.as_bytes(), value.as_bytes()],
        );
        assert!(e.contains(name), "{e}");
        assert_eq!(config(&mut c, name), before);
    }

    // CONFIG REWRITE keeps what CONFIG SET changed, across a restart.
    cmd(&mut c, "CONFIG SET recsys.model-max-mb 17").unwrap();
    cmd(&mut c, "CONFIG REWRITE").unwrap();
    let conf = std::fs::read_to_string(s.dir.path().join("redis.conf")).unwrap();
    assert!(conf.contains("recsys.model-max-mb 17"), "{conf}");
    let module = s.module.clone();
    let dir = s.stop(false);
    let s2 = RedisServer::start_in(dir, &module, &["HISTORY", "7"], &[]).unwrap();
    let mut c2 = s2.connection().unwrap();
    assert_eq!(config(&mut c2, "recsys.model-max-mb"), "17");
    assert_eq!(config(&mut c2, "recsys.history"), "3");
}

#[test]
fn command_docs_describe_every_argument() {
    let s = server();
    let mut c = s.connection().unwrap();
    let names: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("recsys")
        .query(&mut c)
        .unwrap();
    // 30 commands (RECSYS.COPY, RECSYS.COPIES and RECSYS.COPIES.WAIT for
    // clusters among them), and the one-dot names of the 20 with two dots
    // (for cluster clients that read `module.command`, see docs/cluster.md).
    assert_eq!(names.len(), 50, "{names:?}");
    for n in &names {
        let upper = n.to_ascii_uppercase();
        if upper.matches('.').count() == 2 {
            let (module, rest) = upper.split_once('.').unwrap();
            let alias = format!("{module}.{}", rest.replace('.', "_"));
            assert!(
                names.iter().any(|m| m.eq_ignore_ascii_case(&alias)),
                "{n} has no alias {alias}"
            );
        }
    }
    load_catalog(&mut c, "cat", &vectors(10, 4, 9), "");
    cmd(&mut c, "RECSYS.ITEM_SET cat x VALUES 1 0 0 0").unwrap();
    let got: Value = cmd(&mut c, "RECSYS.ITEM_GET cat x").unwrap();
    assert_ne!(
        got,
        Value::Nil,
        "the alias writes and reads like the command"
    );
    for name in &names {
        let docs: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let text = format!("{docs:?}");
        if ["RECSYS.PLUGIN.LIST", "RECSYS.PLUGIN_LIST", "RECSYS.COPIES"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            continue; // takes no arguments
        }
        assert!(text.contains("arguments"), "{name}: {text}");
        let keys: Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let has_key_arg = text.contains("\"key\"") || text.contains("key_spec_index");
        let has_key_spec = format!("{keys:?}").contains("begin_search");
        assert_eq!(
            has_key_arg, has_key_spec,
            "{name}: key arguments and key specs disagree"
        );
    }
    // The shape of one: RECOMMEND's FILTER repeats with its token.
    let docs: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("RECSYS.RECOMMEND")
        .query(&mut c)
        .unwrap();
    let text = format!("{docs:?}");
    for needle in [
        "EXCLUDE_SEEN",
        "FILTER",
        "multiple_token",
        "temperature",
        "WITHSCORES",
    ] {
        assert!(
            text.contains(needle),
            "RECOMMEND docs lack {needle}: {text}"
        );
    }
}

#[test]
fn one_version_everywhere() {
    let s = server();
    let mut c = s.connection().unwrap();
    let (major, minor, patch) = {
        let v: Vec<u32> = env!("CARGO_PKG_VERSION")
            .split(['.', '-'])
            .take(3)
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1], v[2])
    };
    let encoded = (major * 10000 + minor * 100 + patch) as i64;
    let modules: Vec<Vec<Value>> = redis::cmd("MODULE").arg("LIST").query(&mut c).unwrap();
    let ours = modules
        .iter()
        .find(|m| format!("{m:?}").contains("recsys"))
        .unwrap();
    let ver = ours
        .iter()
        .position(|v| matches!(v, Value::BulkString(b) if b == b"ver"))
        .map(|i| ours[i + 1].clone())
        .unwrap();
    assert_eq!(ver, Value::Int(encoded));
    assert_eq!(
        num(&info(&mut c, "recsys"), "recsys_version"),
        encoded as f64
    );
    let docs: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("RECSYS.CREATE")
        .query(&mut c)
        .unwrap();
    assert!(
        format!("{docs:?}").contains(&format!("{major}.{minor}.{patch}")),
        "{docs:?}"
    );
}

fn digest_value(c: &mut Connection, key: &str) -> String {
    let v: Vec<String> = redis::cmd("DEBUG")
        .arg("DIGEST-VALUE")
        .arg(key)
        .query(c)
        .unwrap();
    v[0].clone()
}

#[test]
fn digest_follows_the_content_not_the_history() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(300, 8, 3);
    load_catalog(&mut c, "a", &vs, "");
    // Same items, inserted backwards (another graph), and a deleted extra.
    cmd(&mut c, "RECSYS.CREATE b DIM 8").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET b extra VALUES 1 0 0 0 0 0 0 0").unwrap();
    for (i, v) in vs.iter().enumerate().rev() {
        call(
            &mut c,
            &[
                b"RECSYS.ITEM.SET",
                b"b",
                format!("item:{i}").as_bytes(),
                b"FP32",
                &to_fp32_blob(v),
            ],
        )
        .unwrap();
    }
    cmd(&mut c, "RECSYS.ITEM.DEL b extra").unwrap();
    let (da, db) = (digest_value(&mut c, "a"), digest_value(&mut c, "b"));
    assert_ne!(da, "0".repeat(40));
    assert_eq!(da, db);
    cmd(&mut c, r#"RECSYS.ITEM.SETATTRS b item:3 {"x":1}"#).unwrap();
    assert_ne!(
        digest_value(&mut c, "b"),
        da,
        "attributes are part of the digest"
    );

    // A replica's DEBUG DIGEST equals its master's after a full sync and
    // after streamed writes.
    let r = server();
    let mut rc = r.connection().unwrap();
    cmd(&mut rc, &format!("REPLICAOF 127.0.0.1 {}", s.port)).unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET a late VALUES 0 1 0 0 0 0 0 0").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m: String = redis::cmd("DEBUG").arg("DIGEST").query(&mut c).unwrap();
        let rep: String = redis::cmd("DEBUG").arg("DIGEST").query(&mut rc).unwrap();
        if m == rep {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica digest {rep} != master {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `ACL SETUSER` lines of docs/operations.md for `heading`'s block.
fn documented_acl_lines(block: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"),
    )
    .unwrap();
    let start = doc
        .find(&format!("<!-- {block} -->"))
        .unwrap_or_else(|| panic!("docs/operations.md has no <!-- {block} --> block"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .filter(|l| l.starts_with("ACL SETUSER"))
        .map(str::to_string)
        .collect()
}

fn as_user(s: &RedisServer, user: &str, pass: &str) -> Connection {
    let mut c = s.connection().unwrap();
    let _: () = redis::cmd("AUTH")
        .arg(user)
        .arg(pass)
        .query(&mut c)
        .unwrap();
    c
}

fn allowed(c: &mut Connection, line: &str) -> bool {
    match cmd(c, line) {
        Ok(_) => true,
        Err(e) if e.to_string().contains("NOPERM") => false,
        Err(e) => panic!("{line}: {e}"),
    }
}

#[test]
fn documented_acl_rules_and_categories_hold() {
    let s = server();
    let mut c = s.connection().unwrap();
    load_catalog(&mut c, "cat", &vectors(50, 4, 5), "");
    let lines = documented_acl_lines("acl-rules");
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        cmd(&mut c, l).unwrap_or_else(|e| panic!("{l}: {e}"));
    }
    let mut reader = as_user(&s, "recsys-reader", "reader-secret");
    let mut writer = as_user(&s, "recsys-writer", "writer-secret");
    let mut admin = as_user(&s, "recsys-admin", "admin-secret");
    let read = "RECSYS.RECOMMEND cat u1 K 3";
    let write = "RECSYS.ITEM.SET cat new VALUES 1 0 0 0";
    let event = "RECSYS.EVENT cat u1 item:1";
    let install = "RECSYS.MODEL.DEL cat nothing";
    assert!(allowed(&mut reader, read));
    assert!(allowed(&mut reader, "RECSYS.INFO cat"));
    assert!(!allowed(&mut reader, write));
    assert!(!allowed(&mut reader, event));
    assert!(allowed(&mut writer, read));
    assert!(allowed(&mut writer, write));
    assert!(allowed(&mut writer, event));
    assert!(!allowed(&mut writer, install));
    assert!(!allowed(&mut writer, "RECSYS.PLUGIN.DEL p"));
    // Both spellings of a two-dot command are covered by the rules.
    assert!(allowed(&mut reader, "RECSYS.ITEM_GET cat item:1"));
    assert!(!allowed(
        &mut reader,
        "RECSYS.ITEM_SET cat new VALUES 1 0 0 0"
    ));
    assert!(allowed(
        &mut writer,
        "RECSYS.ITEM_SET cat new VALUES 1 0 0 0"
    ));
    assert!(!allowed(&mut writer, "RECSYS.MODEL_DEL cat nothing"));
    assert!(allowed(&mut admin, install));
    assert!(allowed(&mut admin, "RECSYS.PLUGIN.DEL p"));

    // Redis 7.2+ lets modules set ACL categories: rules by category work.
    if server_version(&mut c) >= (7, 2) {
        cmd(&mut c, "ACL SETUSER no-writes on >p ~* &* +@all -@write").unwrap();
        cmd(
            &mut c,
            "ACL SETUSER only-reads on >p ~* &* -@all +@read +@connection",
        )
        .unwrap();
        cmd(
            &mut c,
            "ACL SETUSER no-danger on >p ~* &* +@all -@dangerous",
        )
        .unwrap();
        let mut no_writes = as_user(&s, "no-writes", "p");
        let mut only_reads = as_user(&s, "only-reads", "p");
        let mut no_danger = as_user(&s, "no-danger", "p");
        assert!(!allowed(&mut no_writes, "RECSYS.CREATE other DIM 4"));
        assert!(!allowed(&mut no_writes, write));
        assert!(allowed(&mut no_writes, read));
        assert!(allowed(&mut only_reads, "RECSYS.INFO cat"));
        assert!(allowed(&mut only_reads, read));
        assert!(!allowed(&mut only_reads, write));
        assert!(allowed(&mut no_danger, write));
        assert!(!allowed(&mut no_danger, install));
        // COMMAND INFO shows them (ACL CAT lists built-in commands only).
        let info: Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg("RECSYS.PLUGIN.LOAD")
            .query(&mut c)
            .unwrap();
        let text = format!("{info:?}");
        for cat in ["@write", "@slow", "@admin", "@dangerous"] {
            assert!(text.contains(cat), "PLUGIN.LOAD lacks {cat}: {text}");
        }
    }
}
