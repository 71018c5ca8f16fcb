//! `recsys bench scan`: where an exact scan stops beating the graph walk.
//! For each metric and dimension, one index grows to `--max-items`; at
//! each size the same queries run through the walk and through the scan
//! (interleaved passes, median µs per query), for the EFs requests use.
//! The crossover (the largest size where the scan is still as fast) is
//! what `recsys::index::hnsw::scan_limit` encodes.

use std::time::Instant;

use anyhow::Result;
use recsys::index::hnsw::{scan_limit, SCAN_FLOOR, SCAN_SLOTS_PER_EF};
use recsys::index::{Hnsw, IndexParams, Metric};
use recsys::synth::clustered_lowrank;

use super::index::median;

#[derive(clap::Args, Debug, Clone)]
pub struct ScanBench {
    /// Largest index measured (sizes double from 500).
    #[arg(long, default_value_t = 16_000)]
    pub max_items: usize,
    #[arg(long, value_delimiter = ',', default_value = "32,64,128,256")]
    pub dims: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "100,200")]
    pub efs: Vec<usize>,
    /// Queries per pass.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Passes per path, interleaved.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

/// Median µs per query of `run` over the queries, `repeats` passes
/// interleaved with the other paths by the caller.
fn pass(queries: &[Vec<f32>], run: impl Fn(&[f32]) -> usize) -> f64 {
    let t = Instant::now();
    let mut sink = 0;
    for q in queries {
        sink += run(q);
    }
    std::hint::black_box(sink);
    t.elapsed().as_secs_f64() * 1e6 / queries.len() as f64
}

pub fn run(b: &ScanBench) -> Result<()> {
    println!(
        "# scan vs walk: clustered low-rank vectors, M=16, efConstruction=200, one thread; K = EF (a RECOMMEND's CANDIDATES); {} queries per pass, {} interleaved passes, median µs per query",
        b.queries, b.repeats
    );
    println!(
        "current rule: scan when slots <= max({SCAN_FLOOR}, {SCAN_SLOTS_PER_EF} x EF), the factor scaled by 128 / dim above 128 dimensions: e.g. at 64 dimensions {} slots at EF 100, {} at EF 200\n",
        scan_limit(100, 64),
        scan_limit(200, 64)
    );
    println!("| metric | dim | EF | items | walk µs | scan µs | scan / walk |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut crossovers = Vec::new();
    for metric in [Metric::Ip, Metric::L2] {
        for &dim in &b.dims {
            let data = clustered_lowrank(b.max_items, dim, 100, 8, 1);
            let queries: Vec<Vec<f32>> = clustered_lowrank(b.queries, dim, 100, 8, 2);
            let mut h = Hnsw::new(IndexParams {
                metric,
                ..IndexParams::new(dim)
            });
            let mut size = 500;
            let mut inserted = 0;
            let mut last_scan_wins = vec![0usize; b.efs.len()];
            while size <= b.max_items {
                while inserted < size {
                    let p = h.prepare(&data[inserted]);
                    h.insert(&p);
                    inserted += 1;
                }
                let qs: Vec<Vec<f32>> = queries.iter().map(|q| h.prepare(q)).collect();
                for (e, &ef) in b.efs.iter().enumerate() {
                    let (mut walk, mut scan) = (Vec::new(), Vec::new());
                    for _ in 0..b.repeats.max(1) {
                        walk.push(pass(&qs, |q| {
                            h.walk(q, ef, ef, |_| true, usize::MAX).0.len()
                        }));
                        scan.push(pass(&qs, |q| h.scan(q, ef, |_| true).len()));
                    }
                    let (w, s) = (median(walk), median(scan));
                    if s <= w {
                        last_scan_wins[e] = size;
                    }
                    println!(
                        "| {} | {dim} | {ef} | {size} | {w:.1} | {s:.1} | {:.2} |",
                        metric.name(),
                        s / w
                    );
                }
                size *= 2;
            }
            for (e, &ef) in b.efs.iter().enumerate() {
                crossovers.push((metric, dim, ef, last_scan_wins[e]));
            }
        }
    }
    println!("\nLargest size measured where the scan was as fast as the walk (0: never), next to the rule's limit:");
    println!("| metric | dim | EF | scan wins up to | rule scans up to |");
    println!("|---|---:|---:|---:|---:|");
    for (metric, dim, ef, n) in crossovers {
        println!(
            "| {} | {dim} | {ef} | {n} | {} |",
            metric.name(),
            scan_limit(ef, dim)
        );
    }
    Ok(())
}
