//! `recsys demo`: from interactions to recommendations in one command. On a
//! generated shop (or MovieLens 100K with `--movielens DIR`) it trains ALS,
//! starts its own redis-server with the module (unless `--redis URL`),
//! loads the catalog and users, measures quality through Redis next to
//! popularity, shows a few users' recommendations with titles and per-stage
//! timings, a WHERE filter, a WebAssembly plugin, the trained DLRM ranker
//! and cold start, then leaves
//! the server running for redis-cli (`--once` stops it).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use redis::Value;

use crate::data::generate::{shop, Shape};
use crate::data::{import, Dataset};
use crate::loader::{self, CatalogSettings, Install, Keys, RANKER};
use crate::server::RedisServer;
use crate::train::ranker::CANDIDATES;
use crate::train::Plan;
use crate::verbs::eval::evaluate;

/// Seconds the demo spends choosing settings on validation.
const DEMO_TUNE_SECONDS: u64 = 10;

#[derive(clap::Args, Debug, Clone)]
pub struct Demo {
    /// Use this Redis (with the module loaded) instead of starting one.
    #[arg(long)]
    pub redis: Option<String>,
    /// Run on MovieLens 100K (or MovieLens CSV) from this directory instead of a generated shop.
    #[arg(long)]
    pub movielens: Option<PathBuf>,
    /// Users of the generated shop.
    #[arg(long, default_value_t = Shape::default().users)]
    pub users: usize,
    /// Items of the generated shop.
    #[arg(long, default_value_t = Shape::default().items)]
    pub items: usize,
    /// Stop the server at the end instead of leaving it for redis-cli.
    #[arg(long)]
    pub once: bool,
    /// Compiled example plugins.
    #[arg(long, default_value = "plugins/dist")]
    pub plugins: PathBuf,
}

/// A reply as text lines, indented.
fn fmt(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => format!("{d}"),
        Value::Okay => "OK".into(),
        Value::Nil => "(nil)".into(),
        Value::Array(a) => a.iter().map(fmt).collect::<Vec<_>>().join(" "),
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| format!("{}={}", fmt(k), fmt(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// What the demo needs to print items: titles and a short attribute line.
struct Titles<'a> {
    by_id: HashMap<&'a str, usize>,
    ds: &'a Dataset,
    /// The attribute shown beside each title ("category", "genre").
    facet: &'static str,
}

impl Titles<'_> {
    fn line(&self, id: &str) -> String {
        match self.by_id.get(id) {
            Some(&i) => {
                let item = &self.ds.items[i];
                let attrs: serde_json::Value =
                    serde_json::from_str(&item.attrs).unwrap_or_default();
                let facet = attrs
                    .get(self.facet)
                    .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
                    .unwrap_or_default();
                let price = attrs
                    .get("price")
                    .and_then(|p| p.as_f64())
                    .map(|p| format!(" ${p:.2}"))
                    .unwrap_or_default();
                format!("{:<42} {facet}{price}", item.title)
            }
            None => id.to_string(),
        }
    }
}

/// Item ids with scores, best first.
type Scored = Vec<(String, f64)>;

/// A RECOMMEND with WITHSCORES and EXPLAIN: the (id, score) list and the
/// explain map.
fn recommend(
    c: &mut redis::Connection,
    keys: &Keys,
    user: &str,
    opts: &[&str],
) -> Result<(Scored, HashMap<String, String>)> {
    let v: Value = redis::cmd("RECSYS.RECOMMEND")
        .arg(keys.catalog())
        .arg(keys.user(user))
        .arg(opts)
        .arg("WITHSCORES")
        .arg("EXPLAIN")
        .query(c)?;
    let pairs = |v: &Value| -> Vec<(Value, Value)> {
        match v {
            Value::Map(m) => m.clone(),
            Value::Array(a) => a
                .chunks_exact(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect(),
            _ => Vec::new(),
        }
    };
    let top = pairs(&v);
    let mut items = Vec::new();
    let mut explain = HashMap::new();
    for (k, val) in top {
        match fmt(&k).as_str() {
            "items" => {
                for (id, s) in pairs(&val) {
                    items.push((fmt(&id), fmt(&s).parse().unwrap_or(0.0)));
                }
            }
            "explain" => {
                for (name, x) in pairs(&val) {
                    explain.insert(fmt(&name), fmt(&x));
                }
            }
            _ => {}
        }
    }
    Ok((items, explain))
}

fn print_recommendations(
    titles: &Titles,
    items: &[(String, f64)],
    explain: &HashMap<String, String>,
) {
    for (n, (id, score)) in items.iter().enumerate() {
        println!("   {:>2}. {}  ({score:.3})", n + 1, titles.line(id));
    }
    let g = |k: &str| explain.get(k).cloned().unwrap_or_default();
    println!(
        "   stages: user vector {} µs ({}, {} session items), retrieve+filter {} µs ({} candidates), rank {} µs, plugins {} µs, order {} µs",
        g("user_us"),
        g("user_vector"),
        g("session_items"),
        g("retrieve_us"),
        g("retrieved"),
        g("rank_us"),
        g("plugin_us"),
        g("order_us")
    );
}

/// Prints `> RECSYS.RECOMMEND catalog user opts...`, runs it with
/// WITHSCORES and EXPLAIN, and prints the items and stage timings.
fn show(
    c: &mut redis::Connection,
    keys: &Keys,
    titles: &Titles,
    user: &str,
    opts: &[&str],
) -> Result<()> {
    let shown: Vec<String> = opts
        .iter()
        .map(|o| {
            if o.contains(' ') {
                format!("'{o}'")
            } else {
                o.to_string()
            }
        })
        .collect();
    println!(
        " > RECSYS.RECOMMEND {} {} {} WITHSCORES EXPLAIN",
        keys.catalog(),
        keys.user(user),
        shown.join(" ")
    );
    let (items, explain) = recommend(c, keys, user, opts)?;
    print_recommendations(titles, &items, &explain);
    Ok(())
}

pub fn run(d: &Demo) -> Result<()> {
    let started = Instant::now();
    step("1. Data");
    let (ds, facet, where_expr) = match &d.movielens {
        Some(dir) => (
            import::movielens(dir)?,
            "genre",
            "year >= 1990 && genre != \"Drama\"",
        ),
        None => (
            shop(Shape {
                users: d.users,
                items: d.items,
                ..Shape::default()
            }),
            "category",
            "in_stock && price < 50",
        ),
    };
    println!("{}\n{}", ds.source, ds.summary());

    step("2. Train (settings chosen on each user's second-latest positive; the latest is held out, to measure quality)");
    let t = Instant::now();
    let plan = Plan {
        tune: Some(std::time::Duration::from_secs(DEMO_TUNE_SECONDS)),
        // The sequence tower trains for tens of seconds on a shop; the demo
        // keeps to the quick parts (`recsys train` trains it by default).
        tower: None,
        ..Plan::default()
    };
    let emb = crate::train::fit(&ds, &plan, |line| {
        if !line.starts_with("  tried") {
            println!("{line}");
        }
    })?;
    println!("trained in {:.2} s", t.elapsed().as_secs_f64());
    let settings = CatalogSettings {
        // The demo shows the ranker whatever its verdict.
        ranker: Install::Always,
        ..CatalogSettings::default()
    };

    step("3. Load into Redis");
    let _server;
    let (url, port) = match &d.redis {
        Some(u) => (u.clone(), None),
        None => {
            let s = RedisServer::start(&[], &[])
                .context("starting redis-server with the module (scripts/demo.sh builds and installs everything)")?;
            println!(
                "started redis-server on port {} with {}",
                s.port,
                s.module.display()
            );
            let u = (s.url(), Some(s.port));
            _server = s;
            u
        }
    };
    let mut c = redis::Client::open(url.as_str())?.get_connection()?;
    let keys = Keys {
        prefix: "demo".into(),
    };
    let report = loader::load(&mut c, &ds, &emb, &keys, &settings, true, |_, _, _| {})?;
    println!("{}", report.summary(&keys.catalog()));

    step("4. Quality, served through RECSYS.RECOMMEND (recall@10 / NDCG@10 of the held-out item)");
    evaluate(&mut c, &ds, &emb, &keys, &[])?.print();

    step("5. Recommendations for a few users");
    let titles = Titles {
        by_id: ds
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.id.as_str(), i))
            .collect(),
        ds: &ds,
        facet,
    };
    let split = emb.split(&ds);
    let active: Vec<usize> = (0..ds.users.len())
        .filter(|&u| split.train[u].len() >= 5)
        .step_by(97)
        .take(3)
        .collect();
    for &u in &active {
        let id = &ds.users[u];
        println!("\n user {id}: last items");
        for &i in split.train[u].iter().rev().take(3) {
            println!("      {}", titles.line(&ds.items[i as usize].id));
        }
        show(&mut c, &keys, &titles, id, &["K", "5", "EXCLUDE_SEEN"])?;
    }
    let first = &ds.users[active.first().copied().unwrap_or(0)];

    step("6. Business rules: a WHERE filter and diversity");
    show(
        &mut c,
        &keys,
        &titles,
        first,
        &[
            "K",
            "5",
            "EXCLUDE_SEEN",
            "WHERE",
            where_expr,
            "DIVERSITY",
            facet,
            "2",
        ],
    )?;

    step("7. A WebAssembly plugin (sandboxed, loaded at run time)");
    let plugin = d.plugins.join("max-per-category.wasm");
    match std::fs::read(&plugin) {
        Ok(bytes) => {
            redis::cmd("RECSYS.PLUGIN.LOAD")
                .arg("one-per-facet")
                .arg(bytes)
                .arg("REPLACE")
                .query::<()>(&mut c)?;
            let args = format!("{facet}:1");
            println!(" > RECSYS.PLUGIN.LOAD one-per-facet <max-per-category.wasm> REPLACE");
            show(
                &mut c,
                &keys,
                &titles,
                first,
                &[
                    "K",
                    "5",
                    "EXCLUDE_SEEN",
                    "CANDIDATES",
                    "300",
                    "FILTER",
                    "one-per-facet",
                    "ARGS",
                    &args,
                ],
            )?;
        }
        Err(_) => println!(
            " (skipped: {} not built; plugins/build.sh builds the example plugins)",
            plugin.display()
        ),
    }

    step("8. The trained ranker re-scores the candidates (RECSYS.MODEL.SET ... DLRM, loaded by recsys load)");
    show(
        &mut c,
        &keys,
        &titles,
        first,
        &[
            "K",
            "5",
            "EXCLUDE_SEEN",
            "CANDIDATES",
            &CANDIDATES.to_string(),
            "RANK",
            RANKER,
        ],
    )?;
    println!(
        "   (scores are the ranker's predicted probability; docs/benchmarks.md has its quality)"
    );

    step("9. Cold start: a user the catalog has never seen gets popular items");
    show(&mut c, &keys, &titles, "new", &["K", "5"])?;

    println!("\nDone in {:.1} s.", started.elapsed().as_secs_f64());
    if let Some(port) = port {
        if d.once {
            return Ok(());
        }
        println!(
            "\nThe server keeps running. Try:\n  redis-cli -p {port} RECSYS.INFO {cat}\n  redis-cli -p {port} RECSYS.RECOMMEND {cat} {user} K 5 EXCLUDE_SEEN WITHSCORES\n  redis-cli -p {port} HGETALL {user}\nPress Enter (or Ctrl-C) to stop it.",
            cat = keys.catalog(),
            user = keys.user(first)
        );
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }
    Ok(())
}
