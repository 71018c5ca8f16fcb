//! `recsys bench plugins`: the cost of one plugin call on 200 candidates
//! (reset or fresh instance, call, validate), in process; then RECOMMEND
//! throughput through Redis with one filter and one order plugin next to the
//! same request without them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use recsys::plugin::{Host, Limits, PluginInput};

use super::recommend::{load_shop, recommend_args, RecommendBench};
use super::redis::{interleaved_with_cpu, print_cpu_table, print_table, Case};
use crate::server::RedisServer;

#[derive(clap::Args, Debug, Clone)]
pub struct PluginBench {
    /// Folder with the built components (plugins/build.sh).
    #[arg(long, default_value = "plugins/dist")]
    pub dist: PathBuf,
    #[arg(long, default_value_t = 5000)]
    pub calls: usize,
    #[arg(long, default_value_t = 50_000)]
    pub items: usize,
    #[arg(long, default_value_t = 5_000)]
    pub users: usize,
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    #[arg(long, default_value_t = 30_000)]
    pub requests: usize,
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

fn input(n: usize) -> PluginInput {
    let mut inp = PluginInput {
        user_id: "user:1".into(),
        scores: (0..n).map(|i| 1.0 - i as f32 / n as f32).collect(),
        numeric_names: vec!["sponsored".into()],
        numeric_values: (0..n).map(|i| (i % 50 == 0) as u8 as f64).collect(),
        text_names: vec!["genre".into(), "stock".into()],
        text_dict: (0..20)
            .map(|g| format!("g{g}"))
            .chain(["in".into(), "out".into()])
            .collect(),
        text_values: (0..n)
            .flat_map(|i| [(i % 20) as u32, if i % 10 == 0 { 21 } else { 20 }])
            .collect(),
        ..PluginInput::default()
    };
    for i in 0..n {
        inp.push_id(&format!("{i:012}"));
    }
    inp
}

fn median_us(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

pub fn run(b: &PluginBench) -> Result<()> {
    let read = |name: &str| {
        std::fs::read(b.dist.join(format!("{name}.wasm"))).with_context(|| {
            format!(
                "{}/{name}.wasm missing: run plugins/build.sh",
                b.dist.display()
            )
        })
    };
    let host = Host::new(Limits::default()).map_err(anyhow::Error::msg)?;
    let filter = host
        .compile("nostock", read("exclude-attr")?)
        .map_err(anyhow::Error::msg)?;
    let order = host
        .compile("boost", read("boost-sponsored")?)
        .map_err(anyhow::Error::msg)?;
    let inp = input(200);
    println!("# plugin call cost: 200 candidates, 1 numeric + 2 text attributes; per-thread instance reset after each call + call + validate; {} calls", b.calls);
    println!("| plugin | median us | p99 us |");
    println!("|---|---:|---:|");
    for (name, is_filter) in [
        ("exclude-attr (filter, stock=out)", true),
        ("boost-sponsored (order, sponsored:0.1)", false),
    ] {
        let mut times = Vec::with_capacity(b.calls);
        for _ in 0..b.calls {
            let t = Instant::now();
            if is_filter {
                host.call_filter(&filter, &inp, "stock=out")
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            } else {
                host.call_order(&order, &inp, "sponsored:0.1")
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let (m, p99) = median_us(times);
        println!("| {name} | {m:.1} | {p99:.1} |");
    }

    let server = RedisServer::start(&[], &["--slowlog-log-slower-than", "-1"])?;
    let mut c = server.connection()?;
    let shop = RecommendBench::shop(b.items, b.users, b.clients, b.requests, b.repeats);
    load_shop(&mut c, &shop)?;
    redis::cmd("RECSYS.PLUGIN.LOAD")
        .arg("nostock")
        .arg(read("exclude-attr")?)
        .query::<redis::Value>(&mut c)?;
    redis::cmd("RECSYS.PLUGIN.LOAD")
        .arg("boost")
        .arg(read("boost-sponsored")?)
        .query::<redis::Value>(&mut c)?;
    let base = recommend_args(b.users, &[]);
    let mut with = base.clone();
    with.extend(
        [
            "FILTER",
            "nostock",
            "ARGS",
            "stock=out",
            "ORDER",
            "boost",
            "ARGS",
            "sponsored:0.1",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    println!(
        "\n# RECOMMEND through Redis: {} items x 64-d, {} users, K=10 CANDIDATES 200, {} clients, {} interleaved runs",
        b.items, b.users, b.clients, b.repeats
    );
    let cases = [
        Case {
            name: "without plugins",
            clients: b.clients,
            args: &base,
        },
        Case {
            name: "FILTER exclude-attr + ORDER boost-sponsored",
            clients: b.clients,
            args: &with,
        },
    ];
    let (runs, spent) = interleaved_with_cpu(server.port, &mut c, b.repeats, b.requests, &cases)?;
    print_table(&cases, &runs);
    print_cpu_table(&cases, &spent, b.requests * b.repeats.max(1));
    println!(
        "\nthroughput with plugins / without (medians): {:.2}",
        runs[1].median().rps / runs[0].median().rps
    );
    let info: redis::Value = redis::cmd("RECSYS.PLUGIN.INFO")
        .arg("nostock")
        .query(&mut c)?;
    println!("RECSYS.PLUGIN.INFO nostock: {info:?}");
    Ok(())
}
