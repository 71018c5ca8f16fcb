//! `recsys batch`: starts RECSYS.BATCH for every user of a loaded dataset
//! and follows it (RECSYS.BATCH.STATUS) with a progress bar until it ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::ProgressBar;
use redis::Value;

use crate::data::Dataset;
use crate::loader::Keys;

#[derive(Args)]
pub struct Batch {
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis: String,
    /// The key prefix `recsys load` used.
    #[arg(long, default_value = "rs")]
    pub prefix: String,
    /// Items per user.
    #[arg(long, short, default_value_t = 10)]
    pub k: usize,
    /// Lists are written at INTO + `{user key}` (the user key as it is when
    /// it has a hash tag).
    #[arg(long, default_value = "recs:")]
    pub into: String,
    /// The dataset file, to show progress against its number of users.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// More RECSYS.BATCH options, e.g. "EXCLUDE_SEEN TTL 86400".
    #[arg(long, default_value = "EXCLUDE_SEEN")]
    pub options: String,
}

/// Follows batch `id` until it is no longer running; returns its final
/// status map.
pub fn follow(
    con: &mut redis::Connection,
    id: i64,
    total: Option<u64>,
) -> Result<HashMap<String, String>> {
    let bar = match total {
        Some(n) => super::bar(n, "batch"),
        None => ProgressBar::new_spinner(),
    };
    loop {
        let v: Value = redis::cmd("RECSYS.BATCH.STATUS").arg(id).query(con)?;
        let status: HashMap<String, String> = match v {
            Value::Map(m) => m
                .into_iter()
                .filter_map(|(k, v)| {
                    Some((
                        redis::from_redis_value(&k).ok()?,
                        redis::from_redis_value(&v).ok()?,
                    ))
                })
                .collect(),
            Value::Array(a) => a
                .chunks_exact(2)
                .filter_map(|p| {
                    Some((
                        redis::from_redis_value(&p[0]).ok()?,
                        redis::from_redis_value(&p[1]).ok()?,
                    ))
                })
                .collect(),
            other => bail!("unexpected RECSYS.BATCH.STATUS reply {other:?}"),
        };
        let users: u64 = status
            .get("users")
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        bar.set_position(users);
        bar.set_message(format!(
            "batch: {} written, {} errors",
            status.get("written").map_or("0", String::as_str),
            status.get("errors").map_or("0", String::as_str)
        ));
        if status.get("state").map(String::as_str) != Some("running") {
            bar.finish_and_clear();
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(a: &Batch) -> Result<()> {
    let mut con = redis::Client::open(a.redis.as_str())?
        .get_connection()
        .with_context(|| format!("connecting to {}", a.redis))?;
    let keys = Keys {
        prefix: a.prefix.clone(),
    };
    let total = match &a.data {
        Some(p) => Some(Dataset::load(p)?.users.len() as u64),
        None => None,
    };
    let started = Instant::now();
    let reply: HashMap<String, String> = redis::cmd("RECSYS.BATCH")
        .arg(keys.catalog())
        .arg("MATCH")
        .arg(keys.user_pattern())
        .arg("K")
        .arg(a.k)
        .arg("INTO")
        .arg(&a.into)
        .arg(a.options.split_whitespace().collect::<Vec<_>>())
        .query(&mut con)
        .context("RECSYS.BATCH")?;
    let id: i64 = reply
        .get("id")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("RECSYS.BATCH replied without an id: {reply:?}"))?;
    let status = follow(&mut con, id, total)?;
    let g = |k: &str| status.get(k).cloned().unwrap_or_default();
    println!(
        "batch {id} {}: {} users (slots {}), {} lists written as '{}{{user}}', {} errors, {} denied, in {:.2} s{}",
        g("state"),
        g("users"),
        g("slots"),
        g("written"),
        a.into,
        g("errors"),
        g("denied"),
        started.elapsed().as_secs_f64(),
        match g("last_error").as_str() {
            "" => String::new(),
            e => format!(" (last error: {e})"),
        }
    );
    if g("state") != "done" {
        bail!("the batch did not finish: {}", g("state"));
    }
    Ok(())
}
