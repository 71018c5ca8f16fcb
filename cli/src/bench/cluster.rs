//! `recsys bench cluster`: the figures of docs/cluster.md and
//! docs/benchmarks.md for Redis Cluster (issue 13):
//!
//! 1. RECOMMEND throughput and latency on one plain node and on clusters
//!    of N masters (catalog copies on every master, requests routed by the
//!    user key), with EXISTS on the same user keys as the baseline of each
//!    set-up, in interleaved rounds, and the CPU each run had: the nodes
//!    and this load generator share the machine's cores;
//! 2. what a catalog write costs once fanned out: ITEM.SET latency on the
//!    owner, the time until every other master's copy has it, bus bytes;
//! 3. how long a new master takes to catch up on a large catalog (from
//!    CLUSTER MEET to its copy serving).
//!
//! The load generator is a closed loop of client threads with one
//! connection per master each, sending every request to the master of its
//! user's slot (what a cluster client does); redis-benchmark's --cluster
//! mode cannot name users that exist.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use recsys::rng::SplitMix;
use recsys::synth::clustered_lowrank;
use recsys::vector::to_fp32_blob;

use super::recommend::WHERE;
use super::redis::cpu;
use crate::cluster::Cluster;
use crate::server::RedisServer;

#[derive(clap::Args, Debug, Clone)]
pub struct ClusterBench {
    /// Items in the served catalog.
    #[arg(long, default_value_t = 20_000)]
    pub items: usize,
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Set-ups measured: 1 is one plain (non-cluster) node, N > 1 a cluster
    /// of N masters.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub masters: Vec<usize>,
    /// Client threads of the load generator.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// Rounds (every set-up and command once per round; medians reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Module WORKERS per node (default: the module's, one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Writes timed for the fan-out figures.
    #[arg(long, default_value_t = 100)]
    pub writes: usize,
    /// Items of the catalog a new node catches up on (0: skip).
    #[arg(long, default_value_t = 100_000)]
    pub catchup_items: usize,
}

/// One set-up: a plain node or a cluster, and which master serves a slot.
struct Setup {
    name: String,
    masters: usize,
    /// Keeps the processes alive.
    _plain: Option<RedisServer>,
    _cluster: Option<Cluster>,
    /// Every node's port (CPU accounting).
    ports: Vec<u16>,
    /// Master port per slot.
    slot_owner: Vec<u16>,
}

impl Setup {
    fn port_of(&self, key: &[u8]) -> u16 {
        self.slot_owner[Cluster::slot(key) as usize]
    }

    /// The masters' ports, each once.
    fn masters(&self) -> Vec<u16> {
        let mut m = self.slot_owner.clone();
        m.sort_unstable();
        m.dedup();
        m
    }
}

fn module_args(b: &ClusterBench) -> Vec<String> {
    b.workers
        .map(|w| vec!["WORKERS".to_string(), w.to_string()])
        .unwrap_or_default()
}

fn start_setup(b: &ClusterBench, masters: usize) -> Result<Setup> {
    let args = module_args(b);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if masters <= 1 {
        let s = RedisServer::start(&args, &[])?;
        let port = s.port;
        return Ok(Setup {
            name: "1 node (no cluster)".into(),
            masters: 1,
            _plain: Some(s),
            _cluster: None,
            ports: vec![port],
            slot_owner: vec![port; 16384],
        });
    }
    let cl = Cluster::start_with_module_args(masters, 0, &[], &args)?;
    let map = cl.slot_map()?;
    let mut slot_owner = vec![0u16; 16384];
    let starts: Vec<(u16, u16)> = map.iter().map(|(s, (p, _))| (*s, *p)).collect();
    for (i, (start, port)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(16384, |(s, _)| *s as usize);
        for o in &mut slot_owner[*start as usize..end] {
            *o = *port;
        }
    }
    Ok(Setup {
        name: format!("cluster, {masters} masters"),
        masters,
        ports: cl.nodes.iter().map(|n| n.port).collect(),
        _plain: None,
        _cluster: Some(cl),
        slot_owner,
    })
}

fn connect(port: u16) -> Result<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    Ok(c.get_connection()?)
}

fn user(u: usize) -> String {
    format!("user:{u:08}")
}

/// The catalog (on its owner) and the users (each on its master).
fn load(s: &Setup, b: &ClusterBench) -> Result<()> {
    let owner = s.port_of(b"bench");
    let mut c = connect(owner)?;
    redis::cmd("RECSYS.CREATE")
        .arg("bench")
        .arg("DIM")
        .arg(b.dim)
        .arg("EF_SEARCH")
        .arg(64)
        .query::<()>(&mut c)?;
    let items = clustered_lowrank(b.items, b.dim, 100, 8, 42);
    for (n, chunk) in items.chunks(500).enumerate() {
        let mut cmd = redis::cmd("RECSYS.ITEM.MSET");
        cmd.arg("bench").arg("WITHATTRS");
        for (j, v) in chunk.iter().enumerate() {
            let i = n * 500 + j;
            cmd.arg(format!("{i:08}"))
                .arg(to_fp32_blob(v))
                .arg(format!(r#"{{"genre":"g{}"}}"#, i % 20));
        }
        cmd.query::<i64>(&mut c)?;
    }
    let users = clustered_lowrank(b.users, b.dim, 100, 8, 4242);
    let mut by_port: BTreeMap<u16, redis::Pipeline> = BTreeMap::new();
    for (u, v) in users.iter().enumerate() {
        let name = user(u);
        by_port
            .entry(s.port_of(name.as_bytes()))
            .or_default()
            .cmd("HSET")
            .arg(&name)
            .arg("emb")
            .arg(to_fp32_blob(v))
            .ignore();
    }
    for (port, p) in by_port {
        p.query::<()>(&mut connect(port)?)?;
    }
    if s.masters > 1 {
        wait_for_copies(s, "bench", b.items, Duration::from_secs(600))?;
    }
    Ok(())
}

/// Seq of `catalog`'s copy on `port` and whether it serves.
fn copy_state(c: &mut redis::Connection, catalog: &str) -> Result<Option<(i64, bool, i64)>> {
    let v: redis::Value = redis::cmd("RECSYS.COPIES").query(c)?;
    let redis::Value::Array(entries) = v else {
        return Ok(None);
    };
    for e in entries {
        let kv: Vec<(String, redis::Value)> = match e {
            redis::Value::Array(a) => a
                .chunks(2)
                .filter_map(|p| Some((redis::from_redis_value(&p[0]).ok()?, p[1].clone())))
                .collect(),
            redis::Value::Map(m) => m
                .into_iter()
                .filter_map(|(k, v)| Some((redis::from_redis_value(&k).ok()?, v)))
                .collect(),
            _ => continue,
        };
        let get = |name: &str| kv.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let name: String =
            get("catalog").map_or(Ok(String::new()), |v| redis::from_redis_value(&v))?;
        if name != catalog {
            continue;
        }
        let seq: i64 = get("seq").map_or(Ok(0), |v| redis::from_redis_value(&v))?;
        let state: String =
            get("state").map_or(Ok(String::new()), |v| redis::from_redis_value(&v))?;
        let items: i64 = get("items").map_or(Ok(0), |v| redis::from_redis_value(&v))?;
        return Ok(Some((seq, state == "serving", items)));
    }
    Ok(None)
}

fn masters_but_owner(s: &Setup, catalog: &str) -> Vec<u16> {
    let owner = s.port_of(catalog.as_bytes());
    let mut m = s.masters();
    m.retain(|&p| p != owner);
    m
}

fn wait_for_copies(s: &Setup, catalog: &str, items: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for port in masters_but_owner(s, catalog) {
        let mut c = connect(port)?;
        loop {
            if let Some((_, true, n)) = copy_state(&mut c, catalog)? {
                if n as usize == items {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("the copy on {port} did not catch up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// CPU seconds a node has used, all threads (INFO cpu).
fn node_cpu(port: u16) -> Result<f64> {
    Ok(cpu(&mut connect(port)?)?.1)
}

/// CPU seconds this process has used (/proc/self/stat).
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based; 12 and 13 after the ')').
    (ticks(11) + ticks(12)) / 100.0
}

/// One timed run: requests/s, p50 and p99 in µs, CPU cores used by the
/// nodes and by the load generator.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    node_cores: f64,
    client_cores: f64,
    errors: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Load {
    Recommend,
    Exists,
}

fn run_load(s: &Setup, b: &ClusterBench, load: Load, round: u64) -> Result<Run> {
    let masters = s.masters();
    let cpu0: f64 = s.ports.iter().map(|&p| node_cpu(p)).sum::<Result<f64>>()?;
    let own0 = own_cpu();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(b.seconds);
    let threads: Vec<_> = (0..b.clients)
        .map(|t| {
            let masters = masters.clone();
            let slot_owner = s.slot_owner.clone();
            let users = b.users;
            std::thread::spawn(move || -> Result<(Vec<u32>, u64)> {
                let mut conns: BTreeMap<u16, redis::Connection> = BTreeMap::new();
                for p in masters {
                    conns.insert(p, connect(p)?);
                }
                let mut rng = SplitMix::new(round * 1000 + t as u64);
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let u = user(rng.below(users as u64) as usize);
                    let port = slot_owner[Cluster::slot(u.as_bytes()) as usize];
                    let c = conns.get_mut(&port).context("no connection")?;
                    let t0 = Instant::now();
                    let r: redis::RedisResult<redis::Value> = match load {
                        Load::Recommend => redis::cmd("RECSYS.RECOMMEND")
                            .arg("bench")
                            .arg(&u)
                            .arg("K")
                            .arg(10)
                            .arg("CANDIDATES")
                            .arg(200)
                            .arg("WHERE")
                            .arg(WHERE)
                            .query(c),
                        Load::Exists => redis::cmd("EXISTS").arg(&u).query(c),
                    };
                    lat.push(t0.elapsed().as_micros() as u32);
                    errors += r.is_err() as u64;
                }
                Ok((lat, errors))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (lat, e) = t
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        all.extend(lat);
        errors += e;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu1: f64 = s.ports.iter().map(|&p| node_cpu(p)).sum::<Result<f64>>()?;
    all.sort_unstable();
    let pct = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0) as f64
    };
    Ok(Run {
        rps: all.len() as f64 / wall,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        node_cores: (cpu1 - cpu0) / wall,
        client_cores: (own_cpu() - own0) / wall,
        errors,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn run(b: &ClusterBench) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# cluster bench: {} items x {}-d, {} users with emb, {} client threads, {} s runs, {} rounds, {cores} cores",
        b.items, b.dim, b.users, b.clients, b.seconds, b.repeats
    );
    let mut setups = Vec::new();
    for &m in &b.masters {
        let t = Instant::now();
        let s = start_setup(b, m)?;
        load(&s, b)?;
        println!(
            "{}: started and loaded in {:.1} s",
            s.name,
            t.elapsed().as_secs_f64()
        );
        setups.push(s);
    }
    // Interleaved rounds: set-up 1 RECOMMEND, EXISTS, set-up 2 ...
    let loads = [Load::Recommend, Load::Exists];
    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); loads.len()]; setups.len()];
    for round in 0..b.repeats.max(1) {
        for (i, s) in setups.iter().enumerate() {
            for (j, &l) in loads.iter().enumerate() {
                runs[i][j].push(run_load(s, b, l, round as u64)?);
            }
        }
    }
    println!(
        "\nRECSYS.RECOMMEND K 10 CANDIDATES 200 WHERE, routed by the user key; EXISTS on the same keys as each set-up's baseline (medians of {} rounds):",
        b.repeats
    );
    println!("| set-up | RECOMMEND req/s | p50 µs | p99 µs | EXISTS req/s | RECOMMEND / EXISTS | vs 1st set-up | node CPU (cores) | client CPU (cores) | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let first = median(runs[0][0].iter().map(|r| r.rps).collect());
    for (s, r) in setups.iter().zip(&runs) {
        let m = |j: usize, f: fn(&Run) -> f64| median(r[j].iter().map(f).collect());
        let rps = m(0, |r| r.rps);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} | {:.2}x | {:.2} | {:.2} | {} |",
            s.name,
            rps,
            m(0, |r| r.p50_us),
            m(0, |r| r.p99_us),
            m(1, |r| r.rps),
            rps / m(1, |r| r.rps),
            rps / first,
            m(0, |r| r.node_cores),
            m(0, |r| r.client_cores),
            r[0].iter().map(|r| r.errors).sum::<u64>()
        );
    }
    fanout(b, &setups)?;
    drop(setups);
    if b.catchup_items > 0 {
        catch_up(b)?;
    }
    Ok(())
}

/// A counter of a node's INFO recsys (`bus_bytes_sent`, ...).
fn recsys_counter(port: u16, field: &str) -> Result<f64> {
    let info: String = redis::cmd("INFO")
        .arg("recsys")
        .query(&mut connect(port)?)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix(&format!("recsys_{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

/// ITEM.SET latency on the owner, and the time until every other master
/// has applied it.
fn fanout(b: &ClusterBench, setups: &[Setup]) -> Result<()> {
    println!(
        "\nA catalog write fanned out (ITEM.SET of one {}-d item with ATTRS, one at a time, {} writes; medians):",
        b.dim, b.writes
    );
    println!("| set-up | ITEM.SET µs on the owner | until every copy has it, µs (p50) | (p90) | bus bytes sent per write |");
    println!("|---|---:|---:|---:|---:|");
    let v = to_fp32_blob(&clustered_lowrank(1, b.dim, 1, 1, 7)[0]);
    for s in setups {
        let owner = s.port_of(b"bench");
        let mut c = connect(owner)?;
        let others: Vec<u16> = masters_but_owner(s, "bench");
        let mut probes: Vec<redis::Connection> =
            others.iter().map(|&p| connect(p)).collect::<Result<_>>()?;
        let bytes0 = recsys_counter(owner, "bus_bytes_sent")?;
        let (mut set_us, mut spread_us) = (Vec::new(), Vec::new());
        for w in 0..b.writes {
            let t = Instant::now();
            redis::cmd("RECSYS.ITEM.SET")
                .arg("bench")
                .arg(format!("w{w}"))
                .arg("FP32")
                .arg(&v)
                .arg("ATTRS")
                .arg(r#"{"genre":"g1"}"#)
                .query::<i64>(&mut c)?;
            set_us.push(t.elapsed().as_secs_f64() * 1e6);
            if probes.is_empty() {
                continue;
            }
            let want = b.items as i64 + w as i64 + 1;
            for p in probes.iter_mut() {
                let deadline = Instant::now() + Duration::from_secs(10);
                while copy_state(p, "bench")?.map(|(_, _, n)| n) != Some(want) {
                    if Instant::now() > deadline {
                        bail!("a copy did not get write {w}");
                    }
                }
            }
            spread_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let per_write = (recsys_counter(owner, "bus_bytes_sent")? - bytes0) / b.writes as f64;
        spread_us.sort_by(|a, b| a.total_cmp(b));
        let p = |q: f64| {
            spread_us
                .get(((spread_us.len().max(1) - 1) as f64 * q) as usize)
                .map_or("-".to_string(), |v| format!("{v:.0}"))
        };
        println!(
            "| {} | {:.0} | {} | {} | {:.0} |",
            s.name,
            median(set_us),
            p(0.5),
            p(0.9),
            per_write
        );
    }
    Ok(())
}

/// A new master joins a 1-master cluster whose catalog has
/// `catchup_items` items: time from CLUSTER MEET to its copy serving.
fn catch_up(b: &ClusterBench) -> Result<()> {
    let args = module_args(b);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cl = Cluster::start_with_module_args(1, 0, &[], &args)?;
    let owner = cl.nodes[0].port;
    let mut c = connect(owner)?;
    redis::cmd("RECSYS.CREATE")
        .arg("big")
        .arg("DIM")
        .arg(b.dim)
        .query::<()>(&mut c)?;
    let items = clustered_lowrank(b.catchup_items, b.dim, 100, 8, 43);
    let t = Instant::now();
    for (n, chunk) in items.chunks(1000).enumerate() {
        let mut cmd = redis::cmd("RECSYS.ITEM.MSET");
        cmd.arg("big");
        for (j, v) in chunk.iter().enumerate() {
            cmd.arg(format!("{:08}", n * 1000 + j)).arg(to_fp32_blob(v));
        }
        cmd.query::<i64>(&mut c)?;
    }
    let loaded = t.elapsed().as_secs_f64();
    let node = Cluster::start_node(&cl.nodes[0].module, &[], None, &args)?;
    let port = node.port;
    cl.nodes.push(node);
    let mut n = connect(port)?;
    let t = Instant::now();
    redis::cmd("CLUSTER")
        .arg("MEET")
        .arg("127.0.0.1")
        .arg(port)
        .query::<()>(&mut c)?;
    let mut first_seen = None;
    loop {
        match copy_state(&mut n, "big")? {
            Some((_, true, k)) if k as usize == b.catchup_items => break,
            Some(_) => {
                first_seen.get_or_insert(t.elapsed());
            }
            None => {}
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the new node did not catch up in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = t.elapsed().as_secs_f64();
    let bytes = recsys_counter(port, "bus_bytes_received")?;
    let seen = first_seen.map_or(0.0, |d| d.as_secs_f64());
    println!(
        "\nCatch-up: a new master joins (CLUSTER MEET) a cluster whose catalog has {} items x {}-d (loaded in {loaded:.1} s):",
        b.catchup_items, b.dim
    );
    println!("| from MEET to copy serving, s | of which: until the catalog is first announced to it, s | snapshot transfer + install, s | bytes received over the bus |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {total:.2} | {seen:.2} | {:.2} | {:.0} |",
        total - seen,
        bytes
    );
    Ok(())
}
