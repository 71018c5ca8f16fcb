//! `recsys train`: a model directory ([`crate::train::fit`]): settings
//! chosen on the validation stage within a time budget unless `--no-tune`,
//! ALS, the ranker and its verdict; with `--holdout`, the test stage's
//! in-process figures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;

use crate::data::{Dataset, Protocol};
use recsys::user::Session;

use crate::eval::{self, K};
use crate::train::als::AlsParams;
use crate::train::ranker::RankerParams;
use crate::train::sequence::TowerParams;
use crate::train::{Plan, DEFAULT_SESSION};

#[derive(Args)]
pub struct Train {
    /// The dataset file (recsys import).
    data: PathBuf,
    /// The model directory to write.
    #[arg(long, short, default_value = "model")]
    out: PathBuf,
    /// Leave each user's test item out (to evaluate with `recsys eval`),
    /// then print the in-process test figures; without it every positive
    /// trains (production).
    #[arg(long)]
    holdout: bool,
    /// Hold out by global time instead of per user: the latest FRACTION of
    /// the positives is the test period, the FRACTION before it validation.
    #[arg(long, value_name = "FRACTION")]
    global_split: Option<f64>,
    /// Seconds to spend choosing ALS settings and the SESSION blend on
    /// validation.
    #[arg(long, default_value_t = 30.0)]
    tune_seconds: f64,
    /// Use the settings below as given (no choice on validation).
    #[arg(long)]
    no_tune: bool,
    #[arg(long, default_value_t = AlsParams::default().factors)]
    factors: usize,
    #[arg(long, default_value_t = AlsParams::default().iterations)]
    iterations: usize,
    #[arg(long, default_value_t = AlsParams::default().regularization)]
    regularization: f32,
    #[arg(long, default_value_t = AlsParams::default().alpha)]
    alpha: f32,
    /// Conjugate-gradient steps per solve (0: exact Cholesky solves).
    #[arg(long, default_value_t = AlsParams::default().cg_steps)]
    cg_steps: usize,
    #[arg(long, default_value_t = AlsParams::default().seed)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Skip the DLRM ranker.
    #[arg(long)]
    no_ranker: bool,
    /// Skip the sequence tower.
    #[arg(long)]
    no_tower: bool,
    /// Sequence tower training epochs at most (validation stops it earlier).
    #[arg(long, default_value_t = TowerParams::default().epochs)]
    tower_epochs: usize,
    /// Ranker training epochs at most (validation stops it earlier).
    #[arg(long, default_value_t = RankerParams::default().epochs)]
    ranker_epochs: usize,
    /// The ranker's features in RECSYS.MODEL.SET's SCHEMA syntax (default:
    /// the score, every categorical user feature and item attribute).
    #[arg(long)]
    ranker_schema: Option<String>,
    /// SESSION blend: recent items and weight (the starting point of the
    /// choice on validation, or the one used with --no-tune).
    #[arg(long, num_args = 2, value_names = ["ITEMS", "WEIGHT"])]
    session: Option<Vec<f32>>,
}

impl Train {
    fn plan(&self) -> Result<Plan> {
        let protocol = match self.global_split {
            None => Protocol::LatestPerUser,
            Some(f) if f > 0.0 && f < 0.5 => Protocol::GlobalTime { fraction: f },
            Some(f) => bail!("--global-split must be between 0 and 0.5 (exclusive), got {f}"),
        };
        if !(self.tune_seconds >= 0.0 && self.tune_seconds <= 86_400.0) {
            bail!(
                "--tune-seconds must be between 0 and 86400, got {}",
                self.tune_seconds
            );
        }
        let session = match &self.session {
            Some(s) => Session::new(s[0] as usize, s[1])?,
            None => DEFAULT_SESSION,
        };
        Ok(Plan {
            protocol,
            holdout: self.holdout,
            als: AlsParams {
                factors: self.factors.max(1),
                iterations: self.iterations,
                regularization: self.regularization,
                alpha: self.alpha,
                cg_steps: self.cg_steps,
                seed: self.seed,
            },
            session,
            tune: (!self.no_tune).then(|| Duration::from_secs_f64(self.tune_seconds)),
            ranker: (!self.no_ranker).then(|| RankerParams {
                epochs: self.ranker_epochs.max(1),
                seed: self.seed,
                schema: self.ranker_schema.clone(),
                ..RankerParams::default()
            }),
            tower: (!self.no_tower).then(|| TowerParams {
                epochs: self.tower_epochs.max(1),
                seed: self.seed,
                ..TowerParams::default()
            }),
        })
    }
}

pub fn run(a: &Train) -> Result<()> {
    if let Some(t) = a.threads {
        // Fails only when a pool already exists (then it is used as is).
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    let plan = a.plan()?;
    let ds = Dataset::load(&a.data)?;
    println!("{}", ds.summary());
    println!("protocol: {}", plan.protocol.describe());
    let started = Instant::now();
    let emb = crate::train::fit(&ds, &plan, |line| println!("{line}"))?;
    println!(
        "trained in {:.2} s, everything included",
        started.elapsed().as_secs_f64()
    );
    emb.save(&a.out)?;
    println!(
        "wrote {} (manifest.json says what it holds)",
        a.out.display()
    );
    if a.holdout {
        let split = emb.split(&ds);
        let pop = eval::popularity(&split, ds.items.len(), K);
        let plain = eval::embeddings(&emb.factors, &split, Session::new(0, 0.0)?, K);
        let s = emb.manifest.session;
        let blended = eval::embeddings(&emb.factors, &split, s, K);
        println!(
            "test items, in-process, {} users: recall@{K} / NDCG@{K}",
            pop.users
        );
        println!("  popularity         {:.4} / {:.4}", pop.recall, pop.ndcg);
        println!(
            "  ALS                {:.4} / {:.4}",
            plain.recall, plain.ndcg
        );
        println!(
            "  ALS + SESSION {} {}  {:.4} / {:.4}",
            s.items, s.weight, blended.recall, blended.ndcg
        );
    }
    Ok(())
}
