//! The tool's verbs from interactions to recommendations: `import`,
//! `train`, `load`, `eval` and `batch`, `migrate-users` and `simulate` (each its command-line arguments and
//! what it prints; the work lives in `data`, `train`, `eval` and `loader`).

pub mod batch;
pub mod eval;
pub mod import;
pub mod load;
pub mod migrate;
pub mod simulate;
pub mod train;

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::Dataset;
use crate::loader::Keys;
use crate::train::Embeddings;

/// What `load` and `eval` work on: a dataset, its model directory, and the
/// Redis server and key prefix it is served under.
#[derive(clap::Args)]
pub struct Served {
    /// The dataset file (recsys import).
    pub data: PathBuf,
    /// The model directory (recsys train).
    #[arg(long, default_value = "model")]
    pub model: PathBuf,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis: String,
    /// Key prefix: the catalog is PREFIX:items, users PREFIX:user:<id>.
    #[arg(long, default_value = "rs")]
    pub prefix: String,
}

impl Served {
    /// Reads the dataset and the model, and connects.
    pub fn open(&self) -> Result<(Dataset, Embeddings, redis::Connection)> {
        let ds = Dataset::load(&self.data)?;
        let emb = Embeddings::load(&self.model)?;
        let con = redis::Client::open(self.redis.as_str())?
            .get_connection()
            .with_context(|| format!("connecting to {}", self.redis))?;
        Ok((ds, emb, con))
    }

    pub fn keys(&self) -> Keys {
        Keys {
            prefix: self.prefix.clone(),
        }
    }
}

/// A progress bar for `len` steps of `what` (hidden when stderr is not a
/// terminal, as indicatif does).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}
