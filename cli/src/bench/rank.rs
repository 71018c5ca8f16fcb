//! `recsys bench rank`: the reference DLRM (8 categorical features with
//! 32-d embeddings, 8 dense, bottom MLP [64, 32], top MLP [128, 64, 1]) —
//! scoring 200 candidates on one core, native next to ONNX Runtime; a
//! throughput table over batch sizes (and the GPU with CPU/GPU parity where
//! one is present); then RECOMMEND ... RANK through Redis next to the same
//! request without a model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Result};
use recsys::rank::dlrm::{self, DlrmShape};
use recsys::rank::schema::Batch;
use recsys::rank::{gpu, onnx, GpuMode, Kind, Model, ModelSpec, Role};
use recsys::rng::SplitMix;

use super::index::median;
use super::recommend::{explain_medians, load_shop, recommend_args, RecommendBench};
use super::redis::{interleaved, print_table, Case};
use crate::server::{find_onnxruntime, RedisServer};

#[derive(clap::Args, Debug, Clone)]
pub struct RankBench {
    /// Folder with dlrm_ranker.safetensors / .onnx (the reference model).
    #[arg(long, default_value = "tests/fixtures")]
    pub fixtures: PathBuf,
    /// Batch sizes of the throughput table.
    #[arg(long, value_delimiter = ',', default_value = "1,64,1024,131072")]
    pub batches: Vec<usize>,
    /// Timed calls of 200 candidates (per engine).
    #[arg(long, default_value_t = 3000)]
    pub calls: usize,
    /// Also measure RECOMMEND ... RANK through Redis.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub redis: bool,
    #[arg(long, default_value_t = 100_000)]
    pub items: usize,
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    #[arg(long, default_value_t = 30_000)]
    pub requests: usize,
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Where the DLRM runs: auto uses a GPU when CUDA is found.
    #[arg(long, default_value = "auto")]
    pub gpu: String,
}

/// The reference ranker's schema over the bench shop: 7 user dense features
/// and the retrieval score; 3 item and 5 user categorical features.
pub fn shop_schema() -> String {
    let mut t: Vec<String> = (0..7).map(|i| format!("DENSE user.d{i}")).collect();
    t.push("DENSE score".into());
    t.push("SPARSE item.genre 100 HASH".into());
    t.push("SPARSE item.stock 100 HASH".into());
    t.push("SPARSE item.sponsored 100".into());
    t.extend((0..5).map(|i| format!("SPARSE user.c{i} 100")));
    t.join(" ")
}

fn model(kind: Kind, bytes: Vec<u8>) -> Result<Model> {
    Model::build(
        ModelSpec {
            name: kind.name().to_lowercase(),
            kind,
            role: Role::Rank,
            schema: shop_schema().split_whitespace().map(String::from).collect(),
            bytes: bytes.into(),
        },
        64,
    )
    .map_err(|e| anyhow!(e))
}

fn random_batch(rows: usize, seed: u64) -> Batch {
    let mut rng = SplitMix::new(seed);
    Batch {
        rows,
        dense: (0..rows * 8).map(|_| rng.normal() as f32).collect(),
        sparse: (0..rows * 8).map(|_| rng.below(100) as i64).collect(),
        external: Vec::new(),
    }
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() * 99 / 100]
}

/// Microseconds per call of `f` on `batch`: median over calls, taking at
/// least ~0.3 s and 5 calls.
fn time_batch(m: &Model, batch: &Batch) -> Result<f64> {
    let f = |b: &Batch| m.score_batch(b);
    f(batch).map_err(|e| anyhow!(e))?; // warm up
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed().as_secs_f64() < 0.3 && times.len() < 20_000) {
        let t = Instant::now();
        f(batch).map_err(|e| anyhow!(e))?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(times))
}

/// This core's peak multiply-add rate in GFMA/s (median of 5 runs of 12
/// independent FMA chains on the widest vectors it has), and which vectors.
fn fma_peak() -> (f64, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        unsafe fn chains512(iters: usize) -> f32 {
            let mut acc = [_mm512_set1_ps(0.0); 12];
            let (a, b) = (_mm512_set1_ps(0.999), _mm512_set1_ps(0.001));
            for _ in 0..iters {
                for x in acc.iter_mut() {
                    *x = _mm512_fmadd_ps(*x, a, b);
                }
            }
            acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn chains256(iters: usize) -> f32 {
            let mut acc = [_mm256_set1_ps(0.0); 12];
            let (a, b) = (_mm256_set1_ps(0.999), _mm256_set1_ps(0.001));
            for _ in 0..iters {
                for x in acc.iter_mut() {
                    *x = _mm256_fmadd_ps(*x, a, b);
                }
            }
            let mut lanes = [0f32; 8];
            for x in acc {
                let mut l = [0f32; 8];
                _mm256_storeu_ps(l.as_mut_ptr(), x);
                lanes.iter_mut().zip(l).for_each(|(s, v)| *s += v);
            }
            lanes.iter().sum()
        }
        let iters = 2_000_000;
        let (run, width, name): (unsafe fn(usize) -> f32, usize, &str) =
            if std::is_x86_feature_detected!("avx512f") {
                (chains512, 16, "AVX-512")
            } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            {
                (chains256, 8, "AVX2")
            } else {
                return (f64::NAN, "no FMA");
            };
        let rates: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                // SAFETY: the features were detected above.
                std::hint::black_box(unsafe { run(iters) });
                (iters * 12 * width) as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        (median(rates), name)
    }
    #[cfg(not(target_arch = "x86_64"))]
    (f64::NAN, "not measured on this architecture")
}

pub fn run(b: &RankBench) -> Result<()> {
    let mode = match b.gpu.as_str() {
        "auto" => GpuMode::Auto,
        "on" => GpuMode::On,
        "off" => GpuMode::Off,
        other => return Err(anyhow!("--gpu must be auto, on or off, got {other}")),
    };
    // The CPU engines first: models built after gpu::init would land on it.
    // One ONNX session (one thread); the GPU column measures the GPU at
    // every batch size (the module sends small batches to the CPU).
    recsys::rank::configure(recsys::rank::Settings {
        sessions: 1,
        gpu_min_rows: 0,
        ..Default::default()
    });
    let read = |name: &str| {
        std::fs::read(b.fixtures.join(name))
            .map_err(|e| anyhow!("{}: {e}", b.fixtures.join(name).display()))
    };
    let native = model(Kind::Dlrm, read("dlrm_ranker.safetensors")?)?;
    let ort = match find_onnxruntime() {
        Some(lib) => {
            onnx::init(&lib).map_err(|e| anyhow!(e))?;
            Some(model(Kind::Onnx, read("dlrm_ranker.onnx")?)?)
        }
        None => {
            println!("(ONNX Runtime not found: run scripts/ort-venv.sh; ONNX columns skipped)");
            None
        }
    };
    let gpu_line = gpu::init(mode).map_err(|e| anyhow!(e))?;
    let on_gpu = gpu::device()
        .is_some()
        .then(|| model(Kind::Dlrm, read("dlrm_ranker.safetensors").unwrap()))
        .transpose()?;
    println!("# rank bench: reference DLRM (8 sparse x 32-d embeddings, 8 dense, bottom [64, 32], top [128, 64, 1]); one thread; {gpu_line}");
    println!(
        "devices: native = {}, ort = {}, gpu = {}",
        native.device(),
        ort.as_ref().map_or("-".into(), |m| m.device()),
        on_gpu.as_ref().map_or("-".into(), |m| m.device())
    );

    // 1. 200 candidates, one core: inference on a prepared batch.
    let batch = random_batch(200, 1);
    println!(
        "\n## Scoring 200 candidates (one call = one batched inference), {} calls each",
        b.calls
    );
    let multiply_adds = DlrmShape::reference(100).multiply_adds_per_row() * batch.rows;
    let peak = fma_peak();
    println!(
        "{multiply_adds} multiply-adds per call; this core's FMA peak, measured: {:.1} GFMA/s ({})",
        peak.0, peak.1
    );
    println!("| engine | median us | p99 us | of the FMA peak |");
    println!("|---|---:|---:|---:|");
    let native_name = format!("native DLRM (CPU, {})", dlrm::cpu_kernels());
    let mut engines: Vec<(&str, &Model)> = vec![(&native_name, &native)];
    if let Some(m) = &ort {
        engines.push(("ONNX Runtime 1.31 (CPU, 1 intra-op thread)", m));
    }
    if let Some(m) = &on_gpu {
        engines.push(("native DLRM on GPU (cudarc + cuBLAS)", m));
    }
    for (name, m) in &engines {
        m.score_batch(&batch).map_err(|e| anyhow!(e))?;
        let mut times = Vec::with_capacity(b.calls);
        for _ in 0..b.calls {
            let t = Instant::now();
            m.score_batch(&batch).map_err(|e| anyhow!(e))?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let med = median(times.clone());
        println!(
            "| {name} | {med:.1} | {:.1} | {:.0}% |",
            p99(times),
            100.0 * multiply_adds as f64 / (med * 1e3) / peak.0
        );
    }

    sequence_tower(b.calls, peak.0);

    // 2. Throughput over batch sizes.
    println!("\n## Throughput by batch size (median us per batch; rows/s)");
    let mut header = "| batch | native CPU us | native rows/s |".to_string();
    if ort.is_some() {
        header += " ort CPU us | ort rows/s |";
    }
    if on_gpu.is_some() {
        header += " GPU us | GPU rows/s | max abs diff CPU vs GPU |";
    }
    println!("{header}");
    println!("|{}", "---:|".repeat(header.matches('|').count() - 1));
    for &n in &b.batches {
        let batch = random_batch(n, n as u64);
        let mut row = format!("| {n} |");
        let us = time_batch(&native, &batch)?;
        row += &format!(" {us:.1} | {:.0} |", n as f64 / us * 1e6);
        if let Some(m) = &ort {
            let us = time_batch(m, &batch)?;
            row += &format!(" {us:.1} | {:.0} |", n as f64 / us * 1e6);
        }
        if let Some(m) = &on_gpu {
            let us = time_batch(m, &batch)?;
            let (cpu, gpu) = (
                native.score_batch(&batch).map_err(|e| anyhow!(e))?,
                m.score_batch(&batch).map_err(|e| anyhow!(e))?,
            );
            let diff = cpu
                .iter()
                .zip(&gpu)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            row += &format!(" {us:.1} | {:.0} | {diff:.2e} |", n as f64 / us * 1e6);
        }
        println!("{row}");
    }
    if b.redis {
        recommend_with_rank(b, &b.fixtures)?;
    }
    Ok(())
}

/// The sequence tower's forward (ROLE RECENT), as RECOMMEND runs it once
/// per request: 64-d items, hidden 64, feed-forward 128, over 20 recent
/// items (what `recsys train` reads) and 50 (the budget case).
fn sequence_tower(calls: usize, peak: f64) {
    use recsys::rank::sequence::{random_weights, SequenceTower};
    println!("\n## Sequence tower (SEQUENCE model, one user vector per request; 64-d items, hidden 64, feed-forward 128), {calls} calls each");
    println!("| recent items read | multiply-adds | median us | p99 us | of the FMA peak |");
    println!("|---:|---:|---:|---:|---:|");
    let items = recsys::synth::clustered(50, 64, 8, 0.3, 9);
    for n in [20, 50] {
        let weights = random_weights(64, 64, 128, n, 0.1, 5);
        let Ok(tower) = SequenceTower::from_safetensors(&weights, 64) else {
            println!("| {n} | (weights refused) | - | - | - |");
            continue;
        };
        let recent = || items.iter().take(n).map(Vec::as_slice);
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            std::hint::black_box(tower.query(recent()));
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let work = tower.multiply_adds(n);
        let med = median(times.clone());
        println!(
            "| {n} | {work} | {med:.1} | {:.1} | {:.0}% |",
            p99(times),
            100.0 * work as f64 / (med * 1e3) / peak
        );
    }
}

/// RECOMMEND K=10 CANDIDATES 200 with RANK (native, ONNX) and without.
fn recommend_with_rank(b: &RankBench, fixtures: &Path) -> Result<()> {
    let lib = find_onnxruntime().map(|p| p.display().to_string());
    // The same GPU mode as the in-process part: on a GPU machine the
    // module's DLRM runs there (batches of 200 >= GPU_MIN_ROWS).
    let mut args: Vec<&str> = vec!["GPU", b.gpu.as_str()];
    if let Some(l) = &lib {
        args.extend(["ORT_LIB", l.as_str()]);
    }
    let server = RedisServer::start(&args, &["--slowlog-log-slower-than", "-1"])?;
    let mut c = server.connection()?;
    let shop = RecommendBench::shop(b.items, b.users, b.clients, b.requests, b.repeats);
    load_shop(&mut c, &shop)?;
    // User features for the ranker.
    let mut rng = SplitMix::new(11);
    for chunk in (0..b.users).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for &u in chunk {
            let mut h = redis::cmd("HSET");
            h.arg(format!("user:{u:012}"));
            for i in 0..7 {
                h.arg(format!("d{i}")).arg(format!("{:.3}", rng.normal()));
            }
            for i in 0..5 {
                h.arg(format!("c{i}")).arg(rng.below(100));
            }
            p.add_command(h).ignore();
        }
        p.query::<()>(&mut c)?;
    }
    let mut models = vec![("native", "DLRM", "dlrm_ranker.safetensors")];
    if lib.is_some() {
        models.push(("onnx", "ONNX", "dlrm_ranker.onnx"));
    }
    for (name, kind, file) in &models {
        let mut set = redis::cmd("RECSYS.MODEL.SET");
        set.arg("bench")
            .arg(*name)
            .arg(*kind)
            .arg(std::fs::read(fixtures.join(file))?)
            .arg("SCHEMA")
            .arg(shop_schema());
        set.query::<()>(&mut c)?;
    }
    let base = recommend_args(b.users, &[]);
    println!(
        "\n## RECOMMEND through Redis: {} items x 64-d, {} users, K=10 CANDIDATES 200, {} clients, {} interleaved runs, module GPU {}",
        b.items, b.users, b.clients, b.repeats, b.gpu
    );
    let mut variants = vec![("no RANK (retrieval score)".to_string(), base.clone())];
    for (name, _, _) in &models {
        let mut with = base.clone();
        with.extend(["RANK".to_string(), name.to_string()]);
        variants.push((format!("RANK {name}"), with));
    }
    let cases: Vec<Case> = variants
        .iter()
        .map(|(label, args)| Case {
            name: label,
            clients: b.clients,
            args,
        })
        .collect();
    let runs = interleaved(server.port, b.repeats, b.requests, &cases, |_, _| Ok(()))?;
    print_table(&cases, &runs);
    for (name, _, _) in &models {
        let info: Vec<redis::Value> = redis::cmd("RECSYS.MODEL.INFO")
            .arg("bench")
            .arg(*name)
            .query(&mut c)?;
        let fields: Vec<String> = info
            .chunks(2)
            .filter_map(|p| {
                let k: String = redis::from_redis_value(&p[0]).ok()?;
                let v: String = redis::from_redis_value(&p[1]).ok()?;
                ["device", "calls", "rows", "errors", "avg_us"]
                    .contains(&k.as_str())
                    .then(|| format!("{k}={v}"))
            })
            .collect();
        println!("RECSYS.MODEL.INFO bench {name}: {}", fields.join(" "));
    }
    // The rank stage inside a request: the model's input assembled from the
    // user's hash and the items' attribute columns, then the model.
    println!("\nRank stage, median over 500 requests sent one at a time (EXPLAIN):");
    println!("| model | rank_us | rank_features_us | model part us | rank stage / model part | features / model part |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, _, _) in &models {
        let m = explain_medians(
            &mut c,
            500.min(b.users),
            &["rank_us", "rank_features_us"],
            |u| {
                let mut args = recommend_args(b.users, &["RANK", name])[2..].to_vec();
                args[2] = format!("user:{u:012}");
                args
            },
        )?;
        match (m[0], m[1]) {
            (Some(rank), Some(features)) if rank > features => {
                let model = (rank - features) as f64;
                println!(
                    "| {name} | {rank} | {features} | {model:.0} | {:.2} | {:.2} |",
                    rank as f64 / model,
                    features as f64 / model
                )
            }
            _ => println!("| {name} | - | - | - | - | - |"),
        }
    }
    Ok(())
}
