//! `recsys train`: item and user embeddings by implicit ALS ([`als`]) on a
//! dataset's training positives and a DLRM ranker over them ([`ranker`]),
//! saved in a model directory (`als.bin`, `ranker.safetensors`,
//! `ranker.schema`) that `recsys load` and `recsys eval` read.

pub mod als;
pub mod ranker;

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
    /// The ranker, when one was trained (its own files).
    #[serde(skip)]
    pub ranker: Option<SavedRanker>,
}

/// A ranker as RECSYS.MODEL.SET takes it: SCHEMA tokens and DLRM weights.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedRanker {
    pub schema: String,
    pub weights: Vec<u8>,
}

const RANKER_WEIGHTS: &str = "ranker.safetensors";
const RANKER_SCHEMA: &str = "ranker.schema";

impl Embeddings {
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend(bincode::serde::encode_to_vec(
            self,
            bincode::config::standard(),
        )?);
        let path = dir.join("als.bin");
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        // A ranker of an earlier training must not outlive these embeddings.
        for f in [RANKER_WEIGHTS, RANKER_SCHEMA] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        if let Some(r) = &self.ranker {
            std::fs::write(dir.join(RANKER_WEIGHTS), &r.weights)?;
            std::fs::write(dir.join(RANKER_SCHEMA), &r.schema)?;
        }
        Ok(())
    }

    pub fn load(dir: &Path) -> Result<Embeddings> {
        let path = dir.join("als.bin");
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading {} (train first: recsys train)", path.display()))?;
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            bail!("{} is not written by recsys train", path.display());
        };
        let (mut e, _): (Embeddings, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .with_context(|| format!("{}: corrupt", path.display()))?;
        if dir.join(RANKER_WEIGHTS).exists() {
            let schema = dir.join(RANKER_SCHEMA);
            e.ranker = Some(SavedRanker {
                weights: std::fs::read(dir.join(RANKER_WEIGHTS))?,
                schema: std::fs::read_to_string(&schema)
                    .with_context(|| format!("reading {}", schema.display()))?,
            });
        }
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

/// Trains the ranker for embeddings `emb` of `ds` (same split) and keeps it
/// with them.
pub fn add_ranker(
    ds: &Dataset,
    emb: &mut Embeddings,
    session: recsys::user::Session,
    p: &ranker::RankerParams,
) -> Result<ranker::Ranker> {
    let split = Split::new(ds, emb.hold_out);
    let r = ranker::train(ds, &split, &emb.params, session, p)?;
    emb.ranker = Some(SavedRanker {
        schema: r.schema.clone(),
        weights: r.weights.clone(),
    });
    Ok(r)
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
        ranker: None,
    }
}
