//! `recsys train`: ALS embeddings (and the evaluation split's in-process
//! figures with `--holdout`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crate::data::{Dataset, Split};
use recsys::user::Session;

use crate::eval;
use crate::train::als::AlsParams;
use crate::train::ranker::RankerParams;

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
    /// Skip the DLRM ranker.
    #[arg(long)]
    no_ranker: bool,
    /// Ranker training epochs.
    #[arg(long, default_value_t = RankerParams::default().epochs)]
    ranker_epochs: usize,
    /// The ranker's features in RECSYS.MODEL.SET's SCHEMA syntax (default:
    /// the score, every categorical user feature and item attribute).
    #[arg(long)]
    ranker_schema: Option<String>,
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
    let mut emb = crate::train::train(&ds, a.holdout, &params, |i| bar.set_position(i as u64));
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ALS: {} factors, {} iterations in {secs:.2} s ({:.3} s/iteration)",
        params.factors,
        params.iterations,
        secs / params.iterations.max(1) as f64
    );
    let blend = Session::new(a.session[0] as usize, a.session[1])?;
    if !a.no_ranker {
        let started = Instant::now();
        let rp = RankerParams {
            epochs: a.ranker_epochs,
            seed: a.seed,
            schema: a.ranker_schema.clone(),
            ..RankerParams::default()
        };
        let r = crate::train::add_ranker(&ds, &mut emb, blend, &rp)?;
        println!(
            "ranker: DLRM on {} rows ({} epochs, final loss {:.4}) in {:.2} s; SCHEMA {}",
            r.examples,
            rp.epochs,
            r.final_loss,
            started.elapsed().as_secs_f64(),
            r.schema
        );
    }
    emb.save(&a.out)?;
    println!("wrote {}", a.out.join("als.bin").display());
    if a.holdout {
        let split = Split::new(&ds, true);
        let pop = eval::popularity(&split, ds.items.len(), 10);
        let plain = eval::embeddings(&emb.factors, &split, Session::new(0, 0.0)?, 10);
        let blended = eval::embeddings(&emb.factors, &split, blend, 10);
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
