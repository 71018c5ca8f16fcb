//! RECSYS.MODEL.* and RECOMMEND ... RANK through a real redis-server: native
//! DLRM and ONNX rankers, the query tower, bad input, persistence and
//! replication of models.

mod common;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use recsys::catalog::Catalog;
use recsys::features::attrs::Attrs;
use recsys::index::IndexParams;
use recsys::rank::{Kind, Model, ModelSpec, Role};
use recsys::vector::to_fp32_blob;
use redis::{Connection, Value};

const DIM: usize = 16;

fn ort_lib() -> String {
    recsys_cli::server::require_onnxruntime()
        .expect("ONNX Runtime for the tests")
        .display()
        .to_string()
}

fn ort_server(extra_args: &[&str], extra: &[&str]) -> RedisServer {
    let lib = ort_lib();
    let mut args = vec!["ORT_LIB", lib.as_str()];
    args.extend_from_slice(extra_args);
    server_with(&args, extra)
}

const TOWER_SCHEMA: &str = "DENSE user.age DENSE user.income SPARSE user.country 50 HASH";

/// Item attributes: c0..c7 categorical ids, deterministic per item.
fn attrs(i: usize) -> String {
    let cs: Vec<String> = (0..8)
        .map(|k| format!("\"c{k}\":{}", (i * 7 + k * 13) % 100))
        .collect();
    format!("{{{}}}", cs.join(","))
}

/// Loads 2,000 items with attributes into `cat` (and the same into a local
/// core catalog, to recompute scores).
fn load(c: &mut Connection) -> (Catalog, Vec<Vec<f32>>) {
    let vs = vectors(2000, DIM, 3);
    cmd(c, &format!("RECSYS.CREATE cat DIM {DIM}")).unwrap();
    let mut local = Catalog::new(IndexParams::new(DIM)).unwrap();
    for chunk in (0..vs.len()).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("RECSYS.ITEM.SET")
                .arg("cat")
                .arg(format!("item:{i}"))
                .arg("FP32")
                .arg(to_fp32_blob(&vs[i]))
                .arg("ATTRS")
                .arg(attrs(i))
                .ignore();
            local
                .set(
                    &format!("item:{i}"),
                    &vs[i],
                    Some(Attrs::parse(&attrs(i)).unwrap()),
                )
                .unwrap();
        }
        let _: () = pipe.query(c).unwrap();
    }
    (local, vs)
}

fn set_model(
    c: &mut Connection,
    name: &str,
    kind: &str,
    file: &str,
    role: &str,
    schema: &str,
) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd("RECSYS.MODEL.SET");
    cmd.arg("cat")
        .arg(name)
        .arg(kind)
        .arg(fixture(file))
        .arg("ROLE")
        .arg(role)
        .arg("SCHEMA");
    for t in schema.split_whitespace() {
        cmd.arg(t);
    }
    cmd.query(c)
}

/// MODEL.SET that must succeed.
fn set_ok(c: &mut Connection, name: &str, kind: &str, file: &str, role: &str, schema: &str) {
    let reply = set_model(c, name, kind, file, role, schema).unwrap();
    assert_eq!(text(reply), "OK", "MODEL.SET {name}");
}

fn user_features(seed: usize) -> Vec<(String, String)> {
    (0..8)
        .map(|i| {
            (
                format!("d{i}"),
                format!("{:.3}", ((seed * 31 + i * 17) % 29) as f32 / 7.0 - 2.0),
            )
        })
        .collect()
}

fn hset_user(c: &mut Connection, key: &str, fields: &[(String, String)], emb: Option<&[f32]>) {
    let mut h = redis::cmd("HSET");
    h.arg(key);
    for (k, v) in fields {
        h.arg(k).arg(v);
    }
    if let Some(e) = emb {
        h.arg("emb").arg(to_fp32_blob(e));
    }
    let _: i64 = h.query(c).unwrap();
}

fn recommend(c: &mut Connection, args: &str) -> Vec<(String, f32)> {
    let v: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg(args.split_whitespace().collect::<Vec<_>>())
        .arg("WITHSCORES")
        .query(c)
        .unwrap();
    v.chunks(2)
        .map(|p| (p[0].clone(), p[1].parse().unwrap()))
        .collect()
}

fn local_model(kind: Kind, role: Role, file: &str, schema: &str) -> Model {
    Model::build(
        ModelSpec {
            name: "local".into(),
            kind,
            role,
            schema: schema.split_whitespace().map(String::from).collect(),
            bytes: fixture(file).into(),
        },
        DIM,
    )
    .unwrap()
}

/// Field of a RESP2 map reply.
fn field(reply: &Value, name: &str) -> Value {
    let Value::Array(items) = reply else {
        panic!("not a map: {reply:?}")
    };
    for p in items.chunks(2) {
        if redis::from_redis_value::<String>(&p[0]).ok().as_deref() == Some(name) {
            return p[1].clone();
        }
    }
    panic!("no field {name} in {reply:?}");
}

fn text(v: Value) -> String {
    redis::from_redis_value(&v).unwrap()
}

#[test]
fn native_and_onnx_rankers_order_candidates_by_the_model() {
    let s = ort_server(&[], &[]);
    let mut c = s.connection().unwrap();
    let (local, vs) = load(&mut c);
    let schema = ranker_schema();
    set_ok(
        &mut c,
        "native",
        "DLRM",
        "dlrm_ranker.safetensors",
        "RANK",
        &schema,
    );
    set_ok(&mut c, "onnx", "ONNX", "dlrm_ranker.onnx", "RANK", &schema);
    let list: Value = cmd(&mut c, "RECSYS.MODEL.LIST cat").unwrap();
    let Value::Array(models) = &list else {
        panic!()
    };
    assert_eq!(models.len(), 2);
    let info = cmd(&mut c, "RECSYS.MODEL.INFO cat native").unwrap();
    // "cpu" here; on a machine with a GPU (GPU auto) the DLRM runs there.
    let device = text(field(&info, "device"));
    assert!(device == "cpu" || device.starts_with("gpu ("), "{device}");
    assert_eq!(text(field(&info, "kind")), "DLRM");
    assert_eq!(text(field(&info, "schema")), schema);
    let info = cmd(&mut c, "RECSYS.MODEL.INFO cat onnx").unwrap();
    assert!(text(field(&info, "device")).starts_with("onnxruntime"));
    assert_eq!(info_field(&mut c, "cat", "models"), 2);
    let with_models = info_field(&mut c, "cat", "memory_bytes");

    let native_model = local_model(Kind::Dlrm, Role::Rank, "dlrm_ranker.safetensors", &schema);
    for u in 0..5 {
        let feats = user_features(u);
        hset_user(&mut c, &format!("u:{u}"), &feats, Some(&vs[u * 100]));
        let plain = recommend(&mut c, &format!("cat u:{u} K 10 CANDIDATES 100"));
        let native = recommend(
            &mut c,
            &format!("cat u:{u} K 10 CANDIDATES 100 RANK native"),
        );
        let onnx = recommend(&mut c, &format!("cat u:{u} K 10 CANDIDATES 100 RANK onnx"));
        assert_ne!(
            plain.iter().map(|p| &p.0).collect::<Vec<_>>(),
            native.iter().map(|p| &p.0).collect::<Vec<_>>(),
            "the model reorders the candidates"
        );
        // The same scores as the model computed here on the same features.
        let user: HashMap<String, String> = feats.into_iter().collect();
        let slots: Vec<(u32, f32)> = native
            .iter()
            .map(|(id, _)| (local.slot_of(id).unwrap(), 0.0))
            .collect();
        let want = native_model
            .score(
                &user,
                local.columns(),
                &recsys::rank::schema::NoSignals,
                &slots,
            )
            .unwrap();
        for ((id, got), want) in native.iter().zip(&want) {
            assert!((got - want).abs() < 1e-5, "{id}: {got} vs {want}");
        }
        assert!(native.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        // ONNX through ort agrees with the native DLRM.
        assert_eq!(
            native.iter().map(|p| &p.0).collect::<Vec<_>>(),
            onnx.iter().map(|p| &p.0).collect::<Vec<_>>()
        );
        for (a, b) in native.iter().zip(&onnx) {
            assert!((a.1 - b.1).abs() < 1e-4);
        }
    }
    // EXPLAIN names the model and counts the batch.
    let r = cmd(
        &mut c,
        "RECSYS.RECOMMEND cat u:0 K 5 CANDIDATES 100 RANK native EXPLAIN",
    )
    .unwrap();
    let ex = field(&r, "explain");
    assert_eq!(text(field(&ex, "rank")), "model native");
    assert_eq!(
        redis::from_redis_value::<i64>(&field(&ex, "ranked")).unwrap(),
        100
    );
    // Missing user features take the schema defaults (a user without a hash).
    let cold = recommend(&mut c, "cat nobody K 5 RANK native");
    assert_eq!(cold.len(), 5);
    let info = cmd(&mut c, "RECSYS.MODEL.INFO cat native").unwrap();
    assert!(redis::from_redis_value::<i64>(&field(&info, "calls")).unwrap() >= 7);
    // BATCH ranks too.
    let _: Value = cmd(
        &mut c,
        "RECSYS.BATCH cat MATCH u:* K 10 CANDIDATES 100 RANK native INTO rec:",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg("rec:{u:0}")
            .arg(0)
            .arg(-1)
            .query(&mut c)
            .unwrap();
        if !list.is_empty() {
            let want: Vec<String> = recommend(&mut c, "cat u:0 K 10 CANDIDATES 100 RANK native")
                .into_iter()
                .map(|p| p.0)
                .collect();
            assert_eq!(list, want);
            break;
        }
        assert!(Instant::now() < deadline, "batch did not write");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Replacing is atomic and visible; DEL removes.
    set_ok(
        &mut c,
        "native",
        "DLRM",
        "dlrm_ranker.safetensors",
        "RANK",
        &schema,
    );
    assert_eq!(
        redis::from_redis_value::<i64>(&cmd(&mut c, "RECSYS.MODEL.DEL cat onnx").unwrap()).unwrap(),
        1
    );
    assert_eq!(
        redis::from_redis_value::<i64>(&cmd(&mut c, "RECSYS.MODEL.DEL cat onnx").unwrap()).unwrap(),
        0
    );
    let e = err_line(&mut c, "RECSYS.RECOMMEND cat u:0 RANK onnx");
    assert!(e.contains("no model named 'onnx'"), "{e}");
    // Memory accounting follows the models.
    assert!(info_field(&mut c, "cat", "memory_bytes") < with_models);
}

#[test]
fn query_tower_computes_the_user_vector() {
    let s = ort_server(&[], &[]);
    let mut c = s.connection().unwrap();
    let (_, vs) = load(&mut c);
    set_ok(
        &mut c,
        "tower",
        "ONNX",
        "query_tower.onnx",
        "QUERY",
        TOWER_SCHEMA,
    );
    let feats: Vec<(String, String)> = [("age", "0.7"), ("income", "-0.2"), ("country", "fr")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    hset_user(&mut c, "u:1", &feats, None);
    let r = cmd(&mut c, "RECSYS.RECOMMEND cat u:1 K 5 EXPLAIN").unwrap();
    assert_eq!(
        text(field(&field(&r, "explain"), "user_vector")),
        "query model"
    );
    // The same as searching with the tower's output computed here.
    let tower = local_model(
        Kind::Dlrm,
        Role::Query,
        "query_tower.safetensors",
        TOWER_SCHEMA,
    );
    let v = tower.query(&feats.iter().cloned().collect()).unwrap();
    let got: Vec<String> = recommend(&mut c, "cat u:1 K 5")
        .into_iter()
        .map(|p| p.0)
        .collect();
    let want: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("u:1")
        .arg("K")
        .arg(5)
        .arg("VECTOR")
        .arg(to_fp32_blob(&v))
        .query(&mut c)
        .unwrap();
    assert_eq!(got, want);
    // emb wins over the tower; a user with none of its fields gets cold start.
    hset_user(&mut c, "u:2", &feats, Some(&vs[9]));
    let r = cmd(&mut c, "RECSYS.RECOMMEND cat u:2 K 5 EXPLAIN").unwrap();
    assert_eq!(
        text(field(&field(&r, "explain"), "user_vector")),
        "user hash field emb"
    );
    let r = cmd(&mut c, "RECSYS.RECOMMEND cat stranger K 5 EXPLAIN").unwrap();
    assert_eq!(
        text(field(&field(&r, "explain"), "user_vector")),
        "cold start: popular items"
    );
    // One QUERY model per catalog; the native tower replaces it under the same name.
    let e = set_model(
        &mut c,
        "tower2",
        "DLRM",
        "query_tower.safetensors",
        "QUERY",
        TOWER_SCHEMA,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("already has QUERY model 'tower'"),
        "{e}"
    );
    set_ok(
        &mut c,
        "tower",
        "DLRM",
        "query_tower.safetensors",
        "QUERY",
        TOWER_SCHEMA,
    );
    assert_eq!(
        recommend(&mut c, "cat u:1 K 5")
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        want
    );
    // A QUERY model cannot RANK.
    let e = err_line(&mut c, "RECSYS.RECOMMEND cat u:1 RANK tower");
    assert!(e.contains("has ROLE QUERY, not RANK"), "{e}");
}

#[test]
fn bad_models_and_arguments_are_refused_with_the_reason() {
    let s = ort_server(&["MODEL_MAX_MB", "1"], &[]);
    let mut c = s.connection().unwrap();
    load(&mut c);
    let schema = ranker_schema();
    let seven: String = schema.rsplitn(4, ' ').last().unwrap().to_string();
    let cases: Vec<(redis::RedisResult<Value>, &str)> = vec![
        (
            set_model(
                &mut c,
                "m",
                "DLRM",
                "dlrm_ranker.safetensors",
                "RANK",
                &seven,
            ),
            "7 SPARSE features but the DLRM has 8 embedding tables",
        ),
        (
            set_model(&mut c, "m", "ONNX", "dlrm_ranker.onnx", "RANK", &seven),
            "model input 'sparse' is Int64 [-1, 8], the schema gives Int64 [n, 7]",
        ),
        (
            set_model(
                &mut c,
                "m",
                "DLRM",
                "dlrm_ranker.safetensors",
                "RANK",
                &schema.replace("100", "64"),
            ),
            "cardinality 64 but embedding table emb.0 has 100 rows",
        ),
        (
            set_model(
                &mut c,
                "m",
                "DLRM",
                "dlrm_ranker.safetensors",
                "QUERY",
                &schema,
            ),
            "a QUERY model sees only the user: item.c0",
        ),
        (
            set_model(
                &mut c,
                "m",
                "ONNX",
                "dlrm_ranker.safetensors",
                "RANK",
                &schema,
            ),
            "ONNX Runtime refused the model",
        ),
        (
            set_model(&mut c, "m", "DLRM", "dlrm_ranker.onnx", "RANK", &schema),
            "not valid safetensors",
        ),
        (
            set_model(
                &mut c,
                "m",
                "DLRM",
                "dlrm_ranker.safetensors",
                "RANK",
                "DENSE user.a SPARSE",
            ),
            "SCHEMA: missing SPARSE source",
        ),
        (
            set_model(&mut c, "m", "XGB", "dlrm_ranker.onnx", "RANK", &schema),
            "unknown model kind 'XGB', expected ONNX, DLRM or SEQUENCE",
        ),
        (
            set_model(&mut c, "m", "ONNX", "dlrm_ranker.onnx", "SCORE", &schema),
            "unknown ROLE 'SCORE'",
        ),
        (
            set_model(
                &mut c,
                "bad name",
                "ONNX",
                "dlrm_ranker.onnx",
                "RANK",
                &schema,
            ),
            "model name must be",
        ),
    ];
    for (r, want) in cases {
        let e = r.unwrap_err().to_string();
        assert!(e.contains(want), "expected '{want}' in: {e}");
    }
    let e = err(
        &mut c,
        &[
            b"RECSYS.MODEL.SET",
            b"cat",
            b"m",
            b"DLRM",
            &fixture("dlrm_ranker.safetensors"),
            b"ROLE",
            b"RANK",
        ],
    );
    assert!(e.contains("SCHEMA is required"), "{e}");
    let e = err(
        &mut c,
        &[
            b"RECSYS.MODEL.SET",
            b"nope",
            b"m",
            b"DLRM",
            &fixture("dlrm_ranker.safetensors"),
            b"SCHEMA",
            b"DENSE",
            b"user.a",
        ],
    );
    assert!(e.contains("catalog 'nope' does not exist"), "{e}");
    cmd(&mut c, "SET str x").unwrap();
    let e = err(
        &mut c,
        &[
            b"RECSYS.MODEL.SET",
            b"str",
            b"m",
            b"DLRM",
            b"x",
            b"SCHEMA",
            b"DENSE",
            b"user.a",
        ],
    );
    assert!(e.contains("WRONGTYPE"), "{e}");
    // The size cap (MODEL_MAX_MB 1).
    let big = vec![0u8; 1_100_000];
    let e = err(
        &mut c,
        &[
            b"RECSYS.MODEL.SET",
            b"cat",
            b"m",
            b"ONNX",
            &big,
            b"SCHEMA",
            b"DENSE",
            b"user.a",
        ],
    );
    assert!(
        e.contains("above the cap of 1 MB (module argument MODEL_MAX_MB)"),
        "{e}"
    );
    // NaN scores are an error, not a silent order.
    set_ok(
        &mut c,
        "sqrt",
        "ONNX",
        "nan_ranker.onnx",
        "RANK",
        "DENSE user.x",
    );
    cmd(&mut c, "HSET neg x -4").unwrap();
    cmd(&mut c, "HSET pos x 4").unwrap();
    assert_eq!(recommend(&mut c, "cat pos K 3 RANK sqrt").len(), 3);
    let e = err_line(&mut c, "RECSYS.RECOMMEND cat neg K 3 RANK sqrt");
    assert!(e.contains("NaN"), "{e}");
    let info = cmd(&mut c, "RECSYS.MODEL.INFO cat sqrt").unwrap();
    assert_eq!(
        redis::from_redis_value::<i64>(&field(&info, "errors")).unwrap(),
        1
    );
    // Unknown models and options.
    let e = err_line(&mut c, "RECSYS.MODEL.INFO cat nope");
    assert!(e.contains("no model named 'nope'"), "{e}");
    let e = err_line(&mut c, "RECSYS.RECOMMEND cat pos RANK");
    assert!(e.contains("missing RANK model name"), "{e}");
    // Nothing above killed the server, and the catalog still recommends.
    assert_eq!(recommend(&mut c, "cat pos K 3").len(), 3);
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("RECSYS.MODEL.SET")
        .arg("cat")
        .arg("m")
        .arg("ONNX")
        .arg("x")
        .arg("SCHEMA")
        .arg("DENSE")
        .arg("user.a")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, vec!["cat"]);
}

#[test]
fn without_onnx_runtime_onnx_is_refused_and_the_rest_works() {
    // No ORT_LIB, then a path that does not load: ONNX is refused with the
    // reason, native models and everything else work.
    for (args, reason) in [
        (
            vec![],
            "ONNX Runtime is not loaded: start the module with ORT_LIB",
        ),
        (
            vec!["ORT_LIB", "/nonexistent/libonnxruntime.so"],
            "/nonexistent/libonnxruntime.so does not exist",
        ),
    ] {
        let s = server_with(&args, &[]);
        let mut c = s.connection().unwrap();
        load(&mut c);
        let e = set_model(
            &mut c,
            "onnx",
            "ONNX",
            "dlrm_ranker.onnx",
            "RANK",
            &ranker_schema(),
        );
        let e = e.unwrap_err().to_string();
        assert!(e.contains(reason), "{e}");
        set_ok(
            &mut c,
            "native",
            "DLRM",
            "dlrm_ranker.safetensors",
            "RANK",
            &ranker_schema(),
        );
        assert_eq!(recommend(&mut c, "cat u K 5 RANK native").len(), 5);
    }
}

#[test]
fn gpu_on_without_cuda_fails_the_load_and_auto_falls_back() {
    match recsys_cli::server::RedisServer::start(&["GPU", "on"], &[]) {
        Ok(_) => eprintln!(
            "note: GPU on loaded: this machine has a GPU, so the no-GPU failure path is not exercised here"
        ),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("GPU on, but no usable GPU"), "{e}");
            let s = server_with(&["GPU", "auto"], &[]);
            assert!(std::fs::read_to_string(s.dir.path().join("redis.log"))
                .unwrap()
                .contains("DLRM models run on the CPU"));
        }
    }
    let e = match recsys_cli::server::RedisServer::start(&["GPU", "maybe"], &[]) {
        Ok(_) => panic!("bad GPU value must fail"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("GPU must be auto, on or off"), "{e}");
}

fn model_names(c: &mut Connection) -> Vec<String> {
    let list: Value = cmd(c, "RECSYS.MODEL.LIST cat").unwrap();
    let Value::Array(models) = list else { panic!() };
    models.iter().map(|m| text(field(m, "name"))).collect()
}

/// Models set on a server, and the answers they give.
fn with_models(c: &mut Connection) -> Vec<(String, f32)> {
    let (_, vs) = load(c);
    set_model(
        c,
        "native",
        "DLRM",
        "dlrm_ranker.safetensors",
        "RANK",
        &ranker_schema(),
    )
    .unwrap();
    set_model(
        c,
        "onnx",
        "ONNX",
        "dlrm_ranker.onnx",
        "RANK",
        &ranker_schema(),
    )
    .unwrap();
    set_model(
        c,
        "tower",
        "ONNX",
        "query_tower.onnx",
        "QUERY",
        TOWER_SCHEMA,
    )
    .unwrap();
    hset_user(c, "u:1", &user_features(1), Some(&vs[5]));
    recommend(c, "cat u:1 K 10 RANK onnx")
}

fn check_models(c: &mut Connection, before: &[(String, f32)]) {
    assert_eq!(model_names(c), vec!["native", "onnx", "tower"]);
    assert_eq!(recommend(c, "cat u:1 K 10 RANK onnx"), before);
    assert_eq!(
        recommend(c, "cat u:1 K 10 RANK native")
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        before.iter().map(|p| p.0.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn models_survive_reload_restart_and_aof_rewrite() {
    let lib = ort_lib();
    let extra = ["--appendonly", "yes", "--aof-use-rdb-preamble", "no"];
    let s = ort_server(&[], &extra);
    let mut c = s.connection().unwrap();
    let before = with_models(&mut c);
    cmd(&mut c, "DEBUG RELOAD").unwrap();
    check_models(&mut c, &before);
    // COPY takes the models along.
    cmd(&mut c, "COPY cat cat2").unwrap();
    let copied: Value = cmd(&mut c, "RECSYS.MODEL.LIST cat2").unwrap();
    assert_eq!(format!("{copied:?}").matches("name").count(), 3);
    // From the AOF command log, then after a rewrite (MODEL.SET is emitted).
    let module = s.module.clone();
    let dir = s.stop(false);
    let s = RedisServer::start_in(dir, &module, &["ORT_LIB", &lib], &extra).unwrap();
    let mut c = s.connection().unwrap();
    check_models(&mut c, &before);
    cmd(&mut c, "BGREWRITEAOF").unwrap();
    for _ in 0..200 {
        let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
        if info.contains("aof_rewrite_in_progress:0") && !info.contains("aof_rewrite_scheduled:1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = s.stop(false);
    let s = RedisServer::start_in(dir, &module, &["ORT_LIB", &lib], &extra).unwrap();
    let mut c = s.connection().unwrap();
    check_models(&mut c, &before);
    // An RDB read by a server without ONNX Runtime keeps the ONNX models
    // (bytes and all) and says why they cannot run.
    let dir = s.stop(true);
    let s = RedisServer::start_in(dir, &module, &[], &["--appendonly", "no"]).unwrap();
    let mut c = s.connection().unwrap();
    assert_eq!(model_names(&mut c), vec!["native", "onnx", "tower"]);
    let info = cmd(&mut c, "RECSYS.MODEL.INFO cat onnx").unwrap();
    assert!(text(field(&info, "status")).contains("ONNX Runtime is not loaded"));
    let e = err_line(&mut c, "RECSYS.RECOMMEND cat u:1 K 10 RANK onnx");
    assert!(e.contains("model 'onnx' cannot run"), "{e}");
    assert_eq!(recommend(&mut c, "cat u:1 K 10 RANK native").len(), 10);
    // ...and hands them on intact to a server that has it.
    let dir = s.stop(true);
    let s =
        RedisServer::start_in(dir, &module, &["ORT_LIB", &lib], &["--appendonly", "no"]).unwrap();
    let mut c = s.connection().unwrap();
    check_models(&mut c, &before);
}

#[test]
fn models_replicate() {
    let lib = ort_lib();
    let master = ort_server(&[], &[]);
    let mut m = master.connection().unwrap();
    let before = with_models(&mut m);
    let replica = server_with(
        &["ORT_LIB", &lib],
        &["--replicaof", "127.0.0.1", &master.port.to_string()],
    );
    let mut r = replica.connection().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while model_names_or_empty(&mut r).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "full sync did not bring the models"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    check_models(&mut r, &before);
    // Later MODEL.SET and MODEL.DEL reach the replica through the stream.
    set_model(
        &mut m,
        "native2",
        "DLRM",
        "dlrm_ranker.safetensors",
        "RANK",
        &ranker_schema(),
    )
    .unwrap();
    cmd(&mut m, "RECSYS.MODEL.DEL cat onnx").unwrap();
    while model_names_or_empty(&mut r) != vec!["native", "native2", "tower"] {
        assert!(
            Instant::now() < deadline,
            "stream did not bring the changes: {:?}",
            model_names_or_empty(&mut r)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        recommend(&mut r, "cat u:1 K 10 RANK native2"),
        recommend(&mut m, "cat u:1 K 10 RANK native2")
    );
}

fn model_names_or_empty(c: &mut Connection) -> Vec<String> {
    match cmd(c, "RECSYS.MODEL.LIST cat") {
        Ok(Value::Array(models)) => models.iter().map(|m| text(field(m, "name"))).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn model_set_inside_multi_runs_inline() {
    let s = server();
    let mut c = s.connection().unwrap();
    load(&mut c);
    let mut set = redis::cmd("RECSYS.MODEL.SET");
    set.arg("cat")
        .arg("native")
        .arg("DLRM")
        .arg(fixture("dlrm_ranker.safetensors"))
        .arg("SCHEMA")
        .arg(ranker_schema());
    let (ok, n): (String, i64) = redis::pipe()
        .atomic()
        .add_command(set)
        .cmd("RECSYS.INFO")
        .arg("cat")
        .query::<(String, Vec<Value>)>(&mut c)
        .map(|(ok, info)| {
            let models = info
                .chunks(2)
                .find(|p| text(p[0].clone()) == "models")
                .map(|p| redis::from_redis_value::<i64>(&p[1]).unwrap())
                .unwrap();
            (ok, models)
        })
        .unwrap();
    assert_eq!(
        (ok.as_str(), n),
        ("OK", 1),
        "the model is in place within the transaction"
    );
    assert_eq!(recommend(&mut c, "cat u K 5 RANK native").len(), 5);
}

/// `unit(a) + w x unit(b)`.
fn blend(a: &[f32], w: f32, b: &[f32]) -> Vec<f32> {
    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    unit(a)
        .iter()
        .zip(unit(b))
        .map(|(x, y)| x + w * y)
        .collect()
}

/// The ids RECOMMEND returns for `user` (no emb, no recent items) searching
/// with `v`.
fn with_vector(c: &mut Connection, v: &[f32]) -> Vec<String> {
    redis::cmd("RECSYS.RECOMMEND")
        .arg("cat")
        .arg("nobody")
        .arg("K")
        .arg(10)
        .arg("VECTOR")
        .arg(to_fp32_blob(v))
        .arg("SEQUENCE")
        .arg(0)
        .query(c)
        .unwrap()
}

fn ids(c: &mut Connection, args: &str) -> Vec<String> {
    recommend(c, args).into_iter().map(|p| p.0).collect()
}

#[test]
fn sequence_model_turns_a_new_users_events_into_personal_results() {
    let s = server();
    let mut c = s.connection().unwrap();
    let (local, vs) = load(&mut c);
    let weights = recsys::rank::sequence::random_weights(DIM, 12, 24, 5, 0.4, 7);
    // Before the model: SEQUENCE names a model the catalog does not have.
    let e = err_line(&mut c, "RECSYS.RECOMMEND cat u:new SEQUENCE 1");
    assert!(
        e.contains("SEQUENCE needs the catalog's RECENT model"),
        "{e}"
    );
    let set = |c: &mut Connection, name: &str, extra: &[&str]| {
        let mut cmd = redis::cmd("RECSYS.MODEL.SET");
        cmd.arg("cat").arg(name).arg("SEQUENCE").arg(&weights);
        for a in extra {
            cmd.arg(*a);
        }
        cmd.query::<Value>(c)
    };
    // Bad input: a role other than RECENT, a SCHEMA, the wrong dimension,
    // a second RECENT model, weights out of range.
    for (extra, want) in [
        (&["ROLE", "RANK"][..], "cannot have ROLE RANK"),
        (&["SCHEMA", "DENSE", "user.a"][..], "takes no SCHEMA"),
    ] {
        let e = set(&mut c, "seq", extra).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    let wrong = recsys::rank::sequence::random_weights(DIM + 1, 12, 24, 5, 0.4, 7);
    let e: redis::RedisResult<Value> = redis::cmd("RECSYS.MODEL.SET")
        .arg("cat")
        .arg("seq")
        .arg("SEQUENCE")
        .arg(wrong)
        .query(&mut c);
    assert!(e.unwrap_err().to_string().contains("w_in"));
    assert_eq!(text(set(&mut c, "seq", &[]).unwrap()), "OK");
    let e = set(&mut c, "seq2", &["ROLE", "RECENT"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("already has RECENT model 'seq'"), "{e}");
    for bad in ["-1", "nan", "1001", "x"] {
        let e = err_line(
            &mut c,
            &format!("RECSYS.RECOMMEND cat u:new SEQUENCE {bad}"),
        );
        assert!(e.contains("SEQUENCE weight"), "{bad}: {e}");
    }
    let info = cmd(&mut c, "RECSYS.MODEL.INFO cat seq").unwrap();
    assert_eq!(text(field(&info, "kind")), "SEQUENCE");
    assert_eq!(text(field(&info, "role")), "RECENT");

    // A user created by three EVENTs: the model's vector over their items.
    let local_model = Model::build(
        ModelSpec {
            name: "local".into(),
            kind: Kind::Sequence,
            role: Role::Recent,
            schema: Vec::new(),
            bytes: weights.clone().into(),
        },
        DIM,
    )
    .unwrap();
    let tower_of = |recent: &[usize]| -> Vec<f32> {
        let vectors: Vec<Vec<f32>> = recent
            .iter()
            .map(|&i| {
                local
                    .index()
                    .vector(local.slot_of(&format!("item:{i}")).unwrap())
            })
            .collect();
        local_model
            .recent_query(vectors.iter().map(Vec::as_slice))
            .unwrap()
            .unwrap()
    };
    assert_eq!(ids(&mut c, "cat u:new K 10").len(), 10);
    for i in [11, 500, 1234] {
        cmd(
            &mut c,
            &format!("RECSYS.EVENT cat u:new item:{i} TYPE click"),
        )
        .unwrap();
    }
    let first = ids(&mut c, "cat u:new K 10");
    assert_eq!(first, with_vector(&mut c, &tower_of(&[1234, 500, 11])));
    let r = cmd(&mut c, "RECSYS.RECOMMEND cat u:new K 10 EXPLAIN").unwrap();
    let ex = field(&r, "explain");
    assert_eq!(
        text(field(&ex, "user_vector")),
        "sequence model over 3 recent items"
    );
    assert_eq!(field(&ex, "sequence_items"), Value::Int(3));
    // SEQUENCE 0 turns it off: the mean of the recent items, another list.
    let r = cmd(&mut c, "RECSYS.RECOMMEND cat u:new K 10 SEQUENCE 0 EXPLAIN").unwrap();
    let ex = field(&r, "explain");
    assert_eq!(text(field(&ex, "user_vector")), "mean of 3 recent items");
    assert_eq!(field(&ex, "sequence_items"), Value::Int(0));
    // Two more EVENTs change the next answer, without retraining.
    for i in [77, 1900] {
        cmd(
            &mut c,
            &format!("RECSYS.EVENT cat u:new item:{i} TYPE click"),
        )
        .unwrap();
    }
    let second = ids(&mut c, "cat u:new K 10");
    assert_ne!(second, first);
    assert_eq!(
        second,
        with_vector(&mut c, &tower_of(&[1900, 77, 1234, 500, 11]))
    );

    // A user with an emb: unit(emb) + weight x unit(tower), by request or
    // by the catalog's default.
    hset_user(&mut c, "u:emb", &[], Some(&vs[42]));
    for i in [3, 4] {
        cmd(
            &mut c,
            &format!("RECSYS.EVENT cat u:emb item:{i} TYPE click"),
        )
        .unwrap();
    }
    let tower = tower_of(&[4, 3]);
    assert_eq!(
        ids(&mut c, "cat u:emb K 10"),
        with_vector(&mut c, &blend(&vs[42], 1.0, &tower))
    );
    let heavy = ids(&mut c, "cat u:emb K 10 SEQUENCE 3");
    assert_eq!(heavy, with_vector(&mut c, &blend(&vs[42], 3.0, &tower)));
    assert_eq!(
        ids(&mut c, "cat u:emb K 10 SEQUENCE 0"),
        with_vector(&mut c, &vs[42])
    );
    cmd(&mut c, "RECSYS.ALTER cat SEQUENCE 3").unwrap();
    assert_eq!(ids(&mut c, "cat u:emb K 10"), heavy);
    let info = cmd(&mut c, "RECSYS.INFO cat").unwrap();
    assert_eq!(text(field(&info, "sequence")), "3");
    let e = err_line(&mut c, "RECSYS.ALTER cat SEQUENCE -2");
    assert!(e.contains("SEQUENCE weight"), "{e}");

    // The model and the default survive a reload.
    cmd(&mut c, "DEBUG RELOAD").unwrap();
    assert_eq!(ids(&mut c, "cat u:emb K 10"), heavy);
    assert_eq!(ids(&mut c, "cat u:new K 10"), second);
    // Deleting the model turns the blend off.
    cmd(&mut c, "RECSYS.MODEL.DEL cat seq").unwrap();
    assert_eq!(ids(&mut c, "cat u:emb K 10"), with_vector(&mut c, &vs[42]));
}

#[test]
fn computed_signals_feed_the_ranker_as_computed_here() {
    let s = server();
    let mut c = s.connection().unwrap();
    let (local, vs) = load(&mut c);
    // 8 dense (3 computed by the request, 5 user fields) and 8 sparse: the
    // reference ranker's shape.
    let schema = format!(
        "DENSE popularity DENSE session DENSE activity {} {}",
        (3..8)
            .map(|i| format!("DENSE user.d{i}"))
            .collect::<Vec<_>>()
            .join(" "),
        (0..8)
            .map(|i| format!("SPARSE item.c{i} 100"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    set_ok(
        &mut c,
        "r",
        "DLRM",
        "dlrm_ranker.safetensors",
        "RANK",
        &schema,
    );
    let e = set_model(
        &mut c,
        "x",
        "DLRM",
        "dlrm_ranker.safetensors",
        "RANK",
        "SPARSE popularity 10",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("popularity is a number; declare it DENSE"),
        "{e}"
    );
    // Popular items, at an epoch both sides read at (a few ms of decay).
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut pop = redis::cmd("RECSYS.POPULARITY.SET");
    pop.arg("cat").arg("EPOCH").arg(epoch);
    for i in 0..300 {
        let (id, n) = (format!("item:{}", i * 6), (i % 13 + 1) as f64);
        pop.arg(&id).arg(n);
        local.set_popularity(&id, epoch, n).unwrap();
    }
    let _: () = pop.query(&mut c).unwrap();
    let model = local_model(Kind::Dlrm, Role::Rank, "dlrm_ranker.safetensors", &schema);
    for u in 0..4 {
        let feats = user_features(u);
        hset_user(&mut c, &format!("u:{u}"), &feats, Some(&vs[u * 50]));
        let recent: Vec<String> = (0..u * 3).map(|j| format!("item:{}", j * 11 + u)).collect();
        let _: () = redis::cmd("HSET")
            .arg(format!("u:{u}"))
            .arg("recent")
            .arg(serde_json::to_string(&recent).unwrap())
            .query(&mut c)
            .unwrap();
        let got = recommend(&mut c, &format!("cat u:{u} K 10 CANDIDATES 100 RANK r"));
        let input = recsys::pipeline::request::UserInput {
            recent,
            features: feats.into_iter().collect(),
            now_ms: epoch,
            ..Default::default()
        };
        let signals = recsys::pipeline::rank::RequestSignals::new(&local, &input);
        let slots: Vec<(u32, f32)> = got
            .iter()
            .map(|(id, _)| (local.slot_of(id).unwrap(), 0.0))
            .collect();
        let batch = model.features(&input.features, local.columns(), &signals, &slots);
        // The signals are there: popularity of a popular candidate, the
        // session's cosine for a user with recent items, the activity.
        let dense = |r: usize, j: usize| batch.dense[r * 8 + j];
        assert!((0..slots.len()).all(|r| (dense(r, 2) - ((u * 3) as f32).ln_1p()).abs() < 1e-6));
        if u > 0 {
            assert!((0..slots.len()).any(|r| dense(r, 1).abs() > 1e-3));
        }
        let want = model.score_batch(&batch).unwrap();
        for ((id, got), want) in got.iter().zip(&want) {
            assert!((got - want).abs() < 1e-5, "user {u} {id}: {got} vs {want}");
        }
    }
}
