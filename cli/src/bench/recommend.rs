//! `recsys bench recommend`: RECSYS.RECOMMEND and RECSYS.EVENT throughput
//! through redis-server (redis-benchmark, next to GET in the same run) and the
//! per-stage split from EXPLAIN.

use std::time::Instant;

use anyhow::Result;
use recsys::rng::SplitMix;
use recsys::synth::clustered_lowrank;
use recsys::vector::to_fp32_blob;
use redis::Value;

use super::redis::{interleaved_with_cpu, print_cpu_table, print_table, Case};
use crate::server::RedisServer;

#[derive(clap::Args, Debug, Clone)]
pub struct RecommendBench {
    #[arg(long, default_value_t = 100_000)]
    pub items: usize,
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Events per user (their recent history).
    #[arg(long, default_value_t = 10)]
    pub history: usize,
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    #[arg(long, default_value_t = 50_000)]
    pub requests: usize,
    /// Runs per command, interleaved (median, min and max are reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Module WORKERS argument (default: number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// The RECOMMEND request measured: 200 candidates, a WHERE on one attribute
/// (keeps 95% of items), EXCLUDE_SEEN.
pub const WHERE: &str = r#"genre != "g3""#;

pub fn run(b: &RecommendBench) -> Result<()> {
    let workers = b.workers.map(|w| w.to_string());
    let mut module_args: Vec<&str> = Vec::new();
    if let Some(w) = &workers {
        module_args.extend(["WORKERS", w.as_str()]);
    }
    let server = RedisServer::start(&module_args, &["--slowlog-log-slower-than", "-1"])?;
    let mut c = server.connection()?;
    println!(
        "# recommend bench: {} items x {}-d with ATTRS {{genre: g0..g19}}, {} users with emb + {} events each, {} clients",
        b.items, b.dim, b.users, b.history, b.clients
    );
    let events_per_s = load_shop(&mut c, b)?;

    println!(
        "events: {} RECSYS.EVENT from one client, pipelines of 1000: {events_per_s:.0} events/s",
        b.users * b.history
    );
    redis::cmd("SET")
        .arg("key:__rand_int__")
        .arg("x")
        .query::<()>(&mut c)?;

    let n = |x: usize| x.to_string();
    let get = vec!["-t".to_string(), "get".to_string()];
    let recommend = recommend_args(b.users, &["WHERE", WHERE, "EXCLUDE_SEEN"]);
    // Five examples (3 positive, 2 negative) next to each user's own vector.
    let example_ids: Vec<String> = (0..5)
        .map(|i| format!("{:012}", i * 7919 % b.items))
        .collect();
    let mut with_examples: Vec<&str> = vec!["WHERE", WHERE, "EXCLUDE_SEEN", "POSITIVE", "3"];
    with_examples.extend(example_ids[..3].iter().map(String::as_str));
    with_examples.extend(["NEGATIVE", "2"]);
    with_examples.extend(example_ids[3..].iter().map(String::as_str));
    let average = recommend_args(b.users, &with_examples);
    with_examples.extend(["STRATEGY", "BEST_SCORE"]);
    let best_score = recommend_args(b.users, &with_examples);
    let sources = recommend_args(
        b.users,
        &[
            "WHERE",
            WHERE,
            "EXCLUDE_SEEN",
            "SOURCES",
            "3",
            "user",
            "150",
            "similar",
            "30",
            "popular",
            "20",
        ],
    );
    // An experiment whose two variants change nothing: its own cost.
    let _: () = redis::cmd("RECSYS.EXPERIMENT.SET")
        .arg(&[
            "bench", "ab", "VARIANT", "a", "VARIANT", "b", "OPTIONS", "K 10",
        ])
        .query(&mut c)?;
    let experiment = recommend_args(
        b.users,
        &["WHERE", WHERE, "EXCLUDE_SEEN", "EXPERIMENT", "ab"],
    );
    let mut event: Vec<String> = vec![
        "-r".into(),
        n(b.items.min(b.users)),
        "-P".into(),
        "32".into(),
    ];
    event.extend(
        ["RECSYS.EVENT", "bench", "user:__rand_int__", "__rand_int__"]
            .iter()
            .map(|s| s.to_string()),
    );

    let cases = [
        Case {
            name: "GET",
            clients: b.clients,
            args: &get,
        },
        Case {
            name: "RECSYS.RECOMMEND K=10 CANDIDATES 200 WHERE EXCLUDE_SEEN",
            clients: b.clients,
            args: &recommend,
        },
        Case {
            name: "same + POSITIVE 3 NEGATIVE 2 (STRATEGY AVERAGE)",
            clients: b.clients,
            args: &average,
        },
        Case {
            name: "same + POSITIVE 3 NEGATIVE 2 STRATEGY BEST_SCORE",
            clients: b.clients,
            args: &best_score,
        },
        Case {
            name: "same with SOURCES 3 user 150 similar 30 popular 20 (RRF)",
            clients: b.clients,
            args: &sources,
        },
        Case {
            name: "same with EXPERIMENT ab (2 variants, options that change nothing)",
            clients: b.clients,
            args: &experiment,
        },
        Case {
            name: "same RECOMMEND at 16 clients (the seed article's concurrency)",
            clients: 16,
            args: &recommend,
        },
        Case {
            name: "RECSYS.EVENT (pipeline 32, 1 client)",
            clients: 1,
            args: &event,
        },
    ];
    let (runs, spent) = interleaved_with_cpu(server.port, &mut c, b.repeats, b.requests, &cases)?;
    print_table(&cases, &runs);
    print_cpu_table(&cases, &spent, b.requests * b.repeats.max(1));
    let plain = runs[1].median().rps;
    println!(
        "\nexamples (the user vector + 5 example items): a request costs {:.2}x (AVERAGE) and {:.2}x (BEST_SCORE: one search per positive) the plain RECOMMEND's (inverse of median req/s)",
        plain / runs[2].median().rps,
        plain / runs[3].median().rps
    );
    println!(
        "three SOURCES (user, similar, popular; the same 200 candidates): a request costs {:.2}x the plain RECOMMEND's",
        plain / runs[4].median().rps
    );
    println!(
        "EXPERIMENT (assignment, the variant's options, a request id, counting): a request costs {:.2}x the plain RECOMMEND's",
        plain / runs[5].median().rps
    );
    explain_split(&mut c, b)
}

/// Medians of EXPLAIN's per-stage microseconds over 1000 users.
fn explain_split(c: &mut redis::Connection, b: &RecommendBench) -> Result<()> {
    let fields = [
        "user_us",
        "retrieve_us",
        "rank_us",
        "order_us",
        "retrieved",
        "filter_evaluated",
        "filter_rejected",
    ];
    let users = 1000.min(b.users);
    let medians = explain_medians(c, users, &fields, |u| {
        [
            "RECSYS.RECOMMEND",
            "bench",
            &format!("user:{u:012}"),
            "K",
            "10",
            "CANDIDATES",
            "200",
            "WHERE",
            WHERE,
            "EXCLUDE_SEEN",
        ]
        .map(String::from)
        .to_vec()
    })?;
    println!("\nEXPLAIN, median over {users} users (one request at a time):");
    println!("| {} |", fields.join(" | "));
    println!("|{}", "---:|".repeat(fields.len()));
    let medians: Vec<String> = medians
        .iter()
        .map(|m| m.map_or("-".into(), |v| v.to_string()))
        .collect();
    println!("| {} |", medians.join(" | "));
    Ok(())
}

/// Medians of the EXPLAIN `fields` over `requests` RECOMMENDs sent one at a
/// time; `command(u)` is request u's command (EXPLAIN is appended).
pub fn explain_medians(
    c: &mut redis::Connection,
    requests: usize,
    fields: &[&str],
    command: impl Fn(usize) -> Vec<String>,
) -> Result<Vec<Option<i64>>> {
    let mut samples: Vec<Vec<i64>> = vec![Vec::new(); fields.len()];
    for u in 0..requests {
        let args = command(u);
        let mut cmd = redis::cmd(&args[0]);
        cmd.arg(&args[1..]).arg("EXPLAIN");
        let Value::Array(top) = cmd.query(c)? else {
            continue;
        };
        let Some(Value::Array(ex)) = top.get(3) else {
            continue;
        };
        for pair in ex.chunks(2) {
            let name: String = redis::from_redis_value(&pair[0])?;
            if let Some(i) = fields.iter().position(|f| *f == name) {
                samples[i].push(redis::from_redis_value(&pair[1])?);
            }
        }
    }
    Ok(samples
        .iter_mut()
        .map(|s| {
            s.sort_unstable();
            s.get(s.len() / 2).copied()
        })
        .collect())
}

/// redis-benchmark arguments for `RECSYS.RECOMMEND bench user:<random> K 10
/// CANDIDATES 200` over `users` users, followed by `extra`.
pub fn recommend_args(users: usize, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["-r".into(), users.to_string()];
    args.extend(
        [
            "RECSYS.RECOMMEND",
            "bench",
            "user:__rand_int__",
            "K",
            "10",
            "CANDIDATES",
            "200",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string()),
    );
    args
}

impl RecommendBench {
    /// The shop of this benchmark with 64-d vectors and 10 events per user,
    /// for the other benchmarks that run RECOMMEND.
    pub fn shop(
        items: usize,
        users: usize,
        clients: usize,
        requests: usize,
        repeats: usize,
    ) -> Self {
        RecommendBench {
            items,
            users,
            dim: 64,
            history: 10,
            clients,
            requests,
            repeats,
            workers: None,
        }
    }
}

/// The shop used by the RECOMMEND and plugin benchmarks: catalog "bench" with
/// ATTRS {genre, stock, sponsored}, users with `emb` and a history of events.
/// Returns the events/s of loading the histories.
pub fn load_shop(c: &mut redis::Connection, b: &RecommendBench) -> Result<f64> {
    redis::cmd("RECSYS.CREATE")
        .arg("bench")
        .arg("DIM")
        .arg(b.dim)
        .arg("EF_SEARCH")
        .arg(64)
        .query::<()>(c)?;
    let items = clustered_lowrank(b.items, b.dim, 100, 8, 42);
    for (chunk_no, chunk) in items.chunks(1000).enumerate() {
        let mut p = redis::pipe();
        for (j, v) in chunk.iter().enumerate() {
            let i = chunk_no * 1000 + j;
            p.cmd("RECSYS.ITEM.SET")
                .arg("bench")
                .arg(format!("{i:012}"))
                .arg("FP32")
                .arg(to_fp32_blob(v))
                .arg("ATTRS")
                .arg(format!(
                    r#"{{"genre":"g{}","stock":"{}","sponsored":{}}}"#,
                    i % 20,
                    if i % 10 == 0 { "out" } else { "in" },
                    (i % 50 == 0) as u8
                ))
                .ignore();
        }
        p.query::<()>(c)?;
    }
    let users = clustered_lowrank(b.users, b.dim, 100, 8, 4242);
    let mut p = redis::pipe();
    for (u, v) in users.iter().enumerate() {
        p.cmd("HSET")
            .arg(format!("user:{u:012}"))
            .arg("emb")
            .arg(to_fp32_blob(v))
            .ignore();
    }
    p.query::<()>(c)?;

    // Events from one pipelining client: the history of every user.
    let mut rng = SplitMix::new(5);
    let total = b.users * b.history;
    let t = Instant::now();
    for chunk in 0..total.div_ceil(1000) {
        let mut p = redis::pipe();
        for e in chunk * 1000..((chunk + 1) * 1000).min(total) {
            let u = e % b.users;
            let item = rng.below(b.items as u64);
            p.cmd("RECSYS.EVENT")
                .arg("bench")
                .arg(format!("user:{u:012}"))
                .arg(format!("{item:012}"))
                .arg("TYPE")
                .arg("view")
                .ignore();
        }
        p.query::<()>(c)?;
    }
    Ok(total as f64 / t.elapsed().as_secs_f64())
}
