//! `recsys bench filters`: what a WHERE costs in the core pipeline, one
//! thread, no Redis: the in-graph walk for permissive filters, the switch to
//! a scan for very selective ones.

use std::time::Instant;

use anyhow::Result;
use recsys::catalog::Catalog;
use recsys::features::attrs::Attrs;
use recsys::index::IndexParams;
use recsys::pipeline::explain::Stage;
use recsys::pipeline::recommend;
use recsys::pipeline::request::{Request, UserInput};
use recsys::synth::clustered_lowrank;

use super::index::median;

#[derive(clap::Args, Debug, Clone)]
pub struct FilterBench {
    #[arg(long, default_value_t = 100_000)]
    pub items: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Users (query vectors) per pass.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Timed passes per WHERE, interleaved across the WHEREs; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

const WHERES: [Option<&str>; 7] = [
    None,
    Some("true"),
    Some(r#"genre != "g3""#),
    Some(r#"genre == "g3""#),
    // 10% of the items, in one region of the space: far from most queries.
    Some("edge"),
    Some("rare"),
    Some(r#"genre == "nope""#),
];

pub fn run(b: &FilterBench) -> Result<()> {
    let mut c = Catalog::new(IndexParams {
        ef_search: 64,
        ..IndexParams::new(b.dim)
    })?;
    let items = clustered_lowrank(b.items, b.dim, 100, 8, 1);
    // `edge`: the 10% of items with the largest first component.
    let mut firsts: Vec<f32> = items.iter().map(|v| v[0]).collect();
    firsts.sort_by(|a, b| b.total_cmp(a));
    let edge = firsts[items.len() / 10];
    for (i, v) in items.iter().enumerate() {
        let attrs = format!(
            r#"{{"genre":"g{}","rare":{},"edge":{}}}"#,
            i % 20,
            i % 100 == 0,
            v[0] > edge
        );
        c.set(&format!("i{i}"), v, Some(Attrs::parse(&attrs)?))?;
    }
    let users: Vec<UserInput> = clustered_lowrank(b.users, b.dim, 100, 8, 2)
        .into_iter()
        .map(|v| UserInput {
            vector_arg: Some(v),
            ..UserInput::default()
        })
        .collect();
    println!(
        "# filter bench: {} items x {}-d, genre g0..g19, a 1% `rare` flag and a 10% `edge` flag (the items with the largest first component: one region of the space, far from most queries), CANDIDATES 200, K=10, {} users per pass, {} interleaved passes, one thread",
        b.items, b.dim, b.users, b.repeats
    );
    let requests: Vec<Request> = WHERES
        .iter()
        .map(|w| -> Result<Request> {
            let mut req = Request::new(10);
            req.where_text = w.map(str::to_string);
            let mut req = req.validate()?;
            req.compile_filter()?;
            Ok(req)
        })
        .collect::<Result<_>>()?;
    // Per WHERE: µs per request of each pass, and the last pass's EXPLAIN sums.
    let mut per_request = vec![Vec::new(); requests.len()];
    let mut facts = vec![(0u64, 0usize, 0usize, ""); requests.len()];
    for _ in 0..b.repeats.max(1) {
        for (i, req) in requests.iter().enumerate() {
            let (mut retrieve, mut evals, mut visits, mut mode) = (0, 0, 0, "");
            let t = Instant::now();
            for u in &users {
                let r = recommend(&c, u, req, None)?;
                retrieve += r.explain.micros(Stage::Retrieve);
                evals += r.explain.filter_evaluated;
                visits += r.explain.walk_visits;
                mode = r.explain.filter_mode;
            }
            per_request[i].push(t.elapsed().as_secs_f64() * 1e6 / users.len() as f64);
            facts[i] = (retrieve, evals, visits, mode);
        }
    }
    println!("\n| WHERE | µs/request (median) | retrieval µs | walk visits | filter evaluations | mode |");
    println!("|---|---:|---:|---:|---:|---|");
    let n = users.len().max(1);
    for ((w, runs), (retrieve, evals, visits, mode)) in WHERES.iter().zip(per_request).zip(facts) {
        println!(
            "| {} | {:.0} | {} | {} | {} | {mode} |",
            w.map_or("(no WHERE)".to_string(), |w| format!("`{w}`")),
            median(runs),
            retrieve / n as u64,
            visits / n,
            evals / n,
        );
    }
    Ok(())
}
