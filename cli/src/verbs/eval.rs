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
use crate::data::{Dataset, Split, Stage};
use recsys::user::Session;

use crate::eval::{self, Metrics, Scorer, K};
use crate::loader::{Keys, RANKER, SEQUENCE_MODEL};
use crate::train::ranker::CANDIDATES;
use crate::train::Embeddings;
use recsys::rank::sequence::SequenceTower;

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
    /// Served rows: RECOMMEND time per user through Redis (pipelined), µs.
    pub us_per_user: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub k: usize,
    pub rows: Vec<Row>,
    /// What was chosen on validation (never on these test items).
    pub chosen: Vec<String>,
    /// Evaluated users whose test item has the time of their latest
    /// training positive (the input line decided).
    pub tied: usize,
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
        println!(
            "| method | how | recall@{} | NDCG@{} | µs per user |",
            self.k, self.k
        );
        println!("|---|---|---:|---:|---:|");
        for r in &self.rows {
            println!(
                "| {} | {} | {:.4} | {:.4} | {} |",
                r.name,
                r.how,
                r.metrics.recall,
                r.metrics.ndcg,
                r.us_per_user.map_or("-".into(), |us| format!("{us:.0}"))
            );
        }
    }

    pub fn print(&self) {
        println!(
            "{} — recall@{k} / NDCG@{k} of each user's test item, {} users ({} of them: test item at the same second as their latest training positive)",
            self.dataset,
            self.rows[0].metrics.users,
            self.tied,
            k = self.k
        );
        for line in &self.chosen {
            println!("{line}");
        }
        self.print_table();
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

/// What a served request blends into the user vector: the SESSION blend
/// and the sequence tower's weight (0: off).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Blend {
    session: Option<Session>,
    sequence: f32,
}

impl Blend {
    fn label(&self) -> String {
        let mut label = "ALS".to_string();
        if let Some(s) = self.session {
            label += &format!(" + SESSION {} {}", s.items, s.weight);
        }
        if self.sequence > 0.0 {
            label += &format!(" + sequence x {}", self.sequence);
        }
        label
    }
}

/// The value after option `name` in `extra`, parsed.
fn option_value<T: std::str::FromStr>(extra: &[String], name: &str, nth: usize) -> Option<T> {
    let at = extra.iter().position(|o| o.eq_ignore_ascii_case(name))?;
    extra.get(at + 1 + nth)?.parse().ok()
}

/// The blend a request with `extra` options runs with (what they name,
/// else the catalog's defaults), and whether the catalog stores the
/// sequence model.
fn served_blend(con: &mut redis::Connection, catalog: &str, extra: &[String]) -> (Blend, bool) {
    let info: HashMap<String, redis::Value> = redis::cmd("RECSYS.INFO")
        .arg(catalog)
        .query(con)
        .unwrap_or_default();
    let field = |name: &str| -> Option<String> { redis::from_redis_value(info.get(name)?).ok() };
    let session = match (
        option_value(extra, "SESSION", 0),
        option_value(extra, "SESSION", 1),
    ) {
        (Some(n), Some(w)) => Session::new(n, w).ok(),
        _ => field("session").and_then(|t| {
            let (n, w) = t.split_once(' ')?;
            Session::new(n.parse().ok()?, w.parse().ok()?).ok()
        }),
    };
    let has_model = redis::cmd("RECSYS.MODEL.INFO")
        .arg(catalog)
        .arg(SEQUENCE_MODEL)
        .query::<redis::Value>(con)
        .is_ok();
    let sequence = if has_model {
        option_value(extra, "SEQUENCE", 0)
            .or_else(|| field("sequence")?.parse().ok())
            .unwrap_or(0.0)
    } else {
        0.0
    };
    let blend = Blend {
        session: session.filter(Session::is_on),
        sequence,
    };
    (blend, has_model)
}

/// What the model chose on validation, a line each.
pub fn chosen_on_validation(emb: &Embeddings) -> Vec<String> {
    let m = &emb.manifest;
    let mut lines = vec![format!("protocol: {}", m.protocol.describe())];
    match &m.tuning {
        Some(t) => lines.push(t.describe()),
        None => lines.push(format!(
            "ALS factors {}, alpha {}, regularization {}, SESSION {} {}: as given (not tuned)",
            m.als.factors, m.als.alpha, m.als.regularization, m.session.items, m.session.weight
        )),
    }
    if let Some(v) = &m.ranker {
        lines.push(format!("ranker: {}", v.describe()));
    }
    if let Some(v) = &m.tower {
        lines.push(v.describe());
    }
    lines
}

/// Runs the protocol on the test items: popularity, then each blend
/// (plain ALS, SESSION alone, the blend requests get, the sequence tower
/// when the default leaves it out) exact in-process and served, then the
/// ranker when the catalog has it.
pub fn evaluate(
    con: &mut redis::Connection,
    ds: &Dataset,
    emb: &Embeddings,
    keys: &Keys,
    extra: &[String],
) -> Result<Report> {
    if emb.manifest.stage != Stage::Test {
        bail!("the model was trained on every positive: train with --holdout to evaluate");
    }
    emb.check_matches(ds)?;
    let split = emb.split(ds);
    let (blend, stored) = served_blend(con, &keys.catalog(), extra);
    let tower = match &emb.tower {
        Some(bytes) => Some(
            SequenceTower::from_safetensors(bytes, emb.factors.k).map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let f = &emb.factors;
    // The exact in-process figure of a blend (None: it needs a tower this
    // model directory does not have).
    let exact = |b: Blend| -> Option<Metrics> {
        let sequence = match (&tower, b.sequence > 0.0) {
            (Some(t), true) => Some((t, b.sequence)),
            (None, true) => return None,
            (_, false) => None,
        };
        let session = b.session.unwrap_or(Session {
            items: 0,
            weight: 0.0,
        });
        Some(eval::with_queries(f, &split, K, |u, history| {
            eval::query_with(f, u, history, session, sequence)
        }))
    };
    let mut rows = vec![Row {
        name: "popularity".into(),
        how: "in-process, training positives counted".into(),
        metrics: eval::popularity(&split, ds.items.len(), K),
        us_per_user: None,
    }];
    // Each blend with the RECOMMEND options that serve it: none at all,
    // SESSION alone when the default adds the tower, the default (or what
    // `extra` names), and the tower at its validation weight when the
    // default leaves it out (the catalog stores it either way).
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let als = Blend {
        session: None,
        sequence: 0.0,
    };
    let mut blends = Vec::new();
    if blend != als {
        blends.push((als, words(&["SESSION", "0", "0", "SEQUENCE", "0"])));
    }
    if blend.session.is_some() && blend.sequence > 0.0 {
        let session_only = Blend {
            sequence: 0.0,
            ..blend
        };
        blends.push((session_only, words(&["SEQUENCE", "0"])));
    }
    blends.push((blend, Vec::new()));
    if let Some(v) = emb
        .manifest
        .tower
        .filter(|_| blend.sequence == 0.0 && stored)
    {
        let towered = Blend {
            sequence: v.weight,
            ..blend
        };
        blends.push((towered, words(&["SEQUENCE", &v.weight.to_string()])));
    }
    for (b, _) in &blends {
        if let Some(metrics) = exact(*b) {
            rows.push(Row {
                name: b.label(),
                how: "in-process, exact".into(),
                metrics,
                us_per_user: None,
            });
        }
    }
    for (b, options) in &blends {
        let mut all = extra.to_vec();
        all.extend_from_slice(options);
        let (m, us) = served(con, ds, &split, keys, K, &all)?;
        let shown = if all.is_empty() {
            "(catalog defaults)".to_string()
        } else {
            all.join(" ")
        };
        rows.push(Row {
            name: b.label(),
            how: format!("RECSYS.RECOMMEND ... EXCLUDE_SEEN {shown}"),
            metrics: m,
            us_per_user: Some(us),
        });
    }
    // The ranker learned from the SESSION blend's candidates and scores
    // (the tower is trained on the final item vectors, not on the ones the
    // ranker's examples come from): it is served over that blend.
    let label = Blend {
        sequence: 0.0,
        ..blend
    }
    .label();
    let has_ranker = redis::cmd("RECSYS.MODEL.INFO")
        .arg(keys.catalog())
        .arg(RANKER)
        .query::<redis::Value>(con)
        .is_ok();
    if has_ranker {
        let mut ranked = extra.to_vec();
        ranked.extend(
            [
                "SEQUENCE",
                "0",
                "CANDIDATES",
                &CANDIDATES.to_string(),
                "RANK",
                RANKER,
            ]
            .map(str::to_string),
        );
        let (m, us) = served(con, ds, &split, keys, K, &ranked)?;
        rows.push(Row {
            name: format!("{label} + DLRM ranker"),
            how: format!("RECSYS.RECOMMEND ... EXCLUDE_SEEN {}", ranked.join(" ")),
            metrics: m,
            us_per_user: Some(us),
        });
    }
    Ok(Report {
        dataset: ds.source.clone(),
        k: K,
        rows,
        chosen: chosen_on_validation(emb),
        tied: split.tied.len(),
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
