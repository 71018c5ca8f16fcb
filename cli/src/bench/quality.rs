//! `recsys bench quality`: the whole tool on MovieLens 100K (or another
//! MovieLens directory): import, train (timed), load into a throw-away
//! redis-server (rate against an in-process build of the same catalog) and
//! the quality protocol served through RECSYS.RECOMMEND.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::bench::index::median;
use crate::data::import;
use crate::loader::{self, CatalogSettings, Keys};
use crate::server::RedisServer;
use crate::train::als::AlsParams;
use crate::train::ranker::RankerParams;
use crate::verbs::eval::evaluate;

/// Load rounds (each against an in-process build).
const ROUNDS: usize = 5;

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
    let settings = CatalogSettings::default();
    let t = Instant::now();
    let mut emb = crate::train::train(&ds, true, &params, |_| {});
    let als_s = t.elapsed().as_secs_f64();
    let ranker =
        crate::train::add_ranker(&ds, &mut emb, settings.session, &RankerParams::default())?;
    let train_s = t.elapsed().as_secs_f64();
    let server = RedisServer::start(&[], &[])?;
    let mut con = server.connection()?;
    let keys = Keys { prefix: "q".into() };
    // Load rate against the in-process build: rounds interleaved, medians.
    let (mut served_rates, mut local_rates) = (Vec::new(), Vec::new());
    let mut load = None;
    for _ in 0..ROUNDS {
        let l = loader::load(&mut con, &ds, &emb, &keys, &settings, true, |_, _, _| {})?;
        served_rates.push(l.items_per_second());
        local_rates.push(loader::in_process_build_rate(&ds, &emb, &settings)?);
        load = Some(l);
    }
    let load = load.context("no load round")?;
    let (served_rate, local) = (median(served_rates), median(local_rates));
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
    report.print_table();
    println!(
        "\n{} users evaluated. import {import_s:.2} s; train {train_s:.2} s (ALS {als_s:.2} s, then the ranker on {} rows; all cores); load: items {served_rate:.0}/s through Redis (RECSYS.ITEM.MSET) vs {local:.0}/s built in-process ({:.0}%, medians of {ROUNDS} interleaved rounds), {} user hashes in {:.2} s; served {:.0} µs per RECOMMEND (pipelined)",
        report.rows[0].metrics.users,
        ranker.examples,
        100.0 * served_rate / local,
        load.users,
        load.users_seconds,
        report.served_us_per_user
    );
    Ok(())
}
