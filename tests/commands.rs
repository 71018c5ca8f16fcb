//! Every RECSYS.* command through a real redis-server: replies, options, and
//! the error each bad input must get (with nothing changed).

mod common;
use common::*;
use recsys::vector::to_fp32_blob;
use redis::Value;

#[test]
fn create_item_set_get_search_similar_info() {
    let s = server();
    let mut c = s.connection().unwrap();
    assert_eq!(
        cmd(
            &mut c,
            "RECSYS.CREATE cat DIM 3 METRIC COSINE M 8 EF_CONSTRUCTION 50 EF_SEARCH 20 QUANT F32"
        )
        .unwrap(),
        Value::Okay
    );
    let created: i64 = redis::cmd("RECSYS.ITEM.SET")
        .arg("cat")
        .arg("a")
        .arg("VALUES")
        .arg("1")
        .arg("0")
        .arg("0")
        .arg("ATTRS")
        .arg(r#"{"genre":"drama","year":1999}"#)
        .query(&mut c)
        .unwrap();
    assert_eq!(created, 1);
    let created: i64 = redis::cmd("RECSYS.ITEM.SET")
        .arg("cat")
        .arg("b")
        .arg("FP32")
        .arg(to_fp32_blob(&[0.0, 1.0, 0.0]))
        .query(&mut c)
        .unwrap();
    assert_eq!(created, 1);
    cmd(&mut c, "RECSYS.ITEM.SET cat c VALUES 1 1 0").unwrap();
    // Replacing returns 0.
    let replaced: i64 = redis::cmd("RECSYS.ITEM.SET")
        .arg("cat")
        .arg("c")
        .arg("VALUES")
        .arg("1")
        .arg("0.9")
        .arg("0")
        .query(&mut c)
        .unwrap();
    assert_eq!(replaced, 0);

    let ids: Vec<String> = redis::cmd("RECSYS.SEARCH")
        .arg("cat")
        .arg(2)
        .arg("VALUES")
        .arg(1)
        .arg(0.1)
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(ids, vec!["a", "c"]);
    let with: Vec<(String, f64)> = redis::cmd("RECSYS.SEARCH")
        .arg("cat")
        .arg(3)
        .arg("FP32")
        .arg(to_fp32_blob(&[0.0, 1.0, 0.0]))
        .arg("EF")
        .arg(10)
        .arg("WITHSCORES")
        .query(&mut c)
        .unwrap();
    assert_eq!(with[0].0, "b");
    assert!(
        (with[0].1 - 1.0).abs() < 1e-5,
        "cosine of identical vectors is 1: {with:?}"
    );
    assert!(with.windows(2).all(|w| w[0].1 >= w[1].1), "best first");

    let sim: Vec<String> = redis::cmd("RECSYS.SIMILAR")
        .arg("cat")
        .arg("a")
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!(sim, vec!["c", "b"], "never the item itself");

    let got: Vec<Value> = redis::cmd("RECSYS.ITEM.GET")
        .arg("cat")
        .arg("a")
        .query(&mut c)
        .unwrap();
    let attrs: String = redis::from_redis_value(&got[3]).unwrap();
    assert_eq!(attrs, r#"{"genre":"drama","year":1999}"#);
    let vector: Vec<f64> = redis::from_redis_value(&got[1]).unwrap();
    assert_eq!(vector, vec![1.0, 0.0, 0.0]);
    let got: Vec<Value> = redis::cmd("RECSYS.ITEM.GET")
        .arg("cat")
        .arg("b")
        .arg("FP32")
        .query(&mut c)
        .unwrap();
    let blob: Vec<u8> = redis::from_redis_value(&got[1]).unwrap();
    assert_eq!(blob, to_fp32_blob(&[0.0, 1.0, 0.0]));
    assert_eq!(cmd(&mut c, "RECSYS.ITEM.GET cat nope").unwrap(), Value::Nil);

    assert_eq!(info_field(&mut c, "cat", "dim"), 3);
    assert_eq!(info_field(&mut c, "cat", "m"), 8);
    assert_eq!(info_field(&mut c, "cat", "ef_construction"), 50);
    assert_eq!(info_field(&mut c, "cat", "ef_search"), 20);
    assert_eq!(info_field(&mut c, "cat", "items"), 3);
    assert!(info_field(&mut c, "cat", "memory_bytes") > 0);

    let removed: i64 = redis::cmd("RECSYS.ITEM.DEL")
        .arg("cat")
        .arg("a")
        .arg("zzz")
        .arg("a")
        .query(&mut c)
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(info_field(&mut c, "cat", "items"), 2);
    assert_eq!(info_field(&mut c, "cat", "deleted_not_reclaimed"), 1);
    let ids: Vec<String> = redis::cmd("RECSYS.SEARCH")
        .arg("cat")
        .arg(10)
        .arg("VALUES")
        .arg(1)
        .arg(0)
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert!(!ids.contains(&"a".to_string()));
    let removed: i64 = redis::cmd("RECSYS.ITEM.DEL")
        .arg("missing-key")
        .arg("a")
        .query(&mut c)
        .unwrap();
    assert_eq!(removed, 0);
}

#[test]
fn metrics_and_quantization_score_as_documented() {
    let s = server();
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE l2 DIM 2 METRIC L2").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET l2 o VALUES 0 0").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET l2 p VALUES 3 4").unwrap();
    let r: Vec<(String, f64)> = redis::cmd("RECSYS.SEARCH")
        .arg("l2")
        .arg(2)
        .arg("VALUES")
        .arg(0)
        .arg(0)
        .arg("WITHSCORES")
        .query(&mut c)
        .unwrap();
    assert_eq!(r[0], ("o".to_string(), 0.0));
    assert!((r[1].1 - 5.0).abs() < 1e-5);

    cmd(&mut c, "RECSYS.CREATE ip DIM 2 METRIC IP").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET ip x VALUES 2 0").unwrap();
    let r: Vec<(String, f64)> = redis::cmd("RECSYS.SEARCH")
        .arg("ip")
        .arg(1)
        .arg("VALUES")
        .arg(3)
        .arg(0)
        .arg("WITHSCORES")
        .query(&mut c)
        .unwrap();
    assert!((r[0].1 - 6.0).abs() < 1e-5);

    let vs = vectors(500, 16, 1);
    load_catalog(&mut c, "q8", &vs, "QUANT Q8");
    let ids = search_ids(&mut c, "q8", &vs[7], 1);
    assert_eq!(ids, vec!["item:7"]);
    let got: Vec<Value> = redis::cmd("RECSYS.ITEM.GET")
        .arg("q8")
        .arg("item:7")
        .query(&mut c)
        .unwrap();
    let back: Vec<f64> = redis::from_redis_value(&got[1]).unwrap();
    let err: f64 = back
        .iter()
        .zip(&vs[7])
        .map(|(a, b)| (a - *b as f64).abs())
        .fold(0.0, f64::max);
    assert!(err < 0.01, "Q8 round trip error {err}");
}

#[test]
fn resp3_replies_are_maps() {
    let s = server();
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{}/?protocol=resp3", s.port)).unwrap();
    let mut c = client.get_connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 2").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 0").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET cat b VALUES 0 1").unwrap();
    match cmd(&mut c, "RECSYS.SEARCH cat 2 VALUES 1 0.1 WITHSCORES").unwrap() {
        Value::Map(pairs) => {
            assert_eq!(pairs.len(), 2);
            assert_eq!(pairs[0].0, Value::BulkString(b"a".to_vec()));
            assert!(matches!(pairs[0].1, Value::Double(_)));
        }
        other => panic!("expected a RESP3 map, got {other:?}"),
    }
    assert!(matches!(
        cmd(&mut c, "RECSYS.INFO cat").unwrap(),
        Value::Map(_)
    ));
    assert!(matches!(
        cmd(&mut c, "RECSYS.ITEM.GET cat a").unwrap(),
        Value::Map(_)
    ));
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let s = server();
    let mut c = s.connection().unwrap();
    assert!(err_line(&mut c, "RECSYS.CREATE x").contains("wrong number of arguments"));
    assert!(err_line(&mut c, "RECSYS.CREATE x DIM 0").contains("DIM must be between 1 and 4096"));
    assert!(err_line(&mut c, "RECSYS.CREATE x DIM 4097").contains("DIM must be between 1 and 4096"));
    assert!(err_line(&mut c, "RECSYS.CREATE x DIM abc").contains("DIM must be an integer"));
    assert!(err_line(&mut c, "RECSYS.CREATE x METRIC L2").contains("DIM is required"));
    assert!(err_line(&mut c, "RECSYS.CREATE x DIM 4 METRIC HAMMING").contains("unknown METRIC"));
    assert!(err_line(&mut c, "RECSYS.CREATE x DIM 4 QUANT Q4").contains("unknown QUANT"));
    assert!(
        err_line(&mut c, "RECSYS.CREATE x DIM 4 M 1000").contains("M must be between 2 and 128")
    );
    assert!(err_line(&mut c, "RECSYS.CREATE x DIM 4 M 1").contains("M must be between"));
    assert!(
        err_line(&mut c, "RECSYS.CREATE x DIM 4 EF_SEARCH 0").contains("EF_SEARCH must be between")
    );
    assert!(err_line(&mut c, "RECSYS.CREATE x DIM 4 COLOR red").contains("unknown option 'COLOR'"));
    assert!(err_line(&mut c, "RECSYS.CREATE x DIM 4 M").contains("missing M"));
    assert_eq!(
        cmd(&mut c, "EXISTS x").unwrap(),
        Value::Int(0),
        "failed CREATE wrote nothing"
    );

    cmd(&mut c, "RECSYS.CREATE cat DIM 3").unwrap();
    assert!(err_line(&mut c, "RECSYS.CREATE cat DIM 3").contains("already exists"));
    cmd(&mut c, "SET str hello").unwrap();
    assert!(err_line(&mut c, "RECSYS.CREATE str DIM 3").contains("already exists"));
    assert!(err_line(&mut c, "RECSYS.ITEM.SET str a VALUES 1 2 3").starts_with("WRONGTYPE"));
    assert!(err_line(&mut c, "RECSYS.SEARCH str 1 VALUES 1 2 3").starts_with("WRONGTYPE"));
    assert!(err_line(&mut c, "RECSYS.INFO str").starts_with("WRONGTYPE"));
    assert!(err_line(&mut c, "RECSYS.INFO nothing").contains("does not exist"));
    assert!(err_line(&mut c, "RECSYS.ITEM.SET nothing a VALUES 1 2 3").contains("does not exist"));

    cmd(&mut c, "RECSYS.ITEM.SET cat keep VALUES 1 2 3").unwrap();
    assert!(err_line(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 2").contains("VALUES needs 3 numbers"));
    assert!(err_line(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 2 3 4").contains("unknown option '4'"));
    assert!(err_line(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 nan 3").contains("not finite"));
    assert!(err_line(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 inf 3").contains("not finite"));
    assert!(err_line(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 x 3").contains("is not a number"));
    assert!(err_line(&mut c, "RECSYS.ITEM.SET cat a VALUES 0 0 0").contains("zero vector"));
    assert!(err(
        &mut c,
        &[b"RECSYS.ITEM.SET", b"cat", b"a", b"FP32", &[0u8; 11]]
    )
    .contains("must be 12 bytes"));
    let nan = to_fp32_blob(&[1.0, f32::NAN, 0.0]);
    assert!(err(&mut c, &[b"RECSYS.ITEM.SET", b"cat", b"a", b"FP32", &nan]).contains("not finite"));
    assert!(
        err_line(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 2 3 ATTRS {bad")
            .contains("not valid JSON")
    );
    assert!(
        err_line(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 2 3 ATTRS [1,2]")
            .contains("must be a JSON object")
    );
    assert!(
        err_line(&mut c, "RECSYS.ITEM.SET cat a VECTOR 1 2 3").contains("expected VALUES or FP32")
    );
    // Replacing with bad input keeps the old item.
    assert!(err_line(&mut c, "RECSYS.ITEM.SET cat keep VALUES 1 2 nan").contains("not finite"));
    assert_eq!(info_field(&mut c, "cat", "items"), 1);
    assert_ne!(cmd(&mut c, "RECSYS.ITEM.GET cat keep").unwrap(), Value::Nil);

    // MSET is all or nothing.
    let good = to_fp32_blob(&[1.0, 0.0, 0.0]);
    assert!(err(
        &mut c,
        &[b"RECSYS.ITEM.MSET", b"cat", b"m1", &good, b"m2", &[1u8; 5]]
    )
    .contains("item 'm2'"));
    assert!(err(&mut c, &[b"RECSYS.ITEM.MSET", b"cat", b"m1", &good, b"m2"]).contains("pairs"));
    assert_eq!(info_field(&mut c, "cat", "items"), 1);

    assert!(err_line(&mut c, "RECSYS.SEARCH cat 0 VALUES 1 2 3")
        .contains("K must be between 1 and 10000"));
    assert!(err_line(&mut c, "RECSYS.SEARCH cat 10001 VALUES 1 2 3")
        .contains("K must be between 1 and 10000"));
    assert!(err_line(&mut c, "RECSYS.SEARCH cat 5 VALUES 1 2").contains("VALUES needs 3"));
    assert!(
        err_line(&mut c, "RECSYS.SEARCH cat 5 VALUES 1 2 3 EF 0").contains("EF must be between")
    );
    assert!(
        err_line(&mut c, "RECSYS.SEARCH cat 5 VALUES 1 2 3 FAST").contains("unknown option 'FAST'")
    );
    assert!(err_line(&mut c, "RECSYS.SIMILAR cat nope 5").contains("does not exist"));
    assert!(err_line(&mut c, "RECSYS.ITEM.DEL cat").contains("wrong number of arguments"));
    assert!(err_line(&mut c, "RECSYS.INFO cat extra").contains("wrong number of arguments"));
    // COPIES.WAIT: outside a cluster no master holds a copy: 0 at once.
    assert_eq!(
        cmd(&mut c, "RECSYS.COPIES.WAIT cat 2 1000").unwrap(),
        Value::Int(0)
    );
    assert!(err_line(&mut c, "RECSYS.COPIES.WAIT nope 1 100").contains("does not exist"));
    assert!(err_line(&mut c, "RECSYS.COPIES.WAIT cat 1 0").contains("timeout"));
    assert!(err_line(&mut c, "RECSYS.COPIES.WAIT cat x 10").contains("numcopies"));
    assert_eq!(
        cmd(&mut c, "PING").unwrap(),
        Value::SimpleString("PONG".into())
    );
}

#[test]
fn command_metadata_supports_acls_and_cluster_routing() {
    let s = server();
    let mut c = s.connection().unwrap();
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("RECSYS.SEARCH")
        .arg("{shop}:cat")
        .arg(10)
        .arg("VALUES")
        .arg(1)
        .arg(2)
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, vec!["{shop}:cat"]);
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("RECSYS.ITEM.DEL")
        .arg("cat")
        .arg("a")
        .arg("b")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, vec!["cat"], "item ids are not keys");
    let info = format!(
        "{:?}",
        cmd(
            &mut c,
            "COMMAND INFO RECSYS.SEARCH RECSYS.ITEM.SET RECSYS.INFO"
        )
        .unwrap()
    );
    assert!(
        info.contains("readonly")
            && info.contains("write")
            && info.contains("denyoom")
            && info.contains("fast"),
        "{info}"
    );
    let docs = format!("{:?}", cmd(&mut c, "COMMAND DOCS RECSYS.CREATE").unwrap());
    assert!(docs.contains("Creates a catalog"), "{docs}");
    // Every option RECOMMEND and BATCH read (their "unknown option" lists
    // come from the parser's one list) is documented as a token.
    cmd(&mut c, "RECSYS.CREATE opts DIM 2").unwrap();
    for (command, call) in [
        ("RECSYS.RECOMMEND", "RECSYS.RECOMMEND opts u NOPE"),
        (
            "RECSYS.BATCH",
            "RECSYS.BATCH opts MATCH u:* K 1 INTO r: NOPE",
        ),
    ] {
        let e = err_line(&mut c, call);
        let listed = e.split("expected ").nth(1).expect("a list of options");
        let docs = format!(
            "{:?}",
            cmd(&mut c, &format!("COMMAND DOCS {command}")).unwrap()
        );
        let options: Vec<&str> = listed.split(", ").collect();
        assert!(options.contains(&"SEQUENCE") && options.len() > 10, "{e}");
        for option in options {
            let token = format!("bulk-string('\"{option}\"')");
            assert!(
                docs.contains(&token),
                "{command}: {option} not in COMMAND DOCS: {docs}"
            );
        }
    }
    // ACLs: commands can be granted one by one, and key patterns apply
    // through the key specs (Redis 7.0 has no module ACL categories).
    cmd(
        &mut c,
        "ACL SETUSER reader on nopass ~shop:* +RECSYS.INFO +RECSYS.SEARCH",
    )
    .unwrap();
    cmd(&mut c, "RECSYS.CREATE shop:cat DIM 2").unwrap();
    cmd(&mut c, "RECSYS.CREATE other DIM 2").unwrap();
    cmd(&mut c, "AUTH reader x").unwrap();
    assert!(err_line(&mut c, "RECSYS.ITEM.SET shop:cat a VALUES 1 2").contains("NOPERM"));
    assert!(err_line(&mut c, "RECSYS.INFO other").contains("NOPERM"));
    cmd(&mut c, "RECSYS.INFO shop:cat").unwrap();
}

#[test]
fn searches_inside_multi_and_lua_run_inline() {
    let s = server();
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 2").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 0").unwrap();
    let (r,): (Vec<String>,) = redis::pipe()
        .atomic()
        .cmd("RECSYS.SEARCH")
        .arg("cat")
        .arg(1)
        .arg("VALUES")
        .arg(1)
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, vec!["a"]);
    let r: Vec<String> = redis::cmd("EVAL")
        .arg("return redis.call('RECSYS.SIMILAR', KEYS[1], 'a', 3)")
        .arg(1)
        .arg("cat")
        .query(&mut c)
        .unwrap();
    assert!(r.is_empty(), "the only item is never its own neighbour");
    // Inline in Lua on a real catalog: the same answers as from a client.
    cmd(&mut c, "RECSYS.ITEM.SET cat b VALUES 0.9 0.1").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET cat d VALUES 0 1").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET cat e VALUES 0.5 0.5").unwrap();
    let lua: Vec<String> = redis::cmd("EVAL")
        .arg("return redis.call('RECSYS.SIMILAR', KEYS[1], 'a', 3)")
        .arg(1)
        .arg("cat")
        .query(&mut c)
        .unwrap();
    let direct: Vec<String> = redis::cmd("RECSYS.SIMILAR")
        .arg("cat")
        .arg("a")
        .arg(3)
        .query(&mut c)
        .unwrap();
    assert_eq!(lua, vec!["b", "e", "d"]);
    assert_eq!(lua, direct);
}

fn recommend_cold(c: &mut redis::Connection, k: usize, opts: &[&str]) -> Vec<String> {
    redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("nobody")
        .arg("K")
        .arg(k)
        .arg(opts)
        .query(c)
        .unwrap()
}

#[test]
fn setattrs_changes_attributes_only() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(300, 8, 91);
    load_catalog(&mut c, "cat", &vs, "");
    cmd(
        &mut c,
        r#"RECSYS.ITEM.SETATTRS cat item:5 {"stock":"in","price":10}"#,
    )
    .unwrap();
    for _ in 0..3 {
        cmd(&mut c, "RECSYS.EVENT cat u:1 item:5").unwrap();
    }
    let similar_before: Vec<String> = redis::cmd("RECSYS.SIMILAR")
        .arg("cat")
        .arg("item:5")
        .arg(10)
        .query(&mut c)
        .unwrap();
    let slots_before = info_field(&mut c, "cat", "slots");
    assert_eq!(recommend_cold(&mut c, 1, &[]), vec!["item:5"]);
    assert_eq!(
        recommend_cold(&mut c, 1, &["WHERE", r#"stock == "in""#]),
        vec!["item:5"]
    );

    cmd(
        &mut c,
        r#"RECSYS.ITEM.SETATTRS cat item:5 {"stock":"out","price":12}"#,
    )
    .unwrap();
    let got: Vec<Value> = redis::cmd("RECSYS.ITEM.GET")
        .arg("cat")
        .arg("item:5")
        .arg("FP32")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        got[1],
        Value::BulkString(to_fp32_blob(&vs[5])),
        "vector kept"
    );
    assert_eq!(
        got[3],
        Value::BulkString(br#"{"price":12,"stock":"out"}"#.to_vec())
    );
    let similar_after: Vec<String> = redis::cmd("RECSYS.SIMILAR")
        .arg("cat")
        .arg("item:5")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert_eq!(similar_before, similar_after, "graph links kept");
    assert_eq!(
        info_field(&mut c, "cat", "slots"),
        slots_before,
        "no re-insert"
    );
    assert_eq!(
        recommend_cold(&mut c, 1, &[]),
        vec!["item:5"],
        "popularity kept"
    );
    assert!(
        recommend_cold(&mut c, 5, &["WHERE", r#"stock == "in""#]).is_empty(),
        "filters see the new value"
    );
    // `{}` removes the attributes.
    cmd(&mut c, "RECSYS.ITEM.SETATTRS cat item:5 {}").unwrap();
    let got: Vec<Value> = redis::cmd("RECSYS.ITEM.GET")
        .arg("cat")
        .arg("item:5")
        .query(&mut c)
        .unwrap();
    assert_eq!(got[3], Value::Nil);
    // ITEM.SET, by contrast, replaces the item: popularity starts over.
    cmd(&mut c, "RECSYS.EVENT cat u:1 item:6").unwrap();
    let v: Vec<String> = vs[5].iter().map(|x| x.to_string()).collect();
    cmd(
        &mut c,
        &format!("RECSYS.ITEM.SET cat item:5 VALUES {}", v.join(" ")),
    )
    .unwrap();
    assert_eq!(recommend_cold(&mut c, 1, &[]), vec!["item:6"]);

    for (line, want) in [
        ("RECSYS.ITEM.SETATTRS cat nope {}", "does not exist"),
        ("RECSYS.ITEM.SETATTRS cat item:1 [1]", "ATTRS"),
        ("RECSYS.ITEM.SETATTRS cat item:1 {", "not valid JSON"),
        (
            "RECSYS.ITEM.SETATTRS cat item:1 {} extra",
            "wrong number of arguments",
        ),
        ("RECSYS.ITEM.SETATTRS missing item:1 {}", "does not exist"),
    ] {
        let e = err_line(&mut c, line);
        assert!(e.contains(want), "{line}: {e}");
    }
    cmd(&mut c, "SET plain x").unwrap();
    assert!(err_line(&mut c, "RECSYS.ITEM.SETATTRS plain item:1 {}").starts_with("WRONGTYPE"));
}

#[test]
fn mset_withattrs_stores_attributes_all_or_nothing() {
    let s = server();
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 2").unwrap();
    let n: i64 = redis::cmd("RECSYS.ITEM.MSET")
        .arg("cat")
        .arg("WITHATTRS")
        .arg("a")
        .arg(to_fp32_blob(&[1.0, 0.0]))
        .arg(r#"{"genre":"x"}"#)
        .arg("b")
        .arg(to_fp32_blob(&[0.0, 1.0]))
        .arg("{}")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let got: Vec<Value> = redis::cmd("RECSYS.ITEM.GET")
        .arg("cat")
        .arg("a")
        .query(&mut c)
        .unwrap();
    assert_eq!(got[3], Value::BulkString(br#"{"genre":"x"}"#.to_vec()));
    let ids: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("u")
        .arg("VECTOR")
        .arg(to_fp32_blob(&[0.0, 1.0]))
        .arg("K")
        .arg(2)
        .arg("WHERE")
        .arg(r#"genre == "x""#)
        .query(&mut c)
        .unwrap();
    assert_eq!(ids, vec!["a"]);
    // One bad object fails the whole call, naming the item; nothing is written.
    let e = redis::cmd("RECSYS.ITEM.MSET")
        .arg("cat")
        .arg("WITHATTRS")
        .arg("c")
        .arg(to_fp32_blob(&[1.0, 1.0]))
        .arg("{}")
        .arg("d")
        .arg(to_fp32_blob(&[1.0, 1.0]))
        .arg("{oops")
        .query::<i64>(&mut c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("item 'd'") && e.contains("JSON"), "{e}");
    assert_eq!(info_field(&mut c, "cat", "items"), 2);
    let e = redis::cmd("RECSYS.ITEM.MSET")
        .arg("cat")
        .arg("WITHATTRS")
        .arg("c")
        .arg(to_fp32_blob(&[1.0, 1.0]))
        .query::<i64>(&mut c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("triples"), "{e}");
}
