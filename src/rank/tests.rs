//! Model building and scoring without Redis (ONNX is covered by the
//! integration tests, which load ONNX Runtime from the test venv).

use super::*;
use crate::rank::dlrm::DlrmShape;
use std::sync::atomic::Ordering::Relaxed;

fn toks(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn reference_schema() -> Vec<String> {
    let mut t = String::new();
    for i in 0..8 {
        t += &format!("DENSE user.d{i} ");
    }
    for i in 0..8 {
        t += &format!("SPARSE item.c{i} 100 ");
    }
    toks(&t)
}

fn spec(kind: Kind, role: Role, schema: Vec<String>, bytes: Vec<u8>) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        kind,
        role,
        schema,
        bytes: bytes.into(),
    }
}

#[test]
fn dlrm_model_builds_scores_and_refuses_mismatches() {
    let bytes = Dlrm::generate(&DlrmShape::reference(100), 1);
    let m = Model::build(
        spec(Kind::Dlrm, Role::Rank, reference_schema(), bytes.clone()),
        16,
    )
    .unwrap();
    assert_eq!(m.device(), "cpu");
    let batch = m.schema.defaults(200);
    let scores = m.score_batch(&batch).unwrap();
    assert_eq!(scores.len(), 200);
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));

    let mut short = reference_schema();
    short.truncate(short.len() - 3);
    let e = Model::build(spec(Kind::Dlrm, Role::Rank, short, bytes.clone()), 16).unwrap_err();
    assert!(e.contains("7 SPARSE features but the DLRM has 8"), "{e}");
    let e = Model::build(
        spec(Kind::Dlrm, Role::Query, reference_schema(), bytes.clone()),
        16,
    )
    .unwrap_err();
    assert!(e.contains("item.c0 is not a user.<field>"), "{e}");
    let e = Model::build(spec(Kind::Onnx, Role::Rank, reference_schema(), bytes), 16).unwrap_err();
    assert!(
        e.contains("ONNX Runtime is not loaded") || e.contains("refused"),
        "{e}"
    );
}

#[test]
fn dlrm_query_tower_outputs_the_catalog_dimension() {
    let shape = DlrmShape {
        dense: 2,
        cardinalities: vec![10],
        dim: 8,
        bottom: vec![8],
        top: vec![16, 12],
    };
    let bytes = Dlrm::generate(&shape, 2);
    let schema = toks("DENSE user.age DENSE user.income SPARSE user.country 10 HASH");
    let m = Model::build(
        spec(Kind::Dlrm, Role::Query, schema.clone(), bytes.clone()),
        12,
    )
    .unwrap();
    let user: HashMap<String, String> = [("age".into(), "30".into())].into_iter().collect();
    assert_eq!(m.query(&user).unwrap().len(), 12);
    let e = Model::build(spec(Kind::Dlrm, Role::Query, schema, bytes), 16).unwrap_err();
    assert!(e.contains("ends with 12 values, expected 16"), "{e}");
}

#[test]
fn nan_scores_are_errors() {
    // Finite weights that overflow to inf - inf = NaN for a large input.
    let bytes = dlrm::write_safetensors(&[
        ("bottom.0.weight".into(), vec![2, 1], vec![1e30, 1e30]),
        ("bottom.0.bias".into(), vec![2], vec![0.0, 0.0]),
        ("top.0.weight".into(), vec![1, 2], vec![1.0, -1.0]),
        ("top.0.bias".into(), vec![1], vec![0.0]),
    ]);
    let m = Model::build(spec(Kind::Dlrm, Role::Rank, toks("DENSE user.x"), bytes), 4).unwrap();
    let batch = schema::Batch {
        rows: 2,
        dense: vec![0.5, 1e30],
        sparse: vec![],
        external: Vec::new(),
    };
    let e = m.score_batch(&batch).unwrap_err();
    assert!(e.contains("scored candidate 1 as NaN"), "{e}");
    assert_eq!(m.stats.errors.load(Relaxed), 1);
}

#[test]
fn oversized_models_are_refused() {
    configure(Settings {
        sessions: 1,
        ..Settings::default()
    });
    let huge = DlrmShape {
        dense: 0,
        cardinalities: vec![300_000, 300_000],
        dim: 128,
        bottom: vec![],
        top: vec![1],
    };
    let bytes = Dlrm::generate(&huge, 1);
    assert!(bytes.len() > 256 << 20);
    let e = Model::build(
        spec(
            Kind::Dlrm,
            Role::Rank,
            toks("SPARSE item.a 300000 SPARSE item.b 300000"),
            bytes,
        ),
        4,
    )
    .unwrap_err();
    assert!(e.contains("above the cap of 256 MB"), "{e}");
}

/// The reference model's weights without the embedding tables `out`, and
/// those tables' rows.
fn without_tables(bytes: &[u8], out: &[usize]) -> (Vec<u8>, Vec<Vec<f32>>) {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut kept = Vec::new();
    let mut tables = vec![Vec::new(); 8];
    for (name, _) in st.tensors() {
        let (shape, data) = dlrm::f32_tensor(&st, "test", &name).unwrap();
        match out.iter().find(|&&t| name == format!("emb.{t}")) {
            Some(&t) => tables[t] = data,
            None => kept.push((name, shape, data)),
        }
    }
    (dlrm::write_safetensors(&kept), tables)
}

#[test]
fn tables_kept_as_rows_score_like_tables_in_the_model() {
    let bytes = Dlrm::generate(&DlrmShape::reference(100), 4);
    let inside = Model::build(
        spec(Kind::Dlrm, Role::Rank, reference_schema(), bytes.clone()),
        16,
    )
    .unwrap();
    let (slim, tables) = without_tables(&bytes, &[2, 5]);
    let schema = reference_schema()
        .join(" ")
        .replace("SPARSE item.c2 100", "SPARSE item.c2 100 ROWS t2:")
        .replace("SPARSE item.c5 100", "SPARSE item.c5 100 ROWS t5:");
    let outside = Model::build(
        spec(Kind::Dlrm, Role::Rank, toks(&schema), slim.clone()),
        16,
    )
    .unwrap();
    assert_eq!(outside.device(), "cpu");
    let mut rng = crate::rng::SplitMix::new(3);
    let rows = 300; // crosses a forward chunk
    let mut batch = schema::Batch {
        rows,
        dense: (0..rows * 8).map(|_| rng.normal() as f32).collect(),
        sparse: (0..rows * 8).map(|_| rng.below(100) as i64).collect(),
        external: Vec::new(),
    };
    let want = inside.score_batch(&batch).unwrap();
    // The rows a gather would bring for tables 2 and 5.
    batch.external = vec![Vec::new(); 8];
    for t in [2, 5] {
        batch.external[t] = (0..rows)
            .flat_map(|r| {
                let id = batch.sparse[r * 8 + t] as usize;
                tables[t][id * 32..(id + 1) * 32].to_vec()
            })
            .collect();
    }
    let got = outside.score_batch(&batch).unwrap();
    for (r, (a, b)) in want.iter().zip(&got).enumerate() {
        assert!(
            (a - b).abs() < 1e-6,
            "row {r}: {a} in the model, {b} from rows"
        );
    }
    // Rows the batch did not bring read as zeros: other scores.
    batch.external.clear();
    let zeros = outside.score_batch(&batch).unwrap();
    assert!(zeros.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-4));

    // A file that still holds a ROWS table, and ROWS outside a DLRM ranker.
    let e = Model::build(spec(Kind::Dlrm, Role::Rank, toks(&schema), bytes), 16).unwrap_err();
    assert!(
        e.contains("keeps its table in Redis keys (ROWS) but the DLRM file has emb.2"),
        "{e}"
    );
    let e = Model::build(
        spec(
            Kind::Dlrm,
            Role::Query,
            toks("SPARSE user.c 100 ROWS u:"),
            slim,
        ),
        16,
    )
    .unwrap_err();
    assert!(
        e.contains("ROWS (embedding rows in Redis keys) is for DLRM models with ROLE RANK"),
        "{e}"
    );
    let e = Schema::parse(&toks("SPARSE item.c 10 ROWS")).unwrap_err();
    assert!(e.contains("missing ROWS key prefix"), "{e}");
}
