//! `recsys eval`: the quality protocol ([`crate::eval`]) served through
//! Redis with RECSYS.RECOMMEND, next to the popularity baseline and the
//! exact in-process scores of the same embeddings, as a table (and JSON).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use super::Served;
use crate::data::{Dataset, Split};
use recsys::user::Session;

use crate::eval::{self, Metrics, Scorer};
use crate::loader::{Keys, RANKER};
use crate::train::ranker::CANDIDATES;
use crate::train::Embeddings;

#[derive(Args)]
pub struct Eval {
    #[command(flatten)]
    pub target: Served,
    /// Extra RECOMMEND options for the served row (e.g. "CANDIDATES 400").
    #[arg(long, default_value = "")]
    pub options: String,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub how: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub k: usize,
    pub rows: Vec<Row>,
    /// Mean RECOMMEND time per user through Redis (pipelined), microseconds.
    pub served_us_per_user: f64,
}

impl Report {
    pub fn row(&self, name: &str) -> Option<&Metrics> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .map(|r| &r.metrics)
    }

    /// The rows as a Markdown table.
    pub fn print_table(&self) {
        println!("| method | how | recall@{} | NDCG@{} |", self.k, self.k);
        println!("|---|---|---:|---:|");
        for r in &self.rows {
            println!(
                "| {} | {} | {:.4} | {:.4} |",
                r.name, r.how, r.metrics.recall, r.metrics.ndcg
            );
        }
    }

    pub fn print(&self) {
        println!(
            "{} — recall@{k} / NDCG@{k}, {} users",
            self.dataset,
            self.rows[0].metrics.users,
            k = self.k
        );
        self.print_table();
        println!(
            "served: {:.0} µs per RECOMMEND (pipelined)",
            self.served_us_per_user
        );
    }
}

/// RECOMMEND for every evaluated user through Redis; `extra` options are
/// appended.
pub fn served(
    con: &mut redis::Connection,
    ds: &Dataset,
    split: &Split,
    keys: &Keys,
    k: usize,
    extra: &[String],
) -> Result<(Metrics, f64)> {
    let by_id: HashMap<&str, u32> = ds
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i as u32))
        .collect();
    let users: Vec<(usize, u32)> = split.evaluated().collect();
    let mut scorer = Scorer::default();
    let started = Instant::now();
    for chunk in users.chunks(256) {
        let mut pipe = redis::pipe();
        for &(u, _) in chunk {
            pipe.cmd("RECSYS.RECOMMEND")
                .arg(keys.catalog())
                .arg(keys.user(&ds.users[u]))
                .arg("K")
                .arg(k)
                .arg("EXCLUDE_SEEN")
                .arg(extra);
        }
        let lists: Vec<Vec<String>> = pipe.query(con).context("RECSYS.RECOMMEND")?;
        for (&(_, held), list) in chunk.iter().zip(lists) {
            let list: Vec<u32> = list
                .iter()
                .filter_map(|id| by_id.get(id.as_str()).copied())
                .collect();
            scorer.add(&list, held);
        }
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / users.len().max(1) as f64;
    Ok((scorer.metrics(), us))
}

/// Runs the protocol: popularity and exact in-process ALS rows, then the
/// served rows (the catalog's default SESSION, and without it).
pub fn evaluate(
    con: &mut redis::Connection,
    ds: &Dataset,
    emb: &Embeddings,
    keys: &Keys,
    extra: &[String],
) -> Result<Report> {
    if !emb.hold_out {
        bail!("the model was trained on every positive: train with --holdout to evaluate");
    }
    emb.check_matches(ds)?;
    let k = 10;
    let split = Split::new(ds, true);
    let session: String = redis::cmd("RECSYS.INFO")
        .arg(keys.catalog())
        .query::<HashMap<String, redis::Value>>(con)
        .ok()
        .and_then(|m| {
            m.get("session")
                .and_then(|v| redis::from_redis_value::<String>(v).ok())
        })
        .unwrap_or_else(|| "off".into());
    let blend = session
        .split_once(' ')
        .and_then(|(n, w)| Session::new(n.parse().ok()?, w.parse().ok()?).ok());
    let mut rows = vec![Row {
        name: "popularity".into(),
        how: "in-process, training positives counted".into(),
        metrics: eval::popularity(&split, ds.items.len(), k),
    }];
    rows.push(Row {
        name: "ALS".into(),
        how: "in-process, exact".into(),
        metrics: eval::embeddings(&emb.factors, &split, Session::new(0, 0.0)?, k),
    });
    if let Some(b) = blend {
        rows.push(Row {
            name: format!("ALS + SESSION {session}"),
            how: "in-process, exact".into(),
            metrics: eval::embeddings(&emb.factors, &split, b, k),
        });
    }
    let mut plain = extra.to_vec();
    plain.extend(["SESSION".into(), "0".into(), "0".into()]);
    let (m, _) = served(con, ds, &split, keys, k, &plain)?;
    rows.push(Row {
        name: "ALS".into(),
        how: "RECSYS.RECOMMEND ... EXCLUDE_SEEN SESSION 0 0".into(),
        metrics: m,
    });
    let (m, us) = served(con, ds, &split, keys, k, extra)?;
    rows.push(Row {
        name: format!("ALS + SESSION {session}"),
        how: "RECSYS.RECOMMEND ... EXCLUDE_SEEN (catalog default SESSION)".into(),
        metrics: m,
    });
    if emb.ranker.is_some() {
        let mut ranked = extra.to_vec();
        ranked.extend(["CANDIDATES", &CANDIDATES.to_string(), "RANK", RANKER].map(str::to_string));
        let (m, _) = served(con, ds, &split, keys, k, &ranked)?;
        rows.push(Row {
            name: format!("ALS + SESSION {session} + DLRM ranker"),
            how: format!("RECSYS.RECOMMEND ... EXCLUDE_SEEN CANDIDATES {CANDIDATES} RANK {RANKER}"),
            metrics: m,
        });
    }
    Ok(Report {
        dataset: ds.source.clone(),
        k,
        rows,
        served_us_per_user: us,
    })
}

pub fn run(a: &Eval) -> Result<()> {
    let (ds, emb, mut con) = a.target.open()?;
    let keys = a.target.keys();
    let extra: Vec<String> = a.options.split_whitespace().map(str::to_string).collect();
    let report = evaluate(&mut con, &ds, &emb, &keys, &extra)?;
    report.print();
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
