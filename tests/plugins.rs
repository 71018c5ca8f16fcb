//! WebAssembly plugins through real Redis: LOAD/LIST/INFO/DEL, use in
//! RECOMMEND, hostile plugins that must not hurt the server, persistence and
//! replication. The components come from plugins/build.sh.

mod common;
use common::*;
use recsys::vector::to_fp32_blob;
use redis::{Connection, Value};

fn load(c: &mut Connection, name: &str, file: &str) -> redis::RedisResult<Value> {
    redis::cmd("RECSYS.PLUGIN.LOAD")
        .arg(name)
        .arg(wasm(file))
        .query(c)
}

/// Items i0..i29 on a line; stock "out" for even i, sponsored for i == 7.
fn catalog(c: &mut Connection) {
    cmd(c, "RECSYS.CREATE cat DIM 2 METRIC L2").unwrap();
    for i in 0..30 {
        let attrs = format!(
            r#"{{"stock":"{}","sponsored":{},"category":"c{}"}}"#,
            if i % 2 == 0 { "out" } else { "in" },
            (i == 7) as i32,
            i % 3
        );
        redis::cmd("RECSYS.ITEM.SET")
            .arg("cat")
            .arg(format!("i{i}"))
            .arg("VALUES")
            .arg(i)
            .arg(0)
            .arg("ATTRS")
            .arg(attrs)
            .query::<i64>(c)
            .unwrap();
    }
}

fn rec(c: &mut Connection, opts: &[&str]) -> redis::RedisResult<Vec<String>> {
    redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("user")
        .arg("VECTOR")
        .arg(to_fp32_blob(&[0.0, 0.0]))
        .arg(opts)
        .query(c)
}

fn info_field<T: redis::FromRedisValue>(c: &mut Connection, name: &str, field: &str) -> T {
    let v: Vec<Value> = redis::cmd("RECSYS.PLUGIN.INFO").arg(name).query(c).unwrap();
    let mut it = v.into_iter();
    while let (Some(k), Some(val)) = (it.next(), it.next()) {
        if redis::from_redis_value::<String>(&k).unwrap() == field {
            return redis::from_redis_value(&val).unwrap();
        }
    }
    panic!("no {field}");
}

fn info_int(c: &mut Connection, name: &str, field: &str) -> i64 {
    info_field(c, name, field)
}

fn info_text(c: &mut Connection, name: &str, field: &str) -> String {
    info_field(c, name, field)
}

#[test]
fn load_list_info_replace_delete() {
    let s = server();
    let mut c = s.connection().unwrap();
    let v = format!("{:?}", load(&mut c, "nostock", "exclude-attr").unwrap());
    assert!(v.contains("filter") && v.contains("sha256"), "{v}");
    load(&mut c, "boost", "boost-sponsored").unwrap();
    let e = load(&mut c, "nostock", "max-per-category")
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    let list = format!("{:?}", cmd(&mut c, "RECSYS.PLUGIN.LIST").unwrap());
    assert!(
        list.contains("nostock") && list.contains("boost") && list.contains("order"),
        "{list}"
    );
    let before = format!("{:?}", cmd(&mut c, "RECSYS.PLUGIN.INFO nostock").unwrap());
    redis::cmd("RECSYS.PLUGIN.LOAD")
        .arg("nostock")
        .arg(wasm("max-per-category"))
        .arg("REPLACE")
        .query::<Value>(&mut c)
        .unwrap();
    let after = format!("{:?}", cmd(&mut c, "RECSYS.PLUGIN.INFO nostock").unwrap());
    assert_ne!(before, after, "REPLACE swapped the component");
    assert_eq!(
        cmd(&mut c, "RECSYS.PLUGIN.DEL nostock").unwrap(),
        Value::Int(1)
    );
    assert_eq!(
        cmd(&mut c, "RECSYS.PLUGIN.DEL nostock").unwrap(),
        Value::Int(0)
    );
    assert!(err_line(&mut c, "RECSYS.PLUGIN.INFO nostock").contains("no plugin named"));
    assert!(
        err(&mut c, &[b"RECSYS.PLUGIN.LOAD", b"bad name!", b"x"]).contains("plugin name must be")
    );
    assert!(err(
        &mut c,
        &[b"RECSYS.PLUGIN.LOAD", b"junk", b"\0asm\x01\0\0\0garbage"]
    )
    .contains("not a valid WebAssembly component"));
    let e = load(&mut c, "sneaky", "forbidden-import")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("evil:plugin/network"),
        "the refused import is named: {e}"
    );
}

#[test]
fn plugins_filter_and_order_recommendations() {
    let s = server();
    let mut c = s.connection().unwrap();
    catalog(&mut c);
    load(&mut c, "nostock", "exclude-attr").unwrap();
    load(&mut c, "percat", "max-per-category").unwrap();
    load(&mut c, "boost", "boost-sponsored").unwrap();
    let plain = rec(&mut c, &["K", "5"]).unwrap();
    assert_eq!(plain, vec!["i0", "i1", "i2", "i3", "i4"]);
    let r = rec(
        &mut c,
        &["K", "5", "FILTER", "nostock", "ARGS", "stock=out"],
    )
    .unwrap();
    assert_eq!(r, vec!["i1", "i3", "i5", "i7", "i9"]);
    let r = rec(
        &mut c,
        &[
            "K",
            "5",
            "FILTER",
            "nostock",
            "ARGS",
            "stock=out",
            "FILTER",
            "percat",
            "ARGS",
            "category:1",
        ],
    )
    .unwrap();
    assert_eq!(r, vec!["i1", "i3", "i5"], "several filters run in sequence");
    // RECOMMEND scores are higher-is-better (-distance under L2): a boost
    // moves the sponsored item first in the plugin's order.
    let r = rec(
        &mut c,
        &[
            "K",
            "3",
            "FILTER",
            "nostock",
            "ARGS",
            "stock=out",
            "ORDER",
            "boost",
            "ARGS",
            "sponsored:100",
        ],
    )
    .unwrap();
    assert_eq!(r[0], "i7");
    assert!(err(
        &mut c,
        &[b"RECSYS.RECOMMEND", b"cat", b"u", b"FILTER", b"boost"]
    )
    .contains("implements the order world"));
    assert!(err(
        &mut c,
        &[b"RECSYS.RECOMMEND", b"cat", b"u", b"FILTER", b"nope"]
    )
    .contains("no plugin named 'nope'"));
    assert!(err(
        &mut c,
        &[
            b"RECSYS.RECOMMEND",
            b"cat",
            b"u",
            b"ORDER",
            b"boost",
            b"SOFTMAX",
            b"1"
        ]
    )
    .contains("cannot be combined"));
    assert!(
        err(&mut c, &[b"RECSYS.RECOMMEND", b"cat", b"u", b"ARGS", b"x"])
            .contains("ARGS must follow")
    );
    assert!(info_int(&mut c, "nostock", "calls") >= 3);
}

#[test]
fn hostile_plugins_never_hurt_the_server() {
    let s = server();
    let mut c = s.connection().unwrap();
    catalog(&mut c);
    load(&mut c, "bad", "hostile").unwrap();
    for (behaviour, want) in [
        ("loop", "deadline exceeded"),
        // Out of memory: the memory cap (PLUGIN_MEMORY_MB) refuses to grow
        // linear memory, long before the deadline.
        ("oom", "forcing trap when growing memory to 16908288 bytes"),
        // Out of stack: the guest's shadow stack runs off the bottom of its
        // memory, a trap, not the deadline.
        ("stack", "out of bounds memory access"),
        ("trap", "plugin trapped"),
        ("range", "out of range"),
        ("dup", "returned twice"),
        ("huge", "indices for"),
        ("error", "refusing on purpose"),
    ] {
        let e = rec(&mut c, &["K", "5", "FILTER", "bad", "ARGS", behaviour])
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{behaviour}: {e}");
        if behaviour == "oom" || behaviour == "stack" {
            assert!(!e.contains("deadline"), "a cap, not the clock: {e}");
        }
        assert_eq!(
            cmd(&mut c, "PING").unwrap(),
            Value::SimpleString("PONG".into())
        );
        assert_eq!(
            rec(&mut c, &["K", "2"]).unwrap(),
            vec!["i0", "i1"],
            "serves RECOMMEND after {behaviour}"
        );
    }
    // Fail-open: the stage is skipped and the failure reported.
    let v: Value = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("user")
        .arg("VECTOR")
        .arg(to_fp32_blob(&[0.0, 0.0]))
        .arg("K")
        .arg(2)
        .arg("FILTER")
        .arg("bad")
        .arg("ARGS")
        .arg("trap")
        .arg("FAILOPEN")
        .arg("EXPLAIN")
        .query(&mut c)
        .unwrap();
    let text = format!("{v:?}");
    assert!(
        text.contains("i0") && text.contains("plugin trapped"),
        "{text}"
    );
    assert!(info_int(&mut c, "bad", "traps") >= 5);
    assert!(info_int(&mut c, "bad", "errors") >= 4);
    let mut s = s;
    assert!(s.is_alive());
}

/// A plugin that counts its calls in its own memory keeps 1 candidate on
/// every request: nothing it wrote survives into the next request.
#[test]
fn plugin_memory_does_not_survive_between_requests() {
    let s = server_with(&["WORKERS", "2"], &[]);
    let mut c = s.connection().unwrap();
    catalog(&mut c);
    load(&mut c, "bad", "hostile").unwrap();
    for _ in 0..20 {
        assert_eq!(
            rec(&mut c, &["K", "5", "FILTER", "bad", "ARGS", "remember"]).unwrap(),
            vec!["i0"]
        );
    }
    assert_eq!(info_int(&mut c, "bad", "calls"), 20);
    // Those 20 calls shared per-thread instances (one per worker thread at
    // most, plus the main thread's), each reset after every call.
    assert_eq!(info_text(&mut c, "bad", "instance_reuse"), "yes");
    let made = info_int(&mut c, "bad", "instances");
    assert!((1..=3).contains(&made), "{made} instances for 20 calls");
    // A call that traps leaves no instance to reuse: the next call still
    // starts from the initial state.
    assert!(rec(&mut c, &["K", "5", "FILTER", "bad", "ARGS", "trap"]).is_err());
    assert_eq!(
        rec(&mut c, &["K", "5", "FILTER", "bad", "ARGS", "remember"]).unwrap(),
        vec!["i0"]
    );
}

#[test]
fn limits_are_module_arguments() {
    let s = server_with(&["PLUGIN_MAX_KB", "10", "PLUGIN_TIMEOUT_MS", "20"], &[]);
    let mut c = s.connection().unwrap();
    let e = load(&mut c, "big", "exclude-attr").unwrap_err().to_string();
    assert!(e.contains("the limit is 10240"), "{e}");

    // PLUGIN_TIMEOUT_MS: a call is cut after that much CPU time, so an
    // endless loop under a 300 ms limit takes at least that long.
    let s = server_with(&["PLUGIN_TIMEOUT_MS", "300"], &[]);
    let mut c = s.connection().unwrap();
    catalog(&mut c);
    load(&mut c, "bad", "hostile").unwrap();
    let t = std::time::Instant::now();
    let e = rec(&mut c, &["K", "5", "FILTER", "bad", "ARGS", "loop"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("deadline exceeded"), "{e}");
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(290),
        "cut after {:?}, before the 300 ms limit",
        t.elapsed()
    );

    // PLUGIN_MEMORY_MB: 4 MiB fits the default 16 MiB, not a 2 MiB cap.
    assert_eq!(
        rec(&mut c, &["K", "2", "FILTER", "bad", "ARGS", "alloc:4"]).unwrap(),
        vec!["i0", "i1"]
    );
    let s = server_with(&["PLUGIN_MEMORY_MB", "2"], &[]);
    let mut c = s.connection().unwrap();
    catalog(&mut c);
    load(&mut c, "bad", "hostile").unwrap();
    let e = rec(&mut c, &["K", "2", "FILTER", "bad", "ARGS", "alloc:4"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("plugin trapped"), "{e}");
    assert!(
        !e.contains("deadline"),
        "the memory cap, not the clock: {e}"
    );
    assert_eq!(rec(&mut c, &["K", "2"]).unwrap(), vec!["i0", "i1"]);
}

#[test]
fn plugins_persist_and_replicate() {
    let s = server();
    let mut c = s.connection().unwrap();
    catalog(&mut c);
    load(&mut c, "nostock", "exclude-attr").unwrap();
    let replica = server_with(&[], &["--replicaof", "127.0.0.1", &s.port.to_string()]);
    let mut r = replica.connection().unwrap();
    load(&mut c, "boost", "boost-sponsored").unwrap();
    cmd(&mut c, "DEBUG RELOAD").unwrap();
    assert_eq!(
        rec(
            &mut c,
            &["K", "2", "FILTER", "nostock", "ARGS", "stock=out"]
        )
        .unwrap(),
        vec!["i1", "i3"]
    );
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut c).unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        if let Ok(v) = redis::cmd("RECSYS.RECOMMEND")
            .arg("cat")
            .arg("u")
            .arg("VECTOR")
            .arg(to_fp32_blob(&[0.0, 0.0]))
            .arg("K")
            .arg(2)
            .arg("FILTER")
            .arg("nostock")
            .arg("ARGS")
            .arg("stock=out")
            .arg("ORDER")
            .arg("boost")
            .arg("ARGS")
            .arg("sponsored:0")
            .query::<Vec<String>>(&mut r)
        {
            got = v;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        got,
        vec!["i1", "i3"],
        "the replica has both plugins (full sync + stream)"
    );
    let module = s.module.clone();
    let dir = s.stop(true);
    let s = RedisServer::start_in(dir, &module, &[], &[]).unwrap();
    let mut c = s.connection().unwrap();
    let list = format!("{:?}", cmd(&mut c, "RECSYS.PLUGIN.LIST").unwrap());
    assert!(
        list.contains("nostock") && list.contains("boost"),
        "restart from RDB keeps plugins: {list}"
    );
}

#[test]
fn a_plugin_written_in_c_works() {
    let s = server();
    let mut c = s.connection().unwrap();
    catalog(&mut c);
    let v = format!("{:?}", load(&mut c, "minscore", "min-score").unwrap());
    assert!(v.contains("filter"), "{v}");
    // L2: scores are -distance; keep items within distance 3 of the origin.
    let r = rec(&mut c, &["K", "10", "FILTER", "minscore", "ARGS", "-3"]).unwrap();
    assert_eq!(r, vec!["i0", "i1", "i2", "i3"]);
    let e = rec(&mut c, &["K", "10", "FILTER", "minscore", "ARGS", "abc"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("config must be a number"), "{e}");
}
