//! `recsys bench hps`: a DLRM whose embedding tables are Redis keys spread
//! over a cluster (SCHEMA ... ROWS, docs/ranking.md), the way HugeCTR's
//! parameter server serves tables larger than a node:
//!
//! - the tables are written as row keys over every master, the model file
//!   holds only the MLPs;
//! - users carry Zipf-distributed ids (real id streams are skewed), one
//!   per table, so each RECOMMEND ... RANK needs one row per table,
//!   from the hot-row cache or fetched from the row's master;
//! - for each cache size (`recsys.row-cache-mb`, set on every master), a
//!   warm-up, then timed requests: hit rate, rows and bytes fetched over
//!   the bus per request, unanswered rows, latency p50 / p99;
//! - the baseline: the same model with its tables inside the file, on one
//!   plain node, the same requests.
//!
//! One client sends one request at a time to the master of its user's slot.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use recsys::rank::dlrm::{Dlrm, DlrmShape};
use recsys::rank::rows::export::export_tables;
use recsys::rng::SplitMix;
use recsys::synth::clustered;
use recsys::vector::to_fp32_blob;

use crate::cluster::Cluster;
use crate::loader::send_row_sets;
use crate::server::RedisServer;

#[derive(clap::Args, Debug, Clone)]
pub struct HpsBench {
    /// Rows of each embedding table.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Embedding tables (one user feature each).
    #[arg(long, default_value_t = 2)]
    pub tables: usize,
    /// Embedding width.
    #[arg(long, default_value_t = 32)]
    pub dim: usize,
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Hot-row cache sizes measured, MB per node.
    #[arg(long, value_delimiter = ',', default_value = "1,2,8,32")]
    pub cache_mb: Vec<usize>,
    /// Users; each request picks one by a Zipf law (returning users).
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    /// Zipf exponent of the users' ids and of the users requests come from.
    #[arg(long, default_value_t = 1.05)]
    pub zipf: f64,
    #[arg(long, default_value_t = 5_000)]
    pub items: usize,
    /// Requests before timing, per cache size.
    #[arg(long, default_value_t = 20_000)]
    pub warmup: usize,
    /// Timed requests per cache size.
    #[arg(long, default_value_t = 5_000)]
    pub requests: usize,
    /// recsys.row-fetch-timeout-ms on every master.
    #[arg(long, default_value_t = 20)]
    pub fetch_timeout_ms: u64,
}

const ITEM_DIM: usize = 16;
const REQUEST: [&str; 6] = ["K", "10", "CANDIDATES", "200", "RANK", "ctr"];

/// Draws from Zipf(`n`, `s`) over ranks 0..n, then scatters the ranks over
/// the ids (hot ids are not the small ones, so not one slot's).
struct Zipf {
    cdf: Vec<f64>,
    n: usize,
    /// Coprime to `n`: rank r is id `(r * scatter + 12345) % n`.
    scatter: usize,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(n);
        for r in 1..=n {
            acc += (r as f64).powf(-s);
            cdf.push(acc);
        }
        cdf.iter_mut().for_each(|c| *c /= acc);
        let mut scatter = 2_654_435_761usize % n.max(1);
        while gcd(scatter, n) != 1 {
            scatter += 1;
        }
        Zipf { cdf, n, scatter }
    }

    fn draw(&self, rng: &mut SplitMix) -> usize {
        let u = rng.uniform();
        let rank = self.cdf.partition_point(|&c| c < u).min(self.n - 1);
        (rank * self.scatter + 12_345) % self.n
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The model's schema with its tables in the file (`export_tables` adds
/// the ROWS prefixes).
fn schema(b: &HpsBench) -> Vec<String> {
    let mut s = vec!["DENSE".to_string(), "score".to_string()];
    for t in 0..b.tables {
        s.extend([
            "SPARSE".to_string(),
            format!("user.f{t}"),
            b.rows.to_string(),
        ]);
    }
    s
}

fn model_set(file: &[u8], schema: &[String]) -> redis::Cmd {
    let mut c = redis::cmd("RECSYS.MODEL.SET");
    c.arg("cat")
        .arg("ctr")
        .arg("DLRM")
        .arg(file)
        .arg("ROLE")
        .arg("RANK")
        .arg("SCHEMA")
        .arg(schema);
    c
}

/// Catalog, users and the model on a node or cluster, through `pipe`s made
/// by `new_pipe` and sent by `send`.
fn load(
    b: &HpsBench,
    users: &[Vec<usize>],
    file: &[u8],
    schema: &[String],
    mut send: impl FnMut(&[redis::Cmd]) -> Result<()>,
) -> Result<()> {
    let vs = clustered(b.items, ITEM_DIM, 20, 0.3, 5);
    let mut cmds = vec![redis::cmd("RECSYS.CREATE")];
    cmds[0].arg("cat").arg("DIM").arg(ITEM_DIM);
    send(&cmds)?;
    for chunk in vs.chunks(1000).enumerate() {
        let cmds: Vec<redis::Cmd> = chunk
            .1
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let mut c = redis::cmd("RECSYS.ITEM.SET");
                c.arg("cat")
                    .arg(format!("i{}", chunk.0 * 1000 + j))
                    .arg("FP32")
                    .arg(to_fp32_blob(v));
                c
            })
            .collect();
        send(&cmds)?;
    }
    let emb = clustered(b.users.min(1000), ITEM_DIM, 20, 0.3, 9);
    for (start, chunk) in users.chunks(2000).enumerate() {
        let cmds: Vec<redis::Cmd> = chunk
            .iter()
            .enumerate()
            .map(|(j, ids)| {
                let u = start * 2000 + j;
                let mut c = redis::cmd("HSET");
                c.arg(format!("u:{u}"))
                    .arg("emb")
                    .arg(to_fp32_blob(&emb[u % emb.len()]));
                for (t, id) in ids.iter().enumerate() {
                    c.arg(format!("f{t}")).arg(id);
                }
                c
            })
            .collect();
        send(&cmds)?;
    }
    send(&[model_set(file, schema)])
}

/// Client-side latencies (µs) of `n` requests for users drawn from `users`
/// by `rng`.
fn requests(
    n: usize,
    users: &Zipf,
    rng: &mut SplitMix,
    mut one: impl FnMut(&str) -> Result<()>,
) -> Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let user = format!("u:{}", users.draw(rng));
        let t = Instant::now();
        one(&user)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

fn pct(v: &[f64], p: usize) -> f64 {
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// `INFO recsys` row counters summed over `ports`.
fn row_counters(ports: &[u16]) -> Result<BTreeMap<String, i64>> {
    let mut sum = BTreeMap::new();
    for &port in ports {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()?;
        let text: String = redis::cmd("INFO").arg("recsys").query(&mut c)?;
        for (k, v) in text.lines().filter_map(|l| l.split_once(':')) {
            if let (Some(k), Ok(v)) = (k.strip_prefix("recsys_row_"), v.trim().parse::<i64>()) {
                *sum.entry(k.to_string()).or_insert(0) += v;
            }
        }
    }
    Ok(sum)
}

pub fn run(b: &HpsBench) -> Result<()> {
    anyhow::ensure!(b.rows >= 2 && b.tables >= 1 && b.users >= 1 && b.requests >= 1);
    let started = Instant::now();
    let shape = DlrmShape {
        dense: 1,
        cardinalities: vec![b.rows; b.tables],
        dim: b.dim,
        bottom: vec![64, b.dim],
        top: vec![64, 1],
    };
    let full = Dlrm::generate(&shape, 7);
    let outside = export_tables(&full, &schema(b), "hps").map_err(anyhow::Error::msg)?;
    let zipf = Zipf::new(b.rows, b.zipf);
    let who = Zipf::new(b.users, b.zipf);
    let mut rng = SplitMix::new(11);
    let users: Vec<Vec<usize>> = (0..b.users)
        .map(|_| (0..b.tables).map(|_| zipf.draw(&mut rng)).collect())
        .collect();
    let table_mb = (b.rows * b.tables * b.dim * 4) as f64 / (1 << 20) as f64;
    println!(
        "# hps bench: {} tables x {} rows x {}-d ({table_mb:.0} MB of floats) as row keys on {} masters; {} users with Zipf({}) ids, one per table, requests from users drawn by the same law; {} items; RECOMMEND K 10 CANDIDATES 200 RANK (DENSE score + {} SPARSE user features); one client, one request at a time; {} warm-up + {} timed requests per cache size",
        b.tables, b.rows, b.dim, b.masters, b.users, b.zipf, b.items, b.tables, b.warmup, b.requests
    );

    // The cluster, with the rows spread over its masters.
    let t = Instant::now();
    let cl = Cluster::start(b.masters, 0, &[])?;
    let mut con = cl.client()?.get_connection()?;
    let mut send = |cmds: &[redis::Cmd]| -> Result<()> {
        let mut p = redis::cluster::cluster_pipe();
        for c in cmds {
            p.add_command(c.clone()).ignore();
        }
        p.query::<()>(&mut con).context("cluster pipeline")
    };
    send_row_sets(&outside.tables, &mut send)?;
    let rows_s = t.elapsed().as_secs_f64();
    load(b, &users, &outside.weights, &outside.schema, &mut send)?;
    let masters = cl.masters();
    let mut per_master = Vec::new();
    for &port in &masters {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()?;
        let keys: i64 = redis::cmd("DBSIZE").query(&mut c)?;
        let used: String = redis::cmd("INFO").arg("memory").query(&mut c)?;
        let used = used
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        per_master.push(format!("{keys} keys, {:.0} MB", used / (1 << 20) as f64));
    }
    println!(
        "cluster of {} masters loaded in {:.1} s (rows written in {rows_s:.1} s); per master: {}; model file {:.2} MB (the same model with its tables inside: {:.0} MB)",
        b.masters,
        t.elapsed().as_secs_f64(),
        per_master.join("; "),
        outside.weights.len() as f64 / (1 << 20) as f64,
        full.len() as f64 / (1 << 20) as f64
    );
    // Every master's copy serves the model before timing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let route = |user: &str, con: &mut redis::cluster::ClusterConnection| -> Result<()> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let mut cmd = redis::cmd("RECSYS.RECOMMEND");
        cmd.arg("cat").arg(user).arg(&REQUEST[..]);
        let r = Route::new(Cluster::slot(user.as_bytes()), SlotAddr::Master);
        con.route_command(
            &cmd,
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(r)),
        )?;
        Ok(())
    };
    let mut con = cl.client()?.get_connection()?;
    for u in 0..b.users.min(200) {
        loop {
            match route(&format!("u:{u}"), &mut con) {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => return Err(e.context("copies never served")),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    println!();
    println!("RECOMMEND ... RANK with the tables as row keys, by hot-row cache size (per node); counters summed over the masters, over the timed requests:");
    println!("| cache MB per node | of the table | hit rate | rows fetched over the bus per request | row bytes over the bus per request | rows unanswered | µs per fetch | p50 µs | p99 µs |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rng = SplitMix::new(21);
    let table_bytes = b.rows * b.tables * (b.dim * 4 + 64 + 12);
    let mut cluster_p50 = Vec::new();
    for &mb in &b.cache_mb {
        for &port in &masters {
            let mut c =
                redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()?;
            // Empty the cache, then give it its size.
            redis::cmd("CONFIG")
                .arg(&["SET", "recsys.row-cache-mb", "0"])
                .query::<()>(&mut c)?;
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("recsys.row-cache-mb")
                .arg(mb)
                .query::<()>(&mut c)?;
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("recsys.row-fetch-timeout-ms")
                .arg(b.fetch_timeout_ms)
                .query::<()>(&mut c)?;
        }
        requests(b.warmup, &who, &mut rng, |u| route(u, &mut con))?;
        let before = row_counters(&masters)?;
        let lat = requests(b.requests, &who, &mut rng, |u| route(u, &mut con))?;
        let after = row_counters(&masters)?;
        let d = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        let n = b.requests as f64;
        cluster_p50.push((mb, pct(&lat, 50), pct(&lat, 99)));
        println!(
            "| {mb} | {:.1}% | {:.1}% | {:.2} | {:.0} | {} | {:.0} | {:.0} | {:.0} |",
            100.0 * (mb << 20) as f64 / table_bytes as f64,
            100.0 * d("hits") as f64 / d("lookups").max(1) as f64,
            d("fetched_remote") as f64 / n,
            d("fetched_bytes") as f64 * d("fetched_remote") as f64 / d("fetched").max(1) as f64 / n,
            d("unanswered"),
            d("fetch_us") as f64 / d("fetches").max(1) as f64,
            pct(&lat, 50),
            pct(&lat, 99)
        );
    }
    drop(con);
    drop(cl);

    // The baseline: the tables inside the model, one plain node.
    let s = RedisServer::start(&["MODEL_MAX_MB", "4096"], &[])?;
    let mut c = s.connection()?;
    load(b, &users, &full, &schema(b), |cmds| {
        let mut p = redis::pipe();
        for cmd in cmds {
            p.add_command(cmd.clone()).ignore();
        }
        p.query::<()>(&mut c).context("pipeline")
    })?;
    let mut one = |user: &str| -> Result<()> {
        let mut cmd = redis::cmd("RECSYS.RECOMMEND");
        cmd.arg("cat").arg(user).arg(&REQUEST[..]);
        cmd.query::<redis::Value>(&mut c)?;
        Ok(())
    };
    requests(b.warmup, &who, &mut rng, &mut one)?;
    let lat = requests(b.requests, &who, &mut rng, &mut one)?;
    let (p50, p99) = (pct(&lat, 50), pct(&lat, 99));
    println!();
    println!("The same model with its tables inside the file ({:.0} MB), one plain node: p50 {p50:.0} µs, p99 {p99:.0} µs.", full.len() as f64 / (1 << 20) as f64);
    println!("| cache MB per node | p50 rows as keys on the cluster / tables inside on one node | p99 ratio |");
    println!("|---:|---:|---:|");
    for (mb, c50, c99) in cluster_p50 {
        println!("| {mb} | {:.2} | {:.2} |", c50 / p50, c99 / p99);
    }
    println!("_({:.0} s)_", started.elapsed().as_secs_f64());
    Ok(())
}
