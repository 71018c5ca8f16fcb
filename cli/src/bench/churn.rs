//! `recsys bench churn`: does the index keep its quality when items come and
//! go? Builds a catalog, then runs rounds of deleting a fraction of the items
//! and adding them back, through the same `Catalog::remove`/`Catalog::set`
//! calls RECSYS.ITEM.DEL and RECSYS.ITEM.SET make. After every round it
//! measures recall@K against exact search over the live items and counts the
//! searches that returned fewer than K items; at the end it builds a fresh
//! catalog of the same items and measures it with the same queries.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use recsys::catalog::Catalog;
use recsys::index::{IndexParams, Metric};
use recsys::rng::SplitMix;
use recsys::synth::clustered;

#[derive(Args, Debug, Clone)]
pub struct ChurnBench {
    /// Items in the catalog.
    #[arg(long, default_value_t = 20_000)]
    pub n: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    #[arg(long, default_value_t = 50)]
    pub clusters: usize,
    /// Rounds of delete-then-re-add.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Fraction of the items deleted and re-added per round.
    #[arg(long, default_value_t = 0.3)]
    pub fraction: f64,
    /// Queries per measurement.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Search ef (the catalog default, 100, when not given).
    #[arg(long)]
    pub ef: Option<usize>,
}

/// One measurement of the whole query set.
pub struct Quality {
    pub recall: f64,
    /// Searches that returned fewer than K items.
    pub short: usize,
}

/// Recall@K of `catalog` against exact search over its live items.
pub fn measure(catalog: &Catalog, queries: &[Vec<f32>], k: usize, ef: Option<usize>) -> Quality {
    let (mut found, mut short) = (0usize, 0usize);
    for q in queries {
        let prepared = catalog.index().prepare(q);
        let truth: Vec<&str> = catalog
            .index()
            .brute_force(&prepared, k)
            .iter()
            .filter_map(|h| catalog.id_of(h.slot))
            .collect();
        let hits = catalog.search(q, k, ef);
        if hits.len() < k.min(catalog.len()) {
            short += 1;
        }
        found += hits.iter().filter(|h| truth.contains(&h.id)).count();
    }
    Quality {
        recall: found as f64 / (k * queries.len()).max(1) as f64,
        short,
    }
}

fn build(params: IndexParams, items: &[(String, Vec<f32>)]) -> Result<Catalog> {
    let mut catalog = Catalog::new(params)?;
    for (id, v) in items {
        catalog.set(id, v, None)?;
    }
    Ok(catalog)
}

pub fn run(b: &ChurnBench) -> Result<()> {
    if !(0.0..=1.0).contains(&b.fraction) || b.n == 0 || b.k == 0 {
        bail!("--fraction must be in [0, 1], --n and --k at least 1");
    }
    let params = IndexParams {
        metric: Metric::Ip,
        ..IndexParams::new(b.dim)
    };
    let items: Vec<(String, Vec<f32>)> = clustered(b.n, b.dim, b.clusters, 0.5, 42)
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("item:{i}"), v))
        .collect();
    let queries = clustered(b.queries, b.dim, b.clusters, 0.5, 4242);
    let ef = b.ef;
    println!(
        "{} clustered unit vectors x {}-d ({} clusters), IP, M={}, efConstruction={}, ef={}, {} queries, recall@{} against exact search over the live items\n",
        b.n,
        b.dim,
        b.clusters,
        params.m,
        params.ef_construction,
        ef.unwrap_or(params.ef_search),
        b.queries,
        b.k
    );
    println!(
        "| state | recall@{} | searches with fewer than {} results | writes/s |",
        b.k, b.k
    );
    println!("|---|---:|---:|---:|");
    let t = Instant::now();
    let mut catalog = build(params, &items)?;
    let build_per_s = b.n as f64 / t.elapsed().as_secs_f64();
    let q = measure(&catalog, &queries, b.k, ef);
    println!(
        "| fresh build | {:.4} | {} | {build_per_s:.0} inserts/s |",
        q.recall, q.short
    );

    let mut rng = SplitMix::new(7);
    let per_round = (b.n as f64 * b.fraction).round() as usize;
    let mut last = q;
    for round in 1..=b.rounds {
        let mut order: Vec<usize> = (0..b.n).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let chosen = &order[..per_round];
        let t = Instant::now();
        for &i in chosen {
            catalog.remove(&items[i].0);
        }
        for &i in chosen {
            catalog.set(&items[i].0, &items[i].1, None)?;
        }
        let writes_per_s = 2.0 * per_round as f64 / t.elapsed().as_secs_f64();
        last = measure(&catalog, &queries, b.k, ef);
        println!(
            "| after round {round} ({per_round} deleted and re-added) | {:.4} | {} | {writes_per_s:.0} |",
            last.recall, last.short
        );
    }
    // A fresh build of what the churned catalog holds, in its iteration order.
    let now: Vec<(String, Vec<f32>)> = catalog
        .items()
        .map(|(id, v, _)| (id.to_string(), v))
        .collect();
    let fresh = measure(&build(params, &now)?, &queries, b.k, ef);
    println!(
        "| fresh build of the same items | {:.4} | {} | - |",
        fresh.recall, fresh.short
    );
    println!(
        "\nrecall after {} rounds minus fresh build: {:+.4}",
        b.rounds,
        last.recall - fresh.recall
    );
    Ok(())
}
