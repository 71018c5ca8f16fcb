//! `recsys bench redis`: RECSYS.SEARCH / RECSYS.SIMILAR throughput and latency
//! through a real redis-server, measured with redis-benchmark next to plain
//! GET in the same run (the ceiling of this machine for one round trip).

use std::ffi::OsStr;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use recsys::synth::clustered_lowrank;
use recsys::vector::to_fp32_blob;

use crate::server::RedisServer;

#[derive(clap::Args, Debug, Clone)]
pub struct RedisBench {
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Requests per redis-benchmark run.
    #[arg(long, default_value_t = 100_000)]
    pub requests: usize,
    /// Runs per command, interleaved (median, min and max are reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Module WORKERS argument (default: number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// EF for the searches (catalog EF_SEARCH).
    #[arg(long, default_value_t = 32)]
    pub ef: usize,
    /// Skip redis-benchmark; only load, save and time a restart from RDB.
    #[arg(long)]
    pub restart_only: bool,
}

/// One redis-benchmark result line.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs redis-benchmark once with `args` (a command or `-t get`) and parses --csv.
pub fn redis_benchmark<A: AsRef<OsStr>>(
    port: u16,
    clients: usize,
    requests: usize,
    args: &[A],
) -> Result<Rate> {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-c",
            &clients.to_string(),
            "-n",
            &requests.to_string(),
            "--csv",
        ])
        .args(args)
        .output()
        .context("running redis-benchmark (apt-get install redis-tools)")?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rfind(|l| !l.starts_with("\"test\""))
        .context("no result from redis-benchmark")?;
    // The test name (first column) is the command itself, which may hold
    // commas and quotes: read the figures from the end of the line.
    let mut cols: Vec<f64> = line
        .rsplitn(8, ',')
        .take(7)
        .map(|c| c.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    cols.reverse();
    // rps, avg, min, p50, p95, p99, max
    if cols.len() < 6 {
        bail!("unexpected redis-benchmark output: {line}");
    }
    Ok(Rate {
        rps: cols[0],
        p50_ms: cols[3],
        p99_ms: cols[5],
    })
}

/// Several redis-benchmark runs of one command.
#[derive(Debug, Clone, Default)]
pub struct Runs(pub Vec<Rate>);

impl Runs {
    /// The run with the median req/s (its latencies come with it).
    pub fn median(&self) -> Rate {
        let mut runs = self.0.clone();
        runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        runs.get(runs.len() / 2).copied().unwrap_or(Rate {
            rps: f64::NAN,
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
        })
    }

    /// "median (min-max)" req/s.
    pub fn spread(&self) -> String {
        let rps = self.0.iter().map(|r| r.rps);
        let (min, max) = rps.fold((f64::INFINITY, 0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
        format!("{:.0} ({min:.0}-{max:.0})", self.median().rps)
    }
}

/// One redis-benchmark case: clients and arguments.
pub struct Case<'a> {
    pub name: &'a str,
    pub clients: usize,
    pub args: &'a [String],
}

/// Prints the cases as a table: req/s median (min-max), the median run's
/// latencies, and each median relative to the first case's.
pub fn print_table(cases: &[Case], runs: &[Runs]) {
    let base = runs.first().map_or(f64::NAN, |r| r.median().rps);
    let base_name = cases.first().map_or("", |c| c.name);
    println!("\n| command | clients | req/s median (min-max) | p50 ms | p99 ms | vs {base_name} |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (case, r) in cases.iter().zip(runs) {
        let m = r.median();
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.2} |",
            case.name,
            case.clients,
            r.spread(),
            m.p50_ms,
            m.p99_ms,
            m.rps / base
        );
    }
}

/// Runs every case once per round for `rounds` rounds (case 1, case 2, ...,
/// case 1, ...), so machine noise falls on all cases alike. `around` is
/// called before (`false`) and after (`true`) each run with the case's index.
pub fn interleaved(
    port: u16,
    rounds: usize,
    requests: usize,
    cases: &[Case],
    mut around: impl FnMut(usize, bool) -> Result<()>,
) -> Result<Vec<Runs>> {
    let mut runs = vec![Runs::default(); cases.len()];
    for _ in 0..rounds.max(1) {
        for (i, case) in cases.iter().enumerate() {
            around(i, false)?;
            runs[i]
                .0
                .push(redis_benchmark(port, case.clients, requests, case.args)?);
            around(i, true)?;
        }
    }
    Ok(runs)
}

/// (main thread CPU seconds, whole process CPU seconds) from INFO cpu.
pub(crate) fn cpu(c: &mut redis::Connection) -> Result<(f64, f64)> {
    let info: String = redis::cmd("INFO").arg("cpu").query(c)?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let main = field("used_cpu_user_main_thread:") + field("used_cpu_sys_main_thread:");
    let all = field("used_cpu_user:") + field("used_cpu_sys:");
    Ok((main, all))
}

/// CPU seconds redis-server spent: (main thread, all threads).
pub type CpuSeconds = (f64, f64);

/// [`interleaved`], also returning the CPU seconds (main thread, all
/// threads) redis-server spent during each case's runs (INFO cpu deltas).
pub fn interleaved_with_cpu(
    port: u16,
    c: &mut redis::Connection,
    rounds: usize,
    requests: usize,
    cases: &[Case],
) -> Result<(Vec<Runs>, Vec<CpuSeconds>)> {
    let mut spent = vec![(0.0, 0.0); cases.len()];
    let mut start = (0.0, 0.0);
    let runs = interleaved(port, rounds, requests, cases, |i, after| {
        let now = cpu(c)?;
        if after {
            spent[i].0 += now.0 - start.0;
            spent[i].1 += now.1 - start.1;
        } else {
            start = now;
        }
        Ok(())
    })?;
    Ok((runs, spent))
}

/// Prints CPU µs per request inside redis-server, main thread and the
/// rest (workers, module threads), from [`interleaved_with_cpu`]'s sums
/// over `requests` requests per case.
pub fn print_cpu_table(cases: &[Case], spent: &[CpuSeconds], requests: usize) {
    println!("\nCPU per request inside redis-server (INFO cpu deltas over the runs above; redis-benchmark shares the same cores):");
    println!("| command | main thread us/request | other threads (workers) us/request |");
    println!("|---|---:|---:|");
    let n = requests.max(1) as f64;
    for (case, (main, all)) in cases.iter().zip(spent) {
        println!(
            "| {} | {:.1} | {:.1} |",
            case.name,
            main * 1e6 / n,
            (all - main) * 1e6 / n
        );
    }
}

pub fn run(b: &RedisBench) -> Result<()> {
    let workers = b.workers.map(|w| w.to_string());
    let module_args: Vec<&str> = match &workers {
        Some(w) => vec!["WORKERS", w.as_str()],
        None => vec![],
    };
    let extra = ["--slowlog-log-slower-than", "-1"];
    let server = RedisServer::start(&module_args, &extra)?;
    let mut c = server.connection()?;
    println!(
        "# redis bench: {} items x {}-d (clustered, latent 8), K=10, EF {}, {} clients, {} requests x {} runs, module args {:?}",
        b.n, b.dim, b.ef, b.clients, b.requests, b.repeats, module_args
    );
    redis::cmd("RECSYS.CREATE")
        .arg("bench")
        .arg("DIM")
        .arg(b.dim)
        .arg("EF_SEARCH")
        .arg(b.ef)
        .query::<()>(&mut c)?;
    let data = clustered_lowrank(b.n, b.dim, 100, 8, 42);
    let t = Instant::now();
    for (chunk_no, chunk) in data.chunks(1000).enumerate() {
        let mut cmd = redis::cmd("RECSYS.ITEM.MSET");
        cmd.arg("bench");
        for (i, v) in chunk.iter().enumerate() {
            // 12-digit ids match redis-benchmark's __rand_int__ placeholder.
            cmd.arg(format!("{:012}", chunk_no * 1000 + i))
                .arg(to_fp32_blob(v));
        }
        cmd.query::<i64>(&mut c)?;
    }
    let load = t.elapsed().as_secs_f64();
    println!(
        "load: {} items in {load:.1} s = {:.0} items/s (RECSYS.ITEM.MSET, 1000 per call)",
        b.n,
        b.n as f64 / load
    );
    if !b.restart_only {
        memory(b, &mut c, &data)?;
    }
    if !b.restart_only {
        throughput(b, &server, &mut c)?;
    }
    restart(b, server, &module_args, &extra)
}

/// SAVE, stop, start again on the same files: time until the server answers.
fn restart(
    b: &RedisBench,
    server: RedisServer,
    module_args: &[&str],
    extra: &[&str],
) -> Result<()> {
    let mut c = server.connection()?;
    let q = clustered_lowrank(1, b.dim, 100, 8, 9)[0].clone();
    let search = |c: &mut redis::Connection| -> Result<Vec<String>> {
        Ok(redis::cmd("RECSYS.SEARCH")
            .arg("bench")
            .arg(10)
            .arg("FP32")
            .arg(to_fp32_blob(&q))
            .query(c)?)
    };
    let before = search(&mut c)?;
    let t = Instant::now();
    redis::cmd("SAVE").query::<()>(&mut c)?;
    let save = t.elapsed().as_secs_f64();
    let module = server.module.clone();
    let dir = server.stop(false);
    let size = std::fs::metadata(dir.path().join("dump.rdb"))?.len();
    let t = Instant::now();
    let server = RedisServer::start_in(dir, &module, module_args, extra)?;
    let load = t.elapsed().as_secs_f64();
    let mut c = server.connection()?;
    let after = search(&mut c)?;
    println!(
        "\nRDB: SAVE {save:.2} s, file {:.1} MB; restart until PING answers {load:.2} s for {} items; same answers after restart: {}",
        size as f64 / 1e6,
        b.n,
        before == after
    );
    Ok(())
}

fn throughput(b: &RedisBench, server: &RedisServer, c: &mut redis::Connection) -> Result<()> {
    redis::cmd("SET")
        .arg("key:__rand_int__")
        .arg("x")
        .query::<()>(c)?;

    let query = clustered_lowrank(1, b.dim, 100, 8, 7)[0]
        .iter()
        .map(|x| format!("{x:.6}"))
        .collect::<Vec<_>>();
    let mut search = vec![
        "RECSYS.SEARCH".to_string(),
        "bench".into(),
        "10".into(),
        "VALUES".into(),
    ];
    search.extend(query);
    let similar: Vec<String> = ["RECSYS.SIMILAR", "bench", "__rand_int__", "10"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut similar_args = vec!["-r".to_string(), b.n.to_string()];
    similar_args.extend(similar);
    let get = vec!["-t".to_string(), "get".to_string()];

    let cases = [
        Case {
            name: "GET",
            clients: b.clients,
            args: &get,
        },
        Case {
            name: "RECSYS.SEARCH K=10",
            clients: b.clients,
            args: &search,
        },
        Case {
            name: "RECSYS.SIMILAR K=10 (random item)",
            clients: b.clients,
            args: &similar_args,
        },
    ];
    let (runs, spent) = interleaved_with_cpu(server.port, c, b.repeats, b.requests, &cases)?;
    print_table(&cases, &runs);
    print_cpu_table(&cases, &spent, b.requests * b.repeats.max(1));
    Ok(())
}

/// MEMORY USAGE per item of the F32 catalog just loaded, and of the same
/// items in a Q8 catalog (loaded, measured, deleted).
fn memory(b: &RedisBench, c: &mut redis::Connection, data: &[Vec<f32>]) -> Result<()> {
    let per_item = |c: &mut redis::Connection, key: &str| -> Result<f64> {
        let bytes: i64 = redis::cmd("MEMORY").arg("USAGE").arg(key).query(c)?;
        Ok(bytes as f64 / b.n as f64)
    };
    let f32_bytes = per_item(c, "bench")?;
    redis::cmd("RECSYS.CREATE")
        .arg("bench_q8")
        .arg("DIM")
        .arg(b.dim)
        .arg("QUANT")
        .arg("Q8")
        .query::<()>(c)?;
    for (chunk_no, chunk) in data.chunks(1000).enumerate() {
        let mut cmd = redis::cmd("RECSYS.ITEM.MSET");
        cmd.arg("bench_q8");
        for (i, v) in chunk.iter().enumerate() {
            cmd.arg(format!("{:012}", chunk_no * 1000 + i))
                .arg(to_fp32_blob(v));
        }
        cmd.query::<i64>(c)?;
    }
    let q8_bytes = per_item(c, "bench_q8")?;
    let queries = clustered_lowrank(200, b.dim, 100, 8, 11);
    let (f32_recall, q8_recall) = (
        search_recall(c, "bench", b.ef, data, &queries)?,
        search_recall(c, "bench_q8", b.ef, data, &queries)?,
    );
    redis::cmd("DEL").arg("bench_q8").query::<()>(c)?;
    println!(
        "memory (MEMORY USAGE / items, 12-byte ids, no attributes): F32 {f32_bytes:.0} B per item, Q8 {q8_bytes:.0} B per item (the vector alone: {} B in F32, {} B in Q8: codes and a scale)",
        b.dim * 4,
        b.dim + 4
    );
    println!(
        "recall@10 of RECSYS.SEARCH ... EF {} against exact search ({} queries): F32 {f32_recall:.3}, Q8 {q8_recall:.3}",
        b.ef,
        queries.len()
    );
    Ok(())
}

/// recall@10 of `RECSYS.SEARCH key 10 FP32 q EF ef` against exact search
/// over `data` (unit vectors, ids `{:012}` by position).
fn search_recall(
    c: &mut redis::Connection,
    key: &str,
    ef: usize,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
) -> Result<f64> {
    use rayon::prelude::*;
    let mut hits = 0usize;
    for q in queries {
        let mut scored: Vec<(f32, usize)> = data
            .par_iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), i))
            .collect();
        scored.select_nth_unstable_by(9, |a, b| b.0.total_cmp(&a.0));
        let exact: Vec<String> = scored[..10]
            .iter()
            .map(|(_, i)| format!("{i:012}"))
            .collect();
        let got: Vec<String> = redis::cmd("RECSYS.SEARCH")
            .arg(key)
            .arg(10)
            .arg("FP32")
            .arg(to_fp32_blob(q))
            .arg("EF")
            .arg(ef)
            .query(c)?;
        hits += got.iter().filter(|id| exact.contains(id)).count();
    }
    Ok(hits as f64 / (10 * queries.len()) as f64)
}
