//! `recsys bench small`: the latency of one request on a small catalog
//! (MovieLens 100K's size by default), measured from one client that
//! pipelines requests, next to PING in the same run: what a request costs
//! the server when nothing else is waiting. Also WHERE next to the same
//! request without it, and EXPLAIN's retrieval split.

use std::time::Instant;

use anyhow::{bail, Result};
use recsys::rng::SplitMix;
use recsys::synth::clustered_lowrank;
use recsys::vector::to_fp32_blob;
use redis::Value;

use crate::server::RedisServer;

#[derive(clap::Args, Debug, Clone)]
pub struct SmallBench {
    /// Items in the catalog (1,682: MovieLens 100K's).
    #[arg(long, default_value_t = 1682)]
    pub items: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    #[arg(long, default_value_t = 500)]
    pub users: usize,
    /// Events per user (the items EXCLUDE_SEEN removes; MovieLens users
    /// have ~60 positives on average).
    #[arg(long, default_value_t = 60)]
    pub history: usize,
    /// Requests per pipeline.
    #[arg(long, default_value_t = 100)]
    pub pipeline: usize,
    /// Requests per case and round.
    #[arg(long, default_value_t = 5_000)]
    pub requests: usize,
    /// Interleaved rounds (medians are reported).
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// Module WORKERS argument (default: number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// The WHERE of the demo's shop (about a quarter of the items pass).
const WHERE_COMMON: &str = "in_stock && price < 50";
/// A WHERE that keeps about 1% of the items.
const WHERE_RARE: &str = "price < 3.0 && in_stock";

/// One request shape: a name and how to build the command for user `u`.
struct Shape {
    name: &'static str,
    build: Box<dyn Fn(usize) -> redis::Cmd>,
}

pub fn run(b: &SmallBench) -> Result<()> {
    let workers = b.workers.map(|w| w.to_string());
    let mut module_args: Vec<&str> = Vec::new();
    if let Some(w) = &workers {
        module_args.extend(["WORKERS", w.as_str()]);
    }
    let server = RedisServer::start(&module_args, &["--slowlog-log-slower-than", "-1"])?;
    let mut c = server.connection()?;
    load(&mut c, b)?;
    println!(
        "# small-catalog bench: {} items x {}-d (IP, EF_SEARCH 100) with ATTRS {{price, in_stock}}, {} users with emb and {} events each; one client, pipelines of {}, {} requests per case x {} interleaved rounds",
        b.items, b.dim, b.users, b.history, b.pipeline, b.requests, b.rounds
    );
    let info: Value = redis::cmd("RECSYS.INFO").arg("small").query(&mut c)?;
    if let Some(path) = map_field(&info, "retrieval") {
        println!("RECSYS.INFO retrieval: {path}");
    }
    let query = to_fp32_blob(&clustered_lowrank(1, b.dim, 20, 8, 7)[0]);
    let users = b.users;
    let recommend = move |u: usize, extra: &[&str]| {
        let mut cmd = redis::cmd("RECSYS.RECOMMEND");
        cmd.arg("small")
            .arg(format!("user:{}", u % users))
            .arg("K")
            .arg(10)
            .arg("EXCLUDE_SEEN");
        for e in extra {
            cmd.arg(*e);
        }
        cmd
    };
    let shapes = [
        Shape {
            name: "PING",
            build: Box::new(|_| redis::cmd("PING")),
        },
        Shape {
            name: "SEARCH K 10 FP32 EF 100",
            build: Box::new(move |_| {
                let mut cmd = redis::cmd("RECSYS.SEARCH");
                cmd.arg("small")
                    .arg(10)
                    .arg("FP32")
                    .arg(query.as_slice())
                    .arg("EF")
                    .arg(100);
                cmd
            }),
        },
        Shape {
            name: "RECOMMEND K 10 EXCLUDE_SEEN",
            build: Box::new(move |u| recommend(u, &[])),
        },
        Shape {
            name: "same + WHERE 'in_stock && price < 50'",
            build: Box::new(move |u| recommend(u, &["WHERE", WHERE_COMMON])),
        },
        Shape {
            name: "same + WHERE keeping 1% ('price < 3.0 && in_stock')",
            build: Box::new(move |u| recommend(u, &["WHERE", WHERE_RARE])),
        },
    ];
    let mut per_request: Vec<Vec<f64>> = vec![Vec::new(); shapes.len()];
    let mut user = 0usize;
    for _ in 0..b.rounds.max(1) {
        for (i, s) in shapes.iter().enumerate() {
            let t = Instant::now();
            let mut sent = 0;
            while sent < b.requests {
                let n = b.pipeline.min(b.requests - sent);
                let mut p = redis::pipe();
                for _ in 0..n {
                    p.add_command((s.build)(user)).ignore();
                    user += 1;
                }
                p.query::<()>(&mut c)?;
                sent += n;
            }
            per_request[i].push(t.elapsed().as_secs_f64() * 1e6 / b.requests as f64);
        }
    }
    let medians: Vec<f64> = per_request.iter_mut().map(|r| median(r)).collect();
    println!("\n| request | µs per request, median (min-max) | vs PING |");
    println!("|---|---:|---:|");
    for (s, r) in shapes.iter().zip(&per_request) {
        let m = median(&mut r.clone());
        let (lo, hi) = r
            .iter()
            .fold((f64::INFINITY, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
        println!(
            "| {} | {m:.1} ({lo:.1}-{hi:.1}) | {:.1}x |",
            s.name,
            m / medians[0]
        );
    }
    println!(
        "\nWHERE cost: 'in_stock && price < 50' {:.2}x and the 1% WHERE {:.2}x the same request without WHERE",
        medians[3] / medians[2],
        medians[4] / medians[2]
    );
    explain(&mut c, b, &shapes[2..])
}

/// EXPLAIN medians of the RECOMMEND shapes, one request at a time.
fn explain(c: &mut redis::Connection, b: &SmallBench, shapes: &[Shape]) -> Result<()> {
    println!(
        "\nEXPLAIN medians over {} users, one request at a time:",
        b.users.min(300)
    );
    println!("| request | retrieve_us | filter_mode | filter_evaluated | returned |");
    println!("|---|---:|---|---:|---:|");
    for s in shapes {
        let mut us = Vec::new();
        let mut evaluated = Vec::new();
        let mut returned = Vec::new();
        let mut mode = String::new();
        for u in 0..b.users.min(300) {
            let v: Value = (s.build)(u).arg("EXPLAIN").query(c)?;
            let Value::Array(top) = v else {
                bail!("unexpected EXPLAIN reply: {v:?}")
            };
            let Some(ex) = top.get(3) else {
                bail!("no EXPLAIN map in {top:?}")
            };
            let num = |f: &str| map_field(ex, f).and_then(|s| s.parse::<f64>().ok());
            us.push(num("retrieve_us").unwrap_or(f64::NAN));
            evaluated.push(num("filter_evaluated").unwrap_or(f64::NAN));
            returned.push(num("returned").unwrap_or(f64::NAN));
            mode = map_field(ex, "filter_mode").unwrap_or_default();
        }
        println!(
            "| {} | {:.0} | {mode} | {:.0} | {:.0} |",
            s.name,
            median(&mut us),
            median(&mut evaluated),
            median(&mut returned)
        );
    }
    Ok(())
}

/// The value of `name` in a flat RESP2 map reply, as text.
fn map_field(v: &Value, name: &str) -> Option<String> {
    let Value::Array(items) = v else { return None };
    items.chunks(2).find_map(|pair| {
        let key: String = redis::from_redis_value(&pair[0]).ok()?;
        if key != name {
            return None;
        }
        match &pair[1] {
            Value::Int(i) => Some(i.to_string()),
            other => redis::from_redis_value::<String>(other).ok(),
        }
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Catalog "small": items with a price (uniform 1..200) and `in_stock`
/// (90%); users with `emb` and `history` events each.
fn load(c: &mut redis::Connection, b: &SmallBench) -> Result<()> {
    redis::cmd("RECSYS.CREATE")
        .arg("small")
        .arg("DIM")
        .arg(b.dim)
        .arg("METRIC")
        .arg("IP")
        .arg("EF_SEARCH")
        .arg(100)
        .query::<()>(c)?;
    let mut rng = SplitMix::new(11);
    let items = clustered_lowrank(b.items, b.dim, 20, 8, 42);
    for (chunk_no, chunk) in items.chunks(1000).enumerate() {
        let mut p = redis::pipe();
        for (j, v) in chunk.iter().enumerate() {
            let price = 1.0 + rng.uniform() * 199.0;
            let in_stock = rng.uniform() < 0.9;
            p.cmd("RECSYS.ITEM.SET")
                .arg("small")
                .arg(format!("item:{}", chunk_no * 1000 + j))
                .arg("FP32")
                .arg(to_fp32_blob(v))
                .arg("ATTRS")
                .arg(format!(r#"{{"price":{price:.2},"in_stock":{in_stock}}}"#))
                .ignore();
        }
        p.query::<()>(c)?;
    }
    let users = clustered_lowrank(b.users, b.dim, 20, 8, 4242);
    let mut p = redis::pipe();
    for (u, v) in users.iter().enumerate() {
        p.cmd("HSET")
            .arg(format!("user:{u}"))
            .arg("emb")
            .arg(to_fp32_blob(v))
            .ignore();
        for _ in 0..b.history {
            p.cmd("RECSYS.EVENT")
                .arg("small")
                .arg(format!("user:{u}"))
                .arg(format!("item:{}", rng.below(b.items as u64)))
                .ignore();
        }
    }
    p.query::<()>(c)?;
    Ok(())
}
