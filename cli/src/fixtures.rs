//! `recsys fixtures`: writes the DLRM weights the tests and benchmarks use
//! (deterministic), from which `scripts/make_onnx_fixtures.py` builds the
//! ONNX versions with the same weights.

use std::path::PathBuf;

use anyhow::Result;
use recsys::rank::dlrm::{Dlrm, DlrmShape};

#[derive(clap::Args)]
pub struct Fixtures {
    /// Output folder.
    #[arg(long, default_value = "tests/fixtures")]
    pub out: PathBuf,
}

/// Cardinality of every sparse feature of the reference ranker fixture.
pub const RANKER_CARDINALITY: usize = 100;
/// Seed of the ranker and query tower weights.
pub const SEED: u64 = 7;

/// The query tower fixture: 2 dense user features and a hashed country,
/// producing a 16-d user vector.
pub fn query_tower_shape() -> DlrmShape {
    DlrmShape {
        dense: 2,
        cardinalities: vec![50],
        dim: 16,
        bottom: vec![16],
        top: vec![32, 16],
    }
}

/// The fixture files and their bytes.
pub fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "dlrm_ranker.safetensors",
            Dlrm::generate(&DlrmShape::reference(RANKER_CARDINALITY), SEED),
        ),
        (
            "query_tower.safetensors",
            Dlrm::generate(&query_tower_shape(), SEED + 1),
        ),
    ]
}

pub fn run(f: &Fixtures) -> Result<()> {
    std::fs::create_dir_all(&f.out)?;
    for (name, bytes) in files() {
        let path = f.out.join(name);
        std::fs::write(&path, bytes)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
