//! `recsys simulate`: rehearses an A/B test before real traffic. Users of
//! a loaded dataset ask `RECSYS.RECOMMEND ... EXPERIMENT name`, click what
//! a simple click model says they would, and credit each click (and some
//! purchases) to the request with `RECSYS.EVENT ... REQUEST id`; then the
//! experiment's `RECSYS.EXPERIMENT.REPORT` is printed. The docs'
//! walkthrough (docs/experiments.md) runs it in a test.
//!
//! The click model knows nothing of variants: a user likes an item whose
//! `--like-attr` value (the shop's `category`) appears among the items the
//! user interacted with, in proportion to how often; an item without that
//! attribute is liked when the user interacted with it. The item at rank
//! r (from 0) is clicked with probability `p / sqrt(r + 1)`, where p is
//! `--like` times that share for a liked item and `--other` otherwise.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use redis::Value;
use serde::Serialize;

use crate::data::Dataset;
use crate::loader::Keys;
use recsys::rng::SplitMix;

#[derive(Args)]
pub struct Simulate {
    /// The dataset file (recsys import) that was loaded.
    pub data: PathBuf,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis: String,
    /// Key prefix: the catalog is PREFIX:items, users PREFIX:user:<id>.
    #[arg(long, default_value = "rs")]
    pub prefix: String,
    /// The experiment (RECSYS.EXPERIMENT.SET) to serve with.
    #[arg(long)]
    pub experiment: String,
    /// Requests to make (users drawn uniformly at random, with repeats).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Items per request (K).
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// The item attribute users like values of.
    #[arg(long, default_value = "category")]
    pub like_attr: String,
    /// Click probability of a liked item (times its share of the user's
    /// interactions), before the position discount.
    #[arg(long, default_value_t = 0.6)]
    pub like: f64,
    /// Click probability of an item the user does not like.
    #[arg(long, default_value_t = 0.01)]
    pub other: f64,
    /// Share of clicked requests that end in a purchase.
    #[arg(long, default_value_t = 0.2)]
    pub buy: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One variant's line of the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VariantReport {
    pub name: String,
    pub users: i64,
    pub impressions: i64,
    pub clicks: i64,
    pub purchases: i64,
    pub ctr: f64,
    pub ctr_low: f64,
    pub ctr_high: f64,
    /// Against the control (absent for the control itself).
    pub ctr_lift: Option<f64>,
    pub ctr_p_value: Option<f64>,
    pub ctr_significant: Option<bool>,
}

/// What a simulation did, and the experiment's report after it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub requests: usize,
    /// Requests served per variant, as the replies said.
    pub served: HashMap<String, usize>,
    pub clicks_sent: usize,
    pub purchases_sent: usize,
    pub variants: Vec<VariantReport>,
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        _ => String::new(),
    }
}

/// A map reply as pairs (RESP3 map or RESP2 flat array).
fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        Value::Array(a) => a
            .chunks_exact(2)
            .map(|p| (text(&p[0]), p[1].clone()))
            .collect(),
        _ => Vec::new(),
    }
}

fn field<'a>(m: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn number(m: &[(String, Value)], name: &str) -> Option<f64> {
    field(m, name).and_then(|v| text(v).parse().ok())
}

/// RECSYS.EXPERIMENT.REPORT, parsed.
pub fn report(
    c: &mut redis::Connection,
    catalog: &str,
    experiment: &str,
) -> Result<Vec<VariantReport>> {
    let v: Value = redis::cmd("RECSYS.EXPERIMENT.REPORT")
        .arg(catalog)
        .arg(experiment)
        .query(c)
        .context("RECSYS.EXPERIMENT.REPORT")?;
    let top = pairs(&v);
    let Some(Value::Array(variants)) = field(&top, "variants") else {
        bail!("the report has no variants");
    };
    Ok(variants
        .iter()
        .map(|v| {
            let m = pairs(v);
            let int = |n: &str| number(&m, n).unwrap_or(0.0) as i64;
            VariantReport {
                name: field(&m, "name").map(text).unwrap_or_default(),
                users: int("users"),
                impressions: int("impressions"),
                clicks: int("clicks"),
                purchases: int("purchases"),
                ctr: number(&m, "ctr").unwrap_or(0.0),
                ctr_low: number(&m, "ctr_low").unwrap_or(0.0),
                ctr_high: number(&m, "ctr_high").unwrap_or(1.0),
                ctr_lift: number(&m, "ctr_lift"),
                ctr_p_value: number(&m, "ctr_p_value"),
                ctr_significant: number(&m, "ctr_significant").map(|s| s > 0.0),
            }
        })
        .collect())
}

/// What each user likes: the share of their interactions per value of
/// `attr`, and the items they interacted with.
struct Tastes {
    shares: Vec<HashMap<String, f64>>,
    items: Vec<std::collections::HashSet<u32>>,
    value_of: HashMap<String, Option<String>>,
    index_of: HashMap<String, u32>,
}

impl Tastes {
    fn of(ds: &Dataset, attr: &str) -> Tastes {
        let value_of: HashMap<String, Option<String>> = ds
            .items
            .iter()
            .map(|it| {
                let v = serde_json::from_str::<serde_json::Value>(&it.attrs)
                    .ok()
                    .and_then(|j| j.get(attr).map(|x| x.to_string()));
                (it.id.clone(), v)
            })
            .collect();
        let mut shares = vec![HashMap::new(); ds.users.len()];
        let mut items = vec![std::collections::HashSet::new(); ds.users.len()];
        for i in &ds.interactions {
            let (u, it) = (i.user as usize, i.item as usize);
            items[u].insert(i.item);
            if let Some(Some(v)) = value_of.get(&ds.items[it].id) {
                *shares[u].entry(v.clone()).or_insert(0.0) += 1.0;
            }
        }
        for s in &mut shares {
            let total: f64 = s.values().sum();
            s.values_mut().for_each(|x| *x /= total.max(1.0));
        }
        let index_of = ds
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.id.clone(), i as u32))
            .collect();
        Tastes {
            shares,
            items,
            value_of,
            index_of,
        }
    }

    /// How much user `u` likes `item` (0..1).
    fn liking(&self, u: usize, item: &str) -> f64 {
        match self.value_of.get(item) {
            Some(Some(v)) => self.shares[u].get(v).copied().unwrap_or(0.0),
            _ => {
                let known = self
                    .index_of
                    .get(item)
                    .is_some_and(|i| self.items[u].contains(i));
                known as u8 as f64
            }
        }
    }
}

/// Runs the simulation (see the module doc) and returns the report.
pub fn simulate(c: &mut redis::Connection, ds: &Dataset, a: &Simulate) -> Result<Outcome> {
    if ds.users.is_empty() {
        bail!("the dataset has no users");
    }
    let keys = Keys {
        prefix: a.prefix.clone(),
    };
    let catalog = keys.catalog();
    let tastes = Tastes::of(ds, &a.like_attr);
    let mut rng = SplitMix::new(a.seed);
    let mut out = Outcome {
        requests: a.requests,
        served: HashMap::new(),
        clicks_sent: 0,
        purchases_sent: 0,
        variants: Vec::new(),
    };
    for _ in 0..a.requests {
        let u = rng.below(ds.users.len() as u64) as usize;
        let user = keys.user(&ds.users[u]);
        let v: Value = redis::cmd("RECSYS.RECOMMEND")
            .arg(&catalog)
            .arg(&user)
            .arg("K")
            .arg(a.k)
            .arg("EXPERIMENT")
            .arg(&a.experiment)
            .query(c)
            .context("RECSYS.RECOMMEND ... EXPERIMENT")?;
        let reply = pairs(&v);
        let request = field(&reply, "request").map(text).unwrap_or_default();
        let variant = field(&reply, "variant").map(text).unwrap_or_default();
        *out.served.entry(variant).or_default() += 1;
        let items: Vec<String> = match field(&reply, "items") {
            Some(Value::Array(ids)) => ids.iter().map(text).collect(),
            _ => Vec::new(),
        };
        let clicked = items.iter().enumerate().find(|(rank, id)| {
            let liking = tastes.liking(u, id);
            let p = if liking > 0.0 {
                a.like * liking
            } else {
                a.other
            };
            rng.uniform() < p / ((rank + 1) as f64).sqrt()
        });
        let Some((_, item)) = clicked else { continue };
        let mut event = |kind: &str| -> Result<()> {
            let _: i64 = redis::cmd("RECSYS.EVENT")
                .arg(&catalog)
                .arg(&user)
                .arg(item)
                .arg("TYPE")
                .arg(kind)
                .arg("REQUEST")
                .arg(&request)
                .query(c)
                .context("RECSYS.EVENT ... REQUEST")?;
            Ok(())
        };
        event("click")?;
        out.clicks_sent += 1;
        if rng.uniform() < a.buy {
            event("purchase")?;
            out.purchases_sent += 1;
        }
    }
    out.variants = report(c, &catalog, &a.experiment)?;
    Ok(out)
}

pub fn run(a: &Simulate) -> Result<()> {
    let ds = Dataset::load(&a.data)?;
    let mut c = redis::Client::open(a.redis.as_str())?
        .get_connection()
        .with_context(|| format!("connecting to {}", a.redis))?;
    let out = simulate(&mut c, &ds, a)?;
    println!(
        "{} requests, {} clicks and {} purchases credited to experiment '{}'",
        out.requests, out.clicks_sent, out.purchases_sent, a.experiment
    );
    println!(
        "{:<16} {:>7} {:>11} {:>7} {:>9} {:>17} {:>8} {:>9}  significant",
        "variant", "users", "impressions", "clicks", "CTR", "95% interval", "lift", "p"
    );
    for v in &out.variants {
        println!(
            "{:<16} {:>7} {:>11} {:>7} {:>9.4} [{:.4}, {:.4}] {:>8} {:>9}  {}",
            v.name,
            v.users,
            v.impressions,
            v.clicks,
            v.ctr,
            v.ctr_low,
            v.ctr_high,
            v.ctr_lift
                .map_or("control".into(), |l| format!("{:+.1}%", l * 100.0)),
            v.ctr_p_value.map_or(String::new(), |p| format!("{p:.2e}")),
            v.ctr_significant
                .map_or("", |s| if s { "yes" } else { "no" }),
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
