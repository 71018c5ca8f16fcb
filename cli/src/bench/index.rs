//! `recsys bench index`: our HNSW against hnswlib (PyPI) on the same clustered
//! vectors, same M / efConstruction, one thread, recall measured against brute
//! force. hnswlib is installed into a private virtualenv the first time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use recsys::index::{Hnsw, IndexParams, Metric};
use recsys::synth::{clustered, clustered_lowrank};

#[derive(clap::Args, Debug, Clone)]
pub struct IndexBench {
    /// Items in the catalog.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    #[arg(long, default_value_t = 1_000)]
    pub queries: usize,
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// Search ef values to sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,12,14,16,20,24,28,32,40,48,64,96,128"
    )]
    pub efs: Vec<usize>,
    /// Timed repetitions per ef (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Number of clusters in the synthetic data.
    #[arg(long, default_value_t = 100)]
    pub clusters: usize,
    /// Intrinsic dimension of the spread around cluster centres (0: isotropic, hard).
    #[arg(long, default_value_t = 8)]
    pub latent: usize,
    /// Skip the hnswlib side.
    #[arg(long)]
    pub no_baseline: bool,
    /// Python virtualenv for hnswlib (created when missing).
    #[arg(long, default_value = "target/bench-venv")]
    pub venv: PathBuf,
}

const K: usize = 10;

struct Point {
    ef: usize,
    qps: f64,
    recall: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) -> Result<()> {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    Ok(std::fs::write(path, bytes)?)
}

/// Python with numpy and hnswlib, from `venv` (created on first use).
pub fn ensure_venv(venv: &Path, packages: &[&str]) -> Result<PathBuf> {
    let python = venv.join("bin/python");
    let probe = packages
        .iter()
        .map(|p| format!("import {p}"))
        .collect::<Vec<_>>()
        .join(";");
    if python.exists()
        && Command::new(&python)
            .args(["-c", &probe])
            .status()
            .is_ok_and(|s| s.success())
    {
        return Ok(python);
    }
    eprintln!("setting up {} with {packages:?} (once)...", venv.display());
    let ok = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(venv)
        .status()?
        .success();
    if !ok {
        bail!("python3 -m venv failed (apt-get install python3-venv)");
    }
    let ok = Command::new(&python)
        .args(["-m", "pip", "install", "-q"])
        .args(packages)
        .status()?
        .success();
    if !ok {
        bail!("pip install {packages:?} failed");
    }
    Ok(python)
}

pub fn run(b: &IndexBench) -> Result<()> {
    println!(
        "# index bench: {} clustered unit vectors x {}-d ({} clusters, latent dim {}), {} queries, M={}, efConstruction={}, k={K}, one thread",
        b.n, b.dim, b.clusters, b.latent, b.queries, b.m, b.ef_construction
    );
    let (data, queries) = if b.latent == 0 {
        (
            clustered(b.n, b.dim, b.clusters, 0.5, 42),
            clustered(b.queries, b.dim, b.clusters, 0.5, 4242),
        )
    } else {
        (
            clustered_lowrank(b.n, b.dim, b.clusters, b.latent, 42),
            clustered_lowrank(b.queries, b.dim, b.clusters, b.latent, 4242),
        )
    };
    let params = IndexParams {
        metric: Metric::Cosine,
        m: b.m,
        ef_construction: b.ef_construction,
        ..IndexParams::new(b.dim)
    };
    params.validate().map_err(anyhow::Error::msg)?;

    let t = Instant::now();
    let mut index = Hnsw::new(params);
    for v in &data {
        let p = index.prepare(v);
        index.insert(&p);
    }
    let build_per_s = b.n as f64 / t.elapsed().as_secs_f64();
    println!("recsys  build: {build_per_s:>9.0} inserts/s");

    let prepared: Vec<Vec<f32>> = queries.iter().map(|q| index.prepare(q)).collect();
    let truth: Vec<Vec<u32>> = prepared
        .iter()
        .map(|q| index.brute_force(q, K).iter().map(|h| h.slot).collect())
        .collect();

    let mut ours = Vec::new();
    for &ef in &b.efs {
        let mut rates = Vec::new();
        let mut found = 0;
        for _ in 0..b.repeats.max(1) {
            found = 0;
            let t = Instant::now();
            for (q, tr) in prepared.iter().zip(&truth) {
                let hits = index.search(q, K, ef, |_| true);
                found += hits.iter().filter(|h| tr.contains(&h.slot)).count();
            }
            rates.push(prepared.len() as f64 / t.elapsed().as_secs_f64());
        }
        ours.push(Point {
            ef,
            qps: median(rates),
            recall: found as f64 / (K * prepared.len()) as f64,
        });
    }

    let baseline = if b.no_baseline {
        None
    } else {
        Some(run_hnswlib(b, &data, &queries, &truth)?)
    };

    println!(
        "\n| ef | recsys q/s | recsys recall@10 | hnswlib q/s | hnswlib recall@10 | q/s ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (i, p) in ours.iter().enumerate() {
        match &baseline {
            Some((_, base)) => {
                let h = &base[i];
                println!(
                    "| {} | {:.0} | {:.4} | {:.0} | {:.4} | {:.2}x |",
                    p.ef,
                    p.qps,
                    p.recall,
                    h.qps,
                    h.recall,
                    p.qps / h.qps
                );
            }
            None => println!("| {} | {:.0} | {:.4} | - | - | - |", p.ef, p.qps, p.recall),
        }
    }
    if let Some((hb, base)) = &baseline {
        println!(
            "\nbuild: recsys {build_per_s:.0} inserts/s, hnswlib {hb:.0} inserts/s, ratio {:.2}x",
            build_per_s / hb
        );
        println!(
            "\nat equal recall: recsys q/s at each hnswlib point's recall, interpolated linearly"
        );
        println!("between the two recsys ef values around it (recall rises with ef):\n");
        println!("| hnswlib ef | recall@10 | hnswlib q/s | recsys q/s at that recall | ratio |");
        println!("|---:|---:|---:|---:|---:|");
        let mut ratios = Vec::new();
        for h in base {
            if let Some(q) = qps_at_recall(&ours, h.recall) {
                ratios.push(q / h.qps);
                println!(
                    "| {} | {:.4} | {:.0} | {:.0} | {:.2}x |",
                    h.ef,
                    h.recall,
                    h.qps,
                    q,
                    q / h.qps
                );
            }
        }
        if !ratios.is_empty() {
            println!("\nmedian q/s ratio at equal recall: {:.2}x", median(ratios));
        }
    }
    Ok(())
}

/// Our q/s at `recall`, interpolated on the (recall, q/s) curve; `None` when
/// no ef reaches that recall.
fn qps_at_recall(curve: &[Point], recall: f64) -> Option<f64> {
    let hi = curve.iter().position(|p| p.recall >= recall)?;
    if hi == 0 {
        return Some(curve[0].qps);
    }
    let (a, b) = (&curve[hi - 1], &curve[hi]);
    if b.recall <= a.recall {
        return Some(b.qps);
    }
    let t = (recall - a.recall) / (b.recall - a.recall);
    Some(a.qps + t * (b.qps - a.qps))
}

fn run_hnswlib(
    b: &IndexBench,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
) -> Result<(f64, Vec<Point>)> {
    let python = ensure_venv(&b.venv, &["numpy", "hnswlib"])?;
    let dir = tempfile::tempdir()?;
    write_f32(&dir.path().join("data.f32"), data)?;
    write_f32(&dir.path().join("queries.f32"), queries)?;
    let t: Vec<u8> = truth
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("truth.u32"), t)?;
    let spec = serde_json::json!({
        "dim": b.dim, "space": "cosine", "k": K, "m": b.m, "ef_construction": b.ef_construction,
        "efs": b.efs, "repeats": b.repeats.max(1),
        "data": dir.path().join("data.f32"), "queries": dir.path().join("queries.f32"),
        "truth": dir.path().join("truth.u32"),
    });
    std::fs::write(dir.path().join("spec.json"), spec.to_string())?;
    let script = dir.path().join("baseline.py");
    std::fs::write(&script, include_str!("hnswlib_baseline.py"))?;
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir.path().join("spec.json"))
        .output()
        .context("running the hnswlib baseline")?;
    if !out.status.success() {
        bail!(
            "hnswlib baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let build = v["build_per_s"].as_f64().unwrap_or(0.0);
    println!("hnswlib build: {build:>9.0} inserts/s");
    let points = v["points"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| Point {
                    ef: p["ef"].as_u64().unwrap_or(0) as usize,
                    qps: p["qps"].as_f64().unwrap_or(0.0),
                    recall: p["recall"].as_f64().unwrap_or(0.0),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((build, points))
}
