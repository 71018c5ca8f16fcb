//! `recsys bench als`: the tool's ALS against implicit (PyPI) on one
//! generated matrix (users x items with power-law popularity), the same
//! factors, regularization, alpha, CG steps and threads; seconds per
//! iteration as the median of the iterations, both runs in one command.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench::index::{ensure_venv, median};
use crate::data::generate::{shop, Shape};
use crate::data::Split;
use crate::train::als::{self, AlsParams, Csr};

#[derive(clap::Args, Debug, Clone)]
pub struct AlsBench {
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    #[arg(long, default_value_t = 50_000)]
    pub items: usize,
    /// Mean interactions generated per user (128 x 100,000 users: about 10
    /// million distinct user-item pairs once repeats are merged).
    #[arg(long, default_value_t = 128)]
    pub per_user: usize,
    #[arg(long, default_value_t = 64)]
    pub factors: usize,
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Threads for both (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value = "target/bench-venv")]
    pub venv: PathBuf,
}

fn write<T: Copy>(path: &std::path::Path, v: &[T], bytes: impl Fn(T) -> Vec<u8>) -> Result<()> {
    let out: Vec<u8> = v.iter().flat_map(|&x| bytes(x)).collect();
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

pub fn run(b: &AlsBench) -> Result<()> {
    let threads = b
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let started = Instant::now();
    let ds = shop(Shape {
        users: b.users,
        items: b.items,
        per_user: b.per_user,
        seed: 11,
    });
    // Every interaction counts once (weight 1): the matrix both libraries get.
    let split = Split::new(
        &crate::data::Dataset {
            positive_min: f32::MIN,
            ..ds
        },
        crate::data::Protocol::LatestPerUser,
        crate::data::Stage::Full,
    );
    let m = crate::train::positives_matrix(&split);
    println!(
        "{} users x {} items, {} nonzeros (generated, power-law popularity; {:.1} s to generate); {} factors, regularization {}, alpha {}, CG 3 steps, {threads} threads, float32; seconds per iteration: median (min-max) of {} iterations\n",
        m.rows(),
        b.items,
        m.cols.len(),
        started.elapsed().as_secs_f64(),
        b.factors,
        AlsParams::default().regularization,
        AlsParams::default().alpha,
        b.iterations
    );
    let params = AlsParams {
        factors: b.factors,
        iterations: b.iterations,
        ..AlsParams::default()
    };
    let mut stamps = vec![Instant::now()];
    pool.install(|| als::train(&m, b.items, &params, |_| stamps.push(Instant::now())));
    let ours: Vec<f64> = stamps
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();

    let python = ensure_venv(&b.venv, &["numpy", "scipy", "implicit", "threadpoolctl"])?;
    let dir = tempfile::tempdir()?;
    let Csr { ptr, cols, vals } = &m;
    let ptr: Vec<i64> = ptr.iter().map(|&p| p as i64).collect();
    write(&dir.path().join("ptr"), &ptr, |x| x.to_le_bytes().to_vec())?;
    write(&dir.path().join("cols"), cols, |x| {
        (x as i32).to_le_bytes().to_vec()
    })?;
    write(&dir.path().join("vals"), vals, |x| x.to_le_bytes().to_vec())?;
    let spec = serde_json::json!({
        "ptr": dir.path().join("ptr"), "cols": dir.path().join("cols"), "vals": dir.path().join("vals"),
        "items": b.items, "factors": b.factors, "iterations": b.iterations, "threads": threads,
        "regularization": params.regularization, "alpha": params.alpha,
    });
    std::fs::write(dir.path().join("spec.json"), spec.to_string())?;
    let script = dir.path().join("implicit_baseline.py");
    std::fs::write(&script, include_str!("implicit_baseline.py"))?;
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir.path().join("spec.json"))
        .output()
        .context("running the implicit baseline")?;
    if !out.status.success() {
        bail!(
            "implicit baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("implicit's output")?;
    let theirs: Vec<f64> = v["iteration_seconds"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    if theirs.is_empty() {
        bail!("implicit reported no iterations");
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{:.3} ({lo:.3}-{hi:.3})", median(v.to_vec()))
    };
    println!("| trainer | s/iteration | ratio |");
    println!("|---|---:|---:|");
    let (mo, mt) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "| recsys train (ALS, CG) | {} | {:.2}x implicit's speed |",
        spread(&ours),
        mt / mo
    );
    println!(
        "| implicit {} (CPU, CG) | {} | 1.00x |",
        v["version"].as_str().unwrap_or("?"),
        spread(&theirs)
    );
    Ok(())
}
