//! Ranking models without Redis: the native DLRM and the same weights as ONNX
//! through ONNX Runtime agree; the committed fixtures are what the generator
//! makes.

mod common;
use common::fixture;

use recsys::rank::schema::Batch;
use recsys::rank::{onnx, Kind, Model, ModelSpec, Role};
use recsys::rng::SplitMix;

fn ranker_schema() -> Vec<String> {
    common::ranker_schema()
        .split(' ')
        .map(String::from)
        .collect()
}

fn model(
    kind: Kind,
    role: Role,
    file: &str,
    schema: Vec<String>,
    dim: usize,
) -> Result<Model, String> {
    Model::build(
        ModelSpec {
            name: file.into(),
            kind,
            role,
            schema,
            bytes: fixture(file).into(),
        },
        dim,
    )
}

fn init_ort() {
    let lib = recsys_cli::server::require_onnxruntime().expect("ONNX Runtime for the tests");
    onnx::init(&lib).expect("load ONNX Runtime");
}

#[test]
fn committed_weight_fixtures_match_the_generator() {
    for (name, bytes) in recsys_cli::fixtures::files() {
        assert!(
            fixture(name) == bytes,
            "{name} differs: run `recsys fixtures` and scripts/make_onnx_fixtures.py"
        );
    }
}

#[test]
fn native_and_onnx_rankers_agree() {
    init_ort();
    let native = model(
        Kind::Dlrm,
        Role::Rank,
        "dlrm_ranker.safetensors",
        ranker_schema(),
        16,
    )
    .unwrap();
    let ort = model(
        Kind::Onnx,
        Role::Rank,
        "dlrm_ranker.onnx",
        ranker_schema(),
        16,
    )
    .unwrap();
    assert!(ort.device().starts_with("onnxruntime"), "{}", ort.device());
    let mut rng = SplitMix::new(5);
    for rows in [1, 200, 3000] {
        let batch = Batch {
            rows,
            dense: (0..rows * 8).map(|_| rng.normal() as f32).collect(),
            sparse: (0..rows * 8).map(|_| rng.below(100) as i64).collect(),
            external: Vec::new(),
        };
        let (a, b) = (
            native.score_batch(&batch).unwrap(),
            ort.score_batch(&batch).unwrap(),
        );
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4,
            "rows {rows}: native and ONNX differ by {worst}"
        );
    }
}

#[test]
fn native_and_onnx_query_towers_agree() {
    init_ort();
    let schema: Vec<String> = "DENSE user.age DENSE user.income SPARSE user.country 50 HASH"
        .split_whitespace()
        .map(String::from)
        .collect();
    let native = model(
        Kind::Dlrm,
        Role::Query,
        "query_tower.safetensors",
        schema.clone(),
        16,
    )
    .unwrap();
    let ort = model(
        Kind::Onnx,
        Role::Query,
        "query_tower.onnx",
        schema.clone(),
        16,
    )
    .unwrap();
    let user = [("age", "0.3"), ("income", "-1.5"), ("country", "fr")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (a, b) = (native.query(&user).unwrap(), ort.query(&user).unwrap());
    assert_eq!(a.len(), 16);
    assert!(
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4),
        "{a:?} vs {b:?}"
    );
    let e = model(Kind::Onnx, Role::Query, "query_tower.onnx", schema, 32).unwrap_err();
    assert!(e.contains("catalog's 32-d vector"), "{e}");
}

#[test]
fn onnx_mismatches_are_named() {
    init_ort();
    let mut seven = ranker_schema();
    seven.truncate(seven.len() - 3);
    let e = model(Kind::Onnx, Role::Rank, "dlrm_ranker.onnx", seven, 16).unwrap_err();
    assert!(
        e.contains("model input 'sparse'") && e.contains("[n, 7]"),
        "{e}"
    );
    let dense_only: Vec<String> = ranker_schema()[..16].to_vec();
    let e = model(Kind::Onnx, Role::Rank, "dlrm_ranker.onnx", dense_only, 16).unwrap_err();
    assert!(
        e.contains("has a 'sparse' input") && e.contains("no SPARSE features"),
        "{e}"
    );
    let e = model(
        Kind::Onnx,
        Role::Rank,
        "query_tower.onnx",
        "DENSE user.a DENSE user.b SPARSE user.c 50"
            .split(' ')
            .map(String::from)
            .collect(),
        16,
    )
    .unwrap_err();
    assert!(e.contains("RANK model must output [n] or [n, 1]"), "{e}");
    let e = Model::build(
        ModelSpec {
            name: "junk".into(),
            kind: Kind::Onnx,
            role: Role::Rank,
            schema: vec!["DENSE".into(), "user.a".into()],
            bytes: b"not a model".to_vec().into(),
        },
        4,
    )
    .unwrap_err();
    assert!(e.contains("ONNX Runtime refused the model"), "{e}");
    // NaN at run time is an error, not an order.
    let nan = model(
        Kind::Onnx,
        Role::Rank,
        "nan_ranker.onnx",
        vec!["DENSE".into(), "user.x".into()],
        4,
    )
    .unwrap();
    let e = nan
        .score_batch(&Batch {
            rows: 2,
            dense: vec![4.0, -1.0],
            sparse: vec![],
            external: Vec::new(),
        })
        .unwrap_err();
    assert!(e.contains("candidate 1 as NaN"), "{e}");
}

#[test]
fn classifier_exports_bind_by_type_and_rank_by_the_positive_class() {
    init_ort();
    // classifier.onnx: input "input" float [n, 3]; outputs "label" (int64)
    // and "probabilities" [n, 2] = softmax(x W^T + b), W and b from
    // scripts/make_onnx_fixtures.py. So p1 = sigmoid(-a + 2 p - 4 s - 0.2).
    let schema: Vec<String> = "DENSE user.a DENSE item.price DENSE score"
        .split(' ')
        .map(String::from)
        .collect();
    let m = model(Kind::Onnx, Role::Rank, "classifier.onnx", schema, 4).unwrap();
    let rows = [[0.0f32, 0.0, 0.0], [1.0, 2.0, 0.5], [-1.0, 0.3, -0.2]];
    let batch = Batch {
        rows: 3,
        dense: rows.concat(),
        sparse: vec![],
        external: Vec::new(),
    };
    let got = m.score_batch(&batch).unwrap();
    for (r, g) in rows.iter().zip(&got) {
        let want = 1.0 / (1.0 + (-(-r[0] + 2.0 * r[1] - 4.0 * r[2] - 0.2)).exp());
        assert!((g - want).abs() < 1e-5, "{g} vs {want}");
    }
    let e = model(
        Kind::Onnx,
        Role::Rank,
        "classifier.onnx",
        "DENSE user.a DENSE user.b DENSE score SPARSE item.c 10"
            .split(' ')
            .map(String::from)
            .collect(),
        4,
    )
    .unwrap_err();
    assert!(
        e.contains("1 SPARSE features but the model has no 'sparse' input"),
        "{e}"
    );
    let e = model(
        Kind::Onnx,
        Role::Rank,
        "classifier.onnx",
        vec!["DENSE".into(), "user.a".into()],
        4,
    )
    .unwrap_err();
    assert!(
        e.contains("model input 'input' is Float32 [-1, 3], the schema gives Float32 [n, 1]"),
        "{e}"
    );
}
