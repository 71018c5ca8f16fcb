//! `recsys train`: ALS embeddings (and the evaluation split's in-process
//! figures with `--holdout`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crate::data::{Dataset, Split};
use crate::eval::{self, Blend};
use crate::train::als::AlsParams;

#[derive(Args)]
pub struct Train {
    /// The dataset file (recsys import).
    data: PathBuf,
    /// The model directory to write.
    #[arg(long, short, default_value = "model")]
    out: PathBuf,
    /// Hold out each user's latest positive (the evaluation split); then
    /// print the in-process figures of the protocol.
    #[arg(long)]
    holdout: bool,
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
    /// SESSION blend reported with --holdout: recent items and weight.
    #[arg(long, num_args = 2, value_names = ["ITEMS", "WEIGHT"], default_values = ["3", "1"])]
    session: Vec<f32>,
}

pub fn run(a: &Train) -> Result<()> {
    if let Some(t) = a.threads {
        // Fails only when a pool already exists (then it is used as is).
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    let ds = Dataset::load(&a.data)?;
    println!("{}", ds.summary());
    let params = AlsParams {
        factors: a.factors.max(1),
        iterations: a.iterations,
        regularization: a.regularization,
        alpha: a.alpha,
        cg_steps: a.cg_steps,
        seed: a.seed,
    };
    let started = Instant::now();
    let bar = super::bar(params.iterations as u64, "ALS");
    let emb = crate::train::train(&ds, a.holdout, &params, |i| bar.set_position(i as u64));
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ALS: {} factors, {} iterations in {secs:.2} s ({:.3} s/iteration)",
        params.factors,
        params.iterations,
        secs / params.iterations.max(1) as f64
    );
    emb.save(&a.out)?;
    println!("wrote {}", a.out.join("als.bin").display());
    if a.holdout {
        let split = Split::new(&ds, true);
        let blend = Blend {
            items: a.session[0] as usize,
            weight: a.session[1],
        };
        let pop = eval::popularity(&split, ds.items.len(), 10);
        let plain = eval::embeddings(&emb.factors, &split, None, 10);
        let blended = eval::embeddings(&emb.factors, &split, Some(blend), 10);
        println!("in-process, {} users: recall@10 / NDCG@10", pop.users);
        println!("  popularity         {:.4} / {:.4}", pop.recall, pop.ndcg);
        println!(
            "  ALS                {:.4} / {:.4}",
            plain.recall, plain.ndcg
        );
        println!(
            "  ALS + SESSION {} {}  {:.4} / {:.4}",
            blend.items, blend.weight, blended.recall, blended.ndcg
        );
    }
    Ok(())
}
