//! `recsys bench index`: our HNSW against hnswlib (PyPI) on the same clustered
//! vectors, same M / efConstruction, one thread, recall measured against brute
//! force, on low-rank and isotropic data. Timed passes of both sides
//! alternate, so machine noise hits both alike; min / median / max of the
//! passes are reported. hnswlib is installed into a private virtualenv the
//! first time.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use recsys::index::{Hnsw, IndexParams, Metric, Quant};
use recsys::synth::{clustered, clustered_lowrank};

#[derive(clap::Args, Debug, Clone)]
pub struct IndexBench {
    /// Items in the catalog.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Queries per timed pass (10,000 resolves a 5% difference on this
    /// machine's noise; fewer makes passes of a few milliseconds).
    #[arg(long, default_value_t = 10_000)]
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
    /// Timed passes per ef and side, interleaved (recsys, hnswlib, recsys, ...);
    /// min / median / max are reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Number of clusters in the synthetic data.
    #[arg(long, default_value_t = 100)]
    pub clusters: usize,
    /// Data sets: `lowrank` (clusters spread in a `--latent`-dimensional
    /// subspace, like real embeddings) and/or `isotropic` (hard).
    #[arg(long, value_delimiter = ',', default_value = "lowrank,isotropic")]
    pub datasets: Vec<String>,
    /// Intrinsic dimension of the low-rank data set.
    #[arg(long, default_value_t = 8)]
    pub latent: usize,
    /// Vector storage of the recsys side: `f32` or `q8` (recall is always
    /// against exact search on the original vectors).
    #[arg(long, default_value = "f32", value_parser = ["f32", "q8"])]
    pub quant: String,
    /// Skip the hnswlib side.
    #[arg(long)]
    pub no_baseline: bool,
    /// Python virtualenv for hnswlib (created when missing).
    #[arg(long, default_value = "target/bench-venv")]
    pub venv: PathBuf,
}

const K: usize = 10;

/// One ef value's timed passes of one side.
struct Point {
    ef: usize,
    /// q/s of each pass.
    rates: Vec<f64>,
    recall: f64,
}

impl Point {
    fn median(&self) -> f64 {
        median(self.rates.clone())
    }
    fn min(&self) -> f64 {
        self.rates.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }
    /// "median (min-max)".
    fn spread(&self) -> String {
        format!("{:.0} ({:.0}-{:.0})", self.median(), self.min(), self.max())
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
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
    for dataset in &b.datasets {
        run_dataset(b, dataset)?;
    }
    Ok(())
}

fn run_dataset(b: &IndexBench, dataset: &str) -> Result<()> {
    let (data, queries) = match dataset {
        "lowrank" => (
            clustered_lowrank(b.n, b.dim, b.clusters, b.latent, 42),
            clustered_lowrank(b.queries, b.dim, b.clusters, b.latent, 4242),
        ),
        "isotropic" => (
            clustered(b.n, b.dim, b.clusters, 0.5, 42),
            clustered(b.queries, b.dim, b.clusters, 0.5, 4242),
        ),
        other => bail!("unknown data set '{other}', expected lowrank or isotropic"),
    };
    let shape = match dataset {
        "lowrank" => format!("latent dim {}", b.latent),
        _ => "isotropic spread 0.5".into(),
    };
    println!(
        "\n### {dataset}: {} clustered unit vectors x {}-d ({} clusters, {shape}), {} queries per pass, {} interleaved passes per ef and side, M={}, efConstruction={}, k={K}, one thread\n",
        b.n, b.dim, b.clusters, b.queries, b.repeats, b.m, b.ef_construction
    );
    let params = IndexParams {
        metric: Metric::Cosine,
        m: b.m,
        ef_construction: b.ef_construction,
        quant: if b.quant == "q8" {
            Quant::Q8
        } else {
            Quant::F32
        },
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

    let prepared: Vec<Vec<f32>> = queries.iter().map(|q| index.prepare(q)).collect();
    let truth: Vec<Vec<u32>> = if params.quant == Quant::F32 {
        prepared
            .iter()
            .map(|q| index.brute_force(q, K).iter().map(|h| h.slot).collect())
            .collect()
    } else {
        exact_top(
            &data.iter().map(|v| index.prepare(v)).collect::<Vec<_>>(),
            &prepared,
        )
    };
    let mut baseline = if b.no_baseline {
        None
    } else {
        Some(Hnswlib::start(b, &data, &queries, &truth)?)
    };

    let curve = || -> Vec<Point> {
        b.efs
            .iter()
            .map(|&ef| Point {
                ef,
                rates: Vec::new(),
                recall: 0.0,
            })
            .collect()
    };
    let (mut ours, mut theirs) = (curve(), curve());
    for _ in 0..b.repeats.max(1) {
        for (p, h) in ours.iter_mut().zip(theirs.iter_mut()) {
            let mut found = 0;
            let t = Instant::now();
            for (q, tr) in prepared.iter().zip(&truth) {
                let hits = index.search(q, K, p.ef, |_| true);
                found += hits.iter().filter(|h| tr.contains(&h.slot)).count();
            }
            p.rates
                .push(prepared.len() as f64 / t.elapsed().as_secs_f64());
            p.recall = found as f64 / (K * prepared.len()) as f64;
            if let Some(base) = baseline.as_mut() {
                let (qps, recall) = base.pass(h.ef)?;
                h.rates.push(qps);
                h.recall = recall;
            }
        }
    }

    match &baseline {
        Some(base) => println!(
            "build (one each): recsys {build_per_s:.0} inserts/s, hnswlib {:.0} inserts/s, ratio {:.2}x\n",
            base.build_per_s,
            build_per_s / base.build_per_s
        ),
        None => println!("build: recsys {build_per_s:.0} inserts/s\n"),
    }
    println!("q/s as median (min-max) of the passes; ratio of medians\n");
    println!(
        "| ef | recsys q/s | recsys recall@10 | hnswlib q/s | hnswlib recall@10 | q/s ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (p, h) in ours.iter().zip(&theirs) {
        if baseline.is_some() {
            println!(
                "| {} | {} | {:.4} | {} | {:.4} | {:.2}x |",
                p.ef,
                p.spread(),
                p.recall,
                h.spread(),
                h.recall,
                p.median() / h.median()
            );
        } else {
            println!(
                "| {} | {} | {:.4} | - | - | - |",
                p.ef,
                p.spread(),
                p.recall
            );
        }
    }
    if baseline.is_some() {
        println!(
            "\nat equal recall: recsys q/s (median) at each hnswlib point's recall, interpolated"
        );
        println!("linearly between the two recsys ef values around it (recall rises with ef):\n");
        println!("| hnswlib ef | recall@10 | hnswlib q/s | recsys q/s at that recall | ratio |");
        println!("|---:|---:|---:|---:|---:|");
        let mut ratios = Vec::new();
        for h in &theirs {
            if let Some(q) = qps_at_recall(&ours, h.recall) {
                ratios.push(q / h.median());
                println!(
                    "| {} | {:.4} | {:.0} | {:.0} | {:.2}x |",
                    h.ef,
                    h.recall,
                    h.median(),
                    q,
                    q / h.median()
                );
            }
        }
        if !ratios.is_empty() {
            println!(
                "\nmedian q/s ratio at equal recall ({dataset}): {:.2}x",
                median(ratios)
            );
        }
    }
    Ok(())
}

/// Our median q/s at `recall`, interpolated on the (recall, q/s) curve;
/// `None` when no ef reaches that recall.
fn qps_at_recall(curve: &[Point], recall: f64) -> Option<f64> {
    let hi = curve.iter().position(|p| p.recall >= recall)?;
    if hi == 0 {
        return Some(curve[0].median());
    }
    let (a, b) = (&curve[hi - 1], &curve[hi]);
    if b.recall <= a.recall {
        return Some(b.median());
    }
    let t = (recall - a.recall) / (b.recall - a.recall);
    Some(a.median() + t * (b.median() - a.median()))
}

/// hnswlib in a Python process that keeps its index and runs one timed
/// pass per request, so passes interleave with ours.
struct Hnswlib {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    build_per_s: f64,
    /// Holds the vector files until the process is done.
    _dir: tempfile::TempDir,
}

impl Hnswlib {
    fn start(
        b: &IndexBench,
        data: &[Vec<f32>],
        queries: &[Vec<f32>],
        truth: &[Vec<u32>],
    ) -> Result<Hnswlib> {
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
            "data": dir.path().join("data.f32"), "queries": dir.path().join("queries.f32"),
            "truth": dir.path().join("truth.u32"),
        });
        std::fs::write(dir.path().join("spec.json"), spec.to_string())?;
        let script = dir.path().join("baseline.py");
        std::fs::write(&script, include_str!("hnswlib_baseline.py"))?;
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(dir.path().join("spec.json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the hnswlib baseline")?;
        let input = child.stdin.take().context("baseline stdin")?;
        let output = BufReader::new(child.stdout.take().context("baseline stdout")?);
        let mut base = Hnswlib {
            child,
            input,
            output,
            build_per_s: 0.0,
            _dir: dir,
        };
        base.build_per_s = base.read()?["build_per_s"].as_f64().unwrap_or(0.0);
        Ok(base)
    }

    fn read(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.output.read_line(&mut line)? == 0 {
            bail!("the hnswlib baseline exited (see its error above)");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// One timed pass at `ef`: (q/s, recall@10).
    fn pass(&mut self, ef: usize) -> Result<(f64, f64)> {
        writeln!(self.input, "{ef}")?;
        self.input.flush()?;
        let v = self.read()?;
        Ok((
            v["qps"].as_f64().unwrap_or(0.0),
            v["recall"].as_f64().unwrap_or(0.0),
        ))
    }
}

impl Drop for Hnswlib {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exact top-K slots of each query by dot product over `rows` (unit
/// vectors: the cosine order), for an index whose own scan is not exact.
fn exact_top(rows: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<u32>> {
    let dot = recsys::index::distance::kernels().dot;
    queries
        .iter()
        .map(|q| {
            let mut scored: Vec<(f32, u32)> = rows
                .iter()
                .zip(0u32..)
                .map(|(r, s)| (dot(q, r), s))
                .collect();
            let k = K.min(scored.len());
            if k > 0 {
                scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            }
            scored.truncate(k);
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored.into_iter().map(|(_, s)| s).collect()
        })
        .collect()
}
