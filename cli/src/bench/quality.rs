//! `recsys bench quality`: the whole tool on MovieLens 100K (or another
//! MovieLens directory): import, train (timed), load into a throw-away
//! redis-server (rate against an in-process build of the same catalog) and
//! the quality protocol served through RECSYS.RECOMMEND.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::data::import;
use crate::loader::{self, CatalogSettings, Keys};
use crate::server::RedisServer;
use crate::train::als::AlsParams;
use crate::verbs::eval::evaluate;

#[derive(clap::Args, Debug, Clone)]
pub struct QualityBench {
    /// The MovieLens directory (its licence forbids redistribution: read it where it is).
    #[arg(long, default_value = "../shared/datasets/ml-100k")]
    pub data: PathBuf,
    #[arg(long, default_value_t = AlsParams::default().seed)]
    pub seed: u64,
}

pub fn run(b: &QualityBench) -> Result<()> {
    let t = Instant::now();
    let ds = import::movielens(&b.data).with_context(|| format!("reading {}", b.data.display()))?;
    let import_s = t.elapsed().as_secs_f64();
    let params = AlsParams {
        seed: b.seed,
        ..AlsParams::default()
    };
    let t = Instant::now();
    let emb = crate::train::train(&ds, true, &params, |_| {});
    let train_s = t.elapsed().as_secs_f64();
    let server = RedisServer::start(&[], &[])?;
    let mut con = server.connection()?;
    let keys = Keys { prefix: "q".into() };
    let settings = CatalogSettings::default();
    let load = loader::load(&mut con, &ds, &emb, &keys, &settings, false, |_, _, _| {})?;
    let local = loader::in_process_build_rate(&ds, &emb, &settings)?;
    let report = evaluate(&mut con, &ds, &emb, &keys, &[])?;
    println!(
        "{}; ALS {} factors, {} iterations, regularization {}, alpha {}, CG {} steps, seed {}; catalog METRIC IP, M {}, EF_CONSTRUCTION {}, default SESSION {} {}\n",
        ds.summary(),
        params.factors,
        params.iterations,
        params.regularization,
        params.alpha,
        params.cg_steps,
        params.seed,
        settings.m,
        settings.ef_construction,
        settings.session.items,
        settings.session.weight
    );
    println!("| method | how | recall@10 | NDCG@10 |");
    println!("|---|---|---:|---:|");
    for r in &report.rows {
        println!(
            "| {} | {} | {:.4} | {:.4} |",
            r.name, r.how, r.metrics.recall, r.metrics.ndcg
        );
    }
    println!(
        "\n{} users evaluated. import {import_s:.2} s, train {train_s:.2} s (all cores); load: catalog {:.0} items/s through Redis vs {local:.0} items/s built in-process ({:.0}%), {} user hashes in {:.2} s; served {:.0} µs per RECOMMEND (pipelined)",
        report.rows[0].metrics.users,
        load.items_per_second(),
        100.0 * load.items_per_second() / local,
        load.users,
        load.users_seconds,
        report.served_us_per_user
    );
    Ok(())
}
