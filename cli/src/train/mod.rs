//! `recsys train`: item and user embeddings by implicit ALS ([`als`]) on a
//! dataset's training positives, saved with their settings in a model
//! directory (`als.bin`) that `recsys load` and `recsys eval` read.

pub mod als;

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Split};
use als::{AlsParams, Csr, Factors};

/// First bytes of `als.bin`.
const MAGIC: &[u8] = b"recsys-als 1\n";

/// What `recsys train` produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    /// The dataset's `source` line (load and eval check they match).
    pub dataset: String,
    /// Trained without each user's latest positive (the evaluation split).
    pub hold_out: bool,
    pub params: AlsParams,
    pub factors: Factors,
}

impl Embeddings {
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend(bincode::serde::encode_to_vec(
            self,
            bincode::config::standard(),
        )?);
        let path = dir.join("als.bin");
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(dir: &Path) -> Result<Embeddings> {
        let path = dir.join("als.bin");
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading {} (train first: recsys train)", path.display()))?;
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            bail!("{} is not written by recsys train", path.display());
        };
        let (e, _): (Embeddings, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .with_context(|| format!("{}: corrupt", path.display()))?;
        let k = e.factors.k;
        if k == 0 || e.factors.users.len() % k != 0 || e.factors.items.len() % k != 0 {
            bail!("{}: factor sizes do not match", path.display());
        }
        Ok(e)
    }

    /// Checks that these embeddings were trained on `ds`.
    pub fn check_matches(&self, ds: &Dataset) -> Result<()> {
        if self.dataset != ds.source
            || self.factors.users.len() != ds.users.len() * self.factors.k
            || self.factors.items.len() != ds.items.len() * self.factors.k
        {
            bail!(
                "the model was trained on '{}', not on this dataset ('{}'): train again",
                self.dataset,
                ds.source
            );
        }
        Ok(())
    }
}

/// The user x item matrix of training positives (weight 1 each).
pub fn positives_matrix(split: &Split) -> Csr {
    let rows: Vec<Vec<(u32, f32)>> = split
        .train
        .iter()
        .map(|items| items.iter().map(|&i| (i, 1.0)).collect())
        .collect();
    Csr::from_rows(&rows)
}

/// Trains on `ds` (without the held-out positives when `hold_out`).
pub fn train(
    ds: &Dataset,
    hold_out: bool,
    params: &AlsParams,
    on_iteration: impl FnMut(usize),
) -> Embeddings {
    let split = Split::new(ds, hold_out);
    let m = positives_matrix(&split);
    let factors = als::train(&m, ds.items.len(), params, on_iteration);
    Embeddings {
        dataset: ds.source.clone(),
        hold_out,
        params: *params,
        factors,
    }
}
