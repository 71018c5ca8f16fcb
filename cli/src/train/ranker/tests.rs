use super::*;
use crate::data::generate::{shop, Shape};
use crate::data::{Protocol, Stage};
use recsys::rank::dlrm::Dlrm;

#[test]
fn the_module_computes_what_candle_trained() {
    let ds = shop(Shape {
        users: 200,
        items: 300,
        per_user: 20,
        seed: 5,
    });
    let split = Split::new(&ds, Protocol::LatestPerUser, Stage::Test);
    let als_params = AlsParams {
        iterations: 3,
        ..AlsParams::default()
    };
    let session = Session {
        items: 3,
        weight: 1.0,
    };
    let p = RankerParams {
        epochs: 2,
        ..RankerParams::default()
    };
    let r = train(&ds, &split, &als_params, session, &p).unwrap();
    assert!(
        r.examples > 100 && r.final_loss.is_finite(),
        "{} {}",
        r.examples,
        r.final_loss
    );
    assert!(
        r.schema.contains("SPARSE item.category") && r.schema.contains("SPARSE user.gender"),
        "{}",
        r.schema
    );
    assert!(
        !r.schema.contains("item.title"),
        "free text is left out: {}",
        r.schema
    );
    // Same weights, same seed: same bytes.
    assert_eq!(
        train(&ds, &split, &als_params, session, &p)
            .unwrap()
            .weights,
        r.weights
    );
    // The exported weights, run by the module's DLRM, give candle's scores.
    let schema = parse_schema(&r.schema).unwrap();
    let cards: Vec<u64> = schema.sparse.iter().map(|f| f.cardinality).collect();
    let dlrm =
        Dlrm::from_safetensors(&r.weights, schema.dense.len(), &cards, &[], 1, true).unwrap();
    let ex = examples(&ds, &split, &schema, &als_params, session, 1).unwrap();
    let rows = 64.min(ex.batch.rows);
    let (dw, sw) = (schema.dense.len(), schema.sparse.len());
    let native = dlrm.forward(
        rows,
        &ex.batch.dense[..rows * dw],
        &ex.batch.sparse[..rows * sw],
    );
    let dev = Device::Cpu;
    let st = candle_core::safetensors::load_buffer(&r.weights, &dev).unwrap();
    let var = |n: &str| Var::from_tensor(&st[n]).unwrap();
    let mut net = Net::new(&schema, 1, &dev).unwrap();
    net.emb = (0..sw).map(|i| var(&format!("emb.{i}"))).collect();
    net.bottom = (0..BOTTOM.len())
        .map(|j| {
            (
                var(&format!("bottom.{j}.weight")),
                var(&format!("bottom.{j}.bias")),
            )
        })
        .collect();
    net.top = (0..TOP.len())
        .map(|j| {
            (
                var(&format!("top.{j}.weight")),
                var(&format!("top.{j}.bias")),
            )
        })
        .collect();
    let dense = Tensor::from_vec(ex.batch.dense[..rows * dw].to_vec(), (rows, dw), &dev).unwrap();
    let sparse: Vec<Tensor> = (0..sw)
        .map(|j| {
            Tensor::new(
                (0..rows)
                    .map(|r| ex.batch.sparse[r * sw + j] as u32)
                    .collect::<Vec<_>>(),
                &dev,
            )
            .unwrap()
        })
        .collect();
    let logits = net
        .forward(&dense, &sparse)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (a, z) in native.iter().zip(&logits) {
        let b = 1.0 / (1.0 + (-z).exp());
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}
