//! `recsys bench quality`: the tool end to end with every setting chosen on
//! validation only, on MovieLens 100K (when its directory is there) and on
//! a generated shop: import, train (timed, the choice on validation
//! included), load into a throw-away redis-server (rate against an
//! in-process build of the same catalog), then each user's test item
//! scored through RECSYS.RECOMMEND next to the exact in-process figures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bench::index::median;
use crate::data::generate::{shop, Shape};
use crate::data::{import, Dataset};
use crate::eval::{query_with, with_queries, K};
use crate::loader::{self, CatalogSettings, Install, Keys};
use crate::server::RedisServer;
use crate::train::als::AlsParams;
use crate::train::Plan;
use crate::verbs::eval::evaluate;
use recsys::rank::sequence::SequenceTower;

/// Load rounds (each against an in-process build).
const ROUNDS: usize = 5;

#[derive(clap::Args, Debug, Clone)]
pub struct QualityBench {
    /// The MovieLens directory (its licence forbids redistribution: read it where it is).
    #[arg(long, default_value = "../shared/datasets/ml-100k")]
    pub data: PathBuf,
    #[arg(long, default_value_t = AlsParams::default().seed)]
    pub seed: u64,
    /// Seconds each training may spend choosing settings on validation.
    #[arg(long, default_value_t = 30.0)]
    pub tune_seconds: f64,
}

pub fn run(b: &QualityBench) -> Result<()> {
    let server = RedisServer::start(&[], &[])?;
    let mut con = server.connection()?;
    if b.data.exists() {
        let t = Instant::now();
        let ds =
            import::movielens(&b.data).with_context(|| format!("reading {}", b.data.display()))?;
        let import_s = t.elapsed().as_secs_f64();
        println!("## MovieLens 100K (import {import_s:.2} s)\n");
        one(&mut con, b, &ds, "q")?;
    } else {
        println!(
            "## MovieLens 100K: skipped, {} is not there\n",
            b.data.display()
        );
    }
    let ds = shop(Shape {
        seed: b.seed,
        ..Shape::default()
    });
    println!("\n## Generated shop (`recsys import generate`, default shape)\n");
    one(&mut con, b, &ds, "g")
}

/// Train, load and evaluate `ds` under key prefix `prefix`.
fn one(con: &mut redis::Connection, b: &QualityBench, ds: &Dataset, prefix: &str) -> Result<()> {
    let plan = Plan {
        als: AlsParams {
            seed: b.seed,
            ..AlsParams::default()
        },
        tune: Some(Duration::from_secs_f64(b.tune_seconds)),
        ..Plan::default()
    };
    let t = Instant::now();
    let emb = crate::train::fit(ds, &plan, |_| {})?;
    let train_s = t.elapsed().as_secs_f64();
    // Served as `recsys load` serves it, and the ranker beside it whatever
    // its verdict, so the table shows what the verdict decided against.
    let settings = CatalogSettings {
        ranker: Install::Always,
        ..CatalogSettings::default()
    };
    let keys = Keys {
        prefix: prefix.into(),
    };
    let (mut served_rates, mut local_rates) = (Vec::new(), Vec::new());
    let mut load = None;
    for _ in 0..ROUNDS {
        let l = loader::load(con, ds, &emb, &keys, &settings, true, |_, _, _| {})?;
        served_rates.push(l.items_per_second());
        local_rates.push(loader::in_process_build_rate(ds, &emb, &settings)?);
        load = Some(l);
    }
    let load = load.context("no load round")?;
    let (served_rate, local) = (median(served_rates), median(local_rates));
    let report = evaluate(con, ds, &emb, &keys, &[])?;
    let m = &emb.manifest;
    println!(
        "{}; ALS {} iterations, CG {} steps, seed {}; catalog METRIC IP, M {}, EF_CONSTRUCTION {}\n",
        ds.summary(),
        m.als.iterations,
        m.als.cg_steps,
        m.als.seed,
        settings.m,
        settings.ef_construction,
    );
    for line in &report.chosen {
        println!("- {line}");
    }
    println!();
    report.print_table();
    // The configuration requests get: SESSION and the tower's default weight.
    let split = emb.split(ds);
    let tower = match &emb.tower {
        Some(b) => {
            Some(SequenceTower::from_safetensors(b, emb.factors.k).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let weight = settings.sequence_weight(&emb).unwrap_or(0.0);
    let f = &emb.factors;
    let chosen = |split: &crate::data::Split| {
        with_queries(f, split, K, |u, history| {
            query_with(
                f,
                u,
                history,
                m.session,
                tower.as_ref().map(|t| (t, weight)),
            )
        })
    };
    let (untied, all) = (chosen(&split.without_ties()), chosen(&split));
    println!(
        "\n{} users scored on their test item. Ties: for {} of them the test item has the same second as their latest training positive, and the input line decided which is the test item; over the other {} users the chosen configuration scores recall@{K} {:.4} / NDCG@{K} {:.4} (all users: {:.4} / {:.4}).",
        all.users,
        split.tied.len(),
        untied.users,
        untied.recall,
        untied.ndcg,
        all.recall,
        all.ndcg
    );
    println!(
        "Train {train_s:.2} s everything included (the choice on validation: {:.2} s; all cores); load: items {served_rate:.0}/s through Redis (RECSYS.ITEM.MSET) vs {local:.0}/s built in-process ({:.0}%, medians of {ROUNDS} interleaved rounds), {} user hashes in {:.2} s.",
        m.tuning.as_ref().map_or(0.0, |t| t.spent_s),
        100.0 * served_rate / local,
        load.users,
        load.users_seconds,
    );
    Ok(())
}
