//! Puts a dataset's trained artifacts into Redis, pipelined: the catalog
//! (item vectors and ATTRS through RECSYS.ITEM.MSET WITHATTRS, popularity
//! from the training positives, the default SESSION blend the model chose)
//! and one hash per user (`emb`, `recent`, `seen` and the user's features),
//! and the ranker when its verdict suggests it (RECSYS.MODEL.SET; with
//! `ranker_rows`, its embedding tables as row keys). Key names come
//! from one [`Keys`] so `load`, `eval`, `batch` and the demo agree.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use recsys::catalog::Catalog;
use recsys::index::{IndexParams, Metric};
use recsys::rank::rows::export::{export_tables, Table};
use recsys::user::SeenSet;
use recsys::vector::to_fp32_blob;
use redis::{Connection, Value};

use crate::data::Dataset;
use crate::train::Embeddings;

/// The ranker's model name in the catalog (RECOMMEND ... RANK ranker).
pub const RANKER: &str = "ranker";
/// The sequence tower's model name in the catalog (ROLE RECENT).
pub const SEQUENCE_MODEL: &str = "sequence";
/// Items per RECSYS.ITEM.MSET.
const ITEMS_PER_MSET: usize = 256;
/// Commands in flight per pipeline round trip.
const PIPELINE: usize = 8;
/// Users per pipeline round trip.
const USERS_PER_PIPE: usize = 500;
/// Recent items written per user (the module's default HISTORY).
pub const RECENT: usize = 50;

/// The key names of one loaded dataset.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn catalog(&self) -> String {
        format!("{}:items", self.prefix)
    }
    pub fn user(&self, id: &str) -> String {
        format!("{}:user:{id}", self.prefix)
    }
    /// The key prefix of the ranker's tables kept as row keys: row `id` of
    /// table `t` is `<prefix>:rows:<t>:<id>`.
    pub fn ranker_rows(&self) -> String {
        format!("{}:rows:", self.prefix)
    }
    /// BATCH's MATCH pattern for every user.
    pub fn user_pattern(&self) -> String {
        format!("{}:user:*", self.prefix)
    }
}

/// When a trained model (the ranker, the sequence tower) is used by the
/// catalog's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Install {
    /// When its verdict on validation says it beats what serves without it.
    #[default]
    Suggested,
    Always,
    Never,
}

/// How the catalog is built (its default SESSION blend comes from the
/// model's manifest).
#[derive(Debug, Clone, Copy)]
pub struct CatalogSettings {
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub ranker: Install,
    /// Whether requests blend the sequence tower in by default (the
    /// catalog's SEQUENCE weight: the one chosen on validation, or 0); the
    /// model is stored in the catalog either way, for `SEQUENCE w`.
    pub tower: Install,
    /// Whether the ranker's embedding tables go into row keys
    /// ([`Keys::ranker_rows`], SCHEMA ... ROWS) instead of its file.
    pub ranker_rows: bool,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        CatalogSettings {
            m: 16,
            ef_construction: 200,
            ef_search: 100,
            ranker: Install::default(),
            tower: Install::default(),
            ranker_rows: false,
        }
    }
}

impl CatalogSettings {
    /// Whether `emb`'s ranker (if any) goes into the catalog.
    pub fn installs_ranker(&self, emb: &Embeddings) -> bool {
        emb.ranker.is_some()
            && self
                .ranker
                .applies(emb.manifest.ranker.is_some_and(|v| v.suggested))
    }

    /// The catalog's default SEQUENCE weight for `emb`'s tower (0: not
    /// blended in unless a request asks); `None` without a tower.
    pub fn sequence_weight(&self, emb: &Embeddings) -> Option<f32> {
        emb.tower.as_ref()?;
        let verdict = emb.manifest.tower;
        let on = self.tower.applies(verdict.is_some_and(|v| v.suggested));
        Some(if on {
            verdict.map_or(1.0, |v| v.weight)
        } else {
            0.0
        })
    }
}

impl Install {
    /// Whether the model is used, given its verdict.
    pub fn applies(&self, suggested: bool) -> bool {
        match self {
            Install::Always => true,
            Install::Never => false,
            Install::Suggested => suggested,
        }
    }
}

/// What a load did, with the rates to compare.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub items: usize,
    pub users: usize,
    /// The whole catalog: create, items, popularity, ranker.
    pub catalog_seconds: f64,
    /// The items alone (RECSYS.ITEM.MSET: the graph being built).
    pub items_seconds: f64,
    pub users_seconds: f64,
}

impl LoadReport {
    /// Items inserted per second (the MSET phase).
    pub fn items_per_second(&self) -> f64 {
        self.items as f64 / self.items_seconds.max(1e-9)
    }

    /// One line for people: what was loaded, how long it took.
    pub fn summary(&self, catalog: &str) -> String {
        format!(
            "{catalog}: {} items (vectors + attributes) in {:.2} s, {:.0} items/s inserted; catalog with popularity and models {:.2} s; {} user hashes (emb, recent, seen, features) in {:.2} s",
            self.items,
            self.items_seconds,
            self.items_per_second(),
            self.catalog_seconds,
            self.users,
            self.users_seconds
        )
    }
}

/// Checks every reply of a pipeline; the first error fails the load.
fn check_replies(replies: &[Value], what: &str) -> Result<()> {
    for r in replies {
        if let Value::ServerError(e) = r {
            bail!("{what}: {}", e.details().unwrap_or("error"));
        }
    }
    Ok(())
}

/// Sends `cmds` in one round trip and checks the replies.
fn send(con: &mut Connection, cmds: &[redis::Cmd], what: &str) -> Result<()> {
    let mut pipe = redis::pipe();
    for c in cmds {
        pipe.add_command(c.clone());
    }
    let replies: Vec<Value> = pipe.query(con).with_context(|| what.to_string())?;
    check_replies(&replies, what)
}

/// Rows written per pipeline round trip.
const ROWS_PER_PIPE: usize = 2000;

/// Hands `send` one pipeline of SETs per [`ROWS_PER_PIPE`] rows of
/// `tables` (the ranker's here, `recsys bench hps`'s over a cluster).
pub fn send_row_sets(
    tables: &[Table],
    mut send: impl FnMut(&[redis::Cmd]) -> Result<()>,
) -> Result<()> {
    let mut cmds = Vec::with_capacity(ROWS_PER_PIPE);
    for (key, row) in tables.iter().flat_map(|t| t.entries()) {
        let mut c = redis::cmd("SET");
        c.arg(key).arg(row);
        cmds.push(c);
        if cmds.len() == ROWS_PER_PIPE {
            send(&cmds)?;
            cmds.clear();
        }
    }
    if cmds.is_empty() {
        return Ok(());
    }
    send(&cmds)
}

/// Writes every embedding table of the ranker (`weights`, `schema`) as row
/// keys under `prefix` (SET, pipelined) and returns the file and schema
/// that read them there.
fn write_ranker_rows(
    con: &mut Connection,
    weights: &[u8],
    schema: &[String],
    prefix: &str,
) -> Result<(Vec<u8>, Vec<String>)> {
    let out = export_tables(weights, schema, prefix).map_err(anyhow::Error::msg)?;
    send_row_sets(&out.tables, |cmds| {
        send(con, cmds, "SET of the ranker's rows")
    })?;
    Ok((out.weights, out.schema))
}

/// Deletes the row keys an earlier load wrote for its ranker
/// ([`Keys::ranker_rows`]), so a replaced ranker leaves none behind.
fn delete_ranker_rows(con: &mut Connection, keys: &Keys) -> Result<usize> {
    // The prefix is the user's: its glob characters match only themselves.
    let mut pattern = String::new();
    for ch in keys.ranker_rows().chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('*');
    // A cursor loop rather than the crate's SCAN iterator, which holds the
    // connection: each batch found is deleted before the next is asked for.
    let (mut cursor, mut deleted) = (0u64, 0);
    loop {
        let (next, found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(ROWS_PER_PIPE)
            .query(con)
            .context("SCAN for the ranker's rows")?;
        if !found.is_empty() {
            deleted += redis::cmd("UNLINK").arg(&found).query::<usize>(con)?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// Loads the catalog and the users; `replace` deletes an existing catalog
/// (and the ranker rows an earlier load wrote) first (else it is an
/// error). `progress(done, total)` follows the items
/// then the users.
pub fn load(
    con: &mut Connection,
    ds: &Dataset,
    emb: &Embeddings,
    keys: &Keys,
    settings: &CatalogSettings,
    replace: bool,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<LoadReport> {
    emb.check_matches(ds)?;
    let f = &emb.factors;
    let split = emb.split(ds);
    let cat = keys.catalog();
    let exists: bool = redis::cmd("EXISTS").arg(&cat).query(con)?;
    if exists && !replace {
        bail!("key '{cat}' exists (pass --replace to load over it)");
    }
    let started = Instant::now();
    if exists {
        redis::cmd("DEL").arg(&cat).query::<()>(con)?;
        delete_ranker_rows(con, keys)?;
    }
    redis::cmd("RECSYS.CREATE")
        .arg(&cat)
        .arg("DIM")
        .arg(f.k)
        .arg("METRIC")
        .arg("IP")
        .arg("M")
        .arg(settings.m)
        .arg("EF_CONSTRUCTION")
        .arg(settings.ef_construction)
        .arg("EF_SEARCH")
        .arg(settings.ef_search)
        .arg("SESSION")
        .arg(emb.manifest.session.items)
        .arg(emb.manifest.session.weight)
        .query::<()>(con)
        .context("RECSYS.CREATE")?;
    let items_started = Instant::now();
    let mut batch = Vec::with_capacity(PIPELINE);
    let chunks: Vec<std::ops::Range<usize>> = (0..ds.items.len())
        .step_by(ITEMS_PER_MSET)
        .map(|s| s..(s + ITEMS_PER_MSET).min(ds.items.len()))
        .collect();
    for (n, range) in chunks.iter().enumerate() {
        let mut c = redis::cmd("RECSYS.ITEM.MSET");
        c.arg(&cat).arg("WITHATTRS");
        for i in range.clone() {
            let item = &ds.items[i];
            c.arg(&item.id)
                .arg(to_fp32_blob(f.item(i)))
                .arg(&item.attrs);
        }
        batch.push(c);
        if batch.len() == PIPELINE || n + 1 == chunks.len() {
            send(con, &batch, "RECSYS.ITEM.MSET")?;
            batch.clear();
            progress("items", range.end, ds.items.len());
        }
    }
    let items_seconds = items_started.elapsed().as_secs_f64();
    // Popularity: training positives per item, at one epoch (cold start).
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for items in &split.train {
        for &i in items {
            *counts.entry(i).or_default() += 1;
        }
    }
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut pairs: Vec<(u32, usize)> = counts.into_iter().collect();
    pairs.sort_unstable();
    for chunk in pairs.chunks(1000) {
        let mut c = redis::cmd("RECSYS.POPULARITY.SET");
        c.arg(&cat).arg("EPOCH").arg(epoch);
        for &(i, n) in chunk {
            c.arg(&ds.items[i as usize].id).arg(n);
        }
        send(con, &[c], "RECSYS.POPULARITY.SET")?;
    }
    if let Some(r) = emb
        .ranker
        .as_ref()
        .filter(|_| settings.installs_ranker(emb))
    {
        let schema: Vec<String> = r.schema.split_whitespace().map(str::to_string).collect();
        let (weights, schema) = match settings.ranker_rows {
            false => (Cow::Borrowed(&r.weights[..]), schema),
            true => {
                let (w, s) = write_ranker_rows(con, &r.weights, &schema, &keys.ranker_rows())?;
                (Cow::Owned(w), s)
            }
        };
        redis::cmd("RECSYS.MODEL.SET")
            .arg(&cat)
            .arg(RANKER)
            .arg("DLRM")
            .arg(&weights)
            .arg("SCHEMA")
            .arg(&schema)
            .query::<()>(con)
            .context("RECSYS.MODEL.SET of the ranker")?;
    }
    if let (Some(tower), Some(weight)) = (&emb.tower, settings.sequence_weight(emb)) {
        redis::cmd("RECSYS.MODEL.SET")
            .arg(&cat)
            .arg(SEQUENCE_MODEL)
            .arg("SEQUENCE")
            .arg(tower)
            .query::<()>(con)
            .context("RECSYS.MODEL.SET of the sequence tower")?;
        redis::cmd("RECSYS.ALTER")
            .arg(&cat)
            .arg("SEQUENCE")
            .arg(weight)
            .query::<()>(con)
            .context("RECSYS.ALTER ... SEQUENCE")?;
    }
    let catalog_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut batch = Vec::with_capacity(USERS_PER_PIPE);
    for (u, id) in ds.users.iter().enumerate() {
        let train = &split.train[u];
        let recent: Vec<&str> = train
            .iter()
            .rev()
            .take(RECENT)
            .map(|&i| ds.items[i as usize].id.as_str())
            .collect();
        let seen = SeenSet::from_ids(train.iter().map(|&i| ds.items[i as usize].id.as_str()));
        let key = keys.user(id);
        let mut del = redis::cmd("DEL");
        del.arg(&key);
        let mut c = redis::cmd("HSET");
        c.arg(&key)
            .arg("emb")
            .arg(to_fp32_blob(f.user(u)))
            .arg("recent")
            .arg(serde_json::to_string(&recent)?)
            .arg("seen")
            .arg(seen.to_text());
        for (name, value) in &ds.user_features[u] {
            c.arg(name).arg(value);
        }
        batch.push(del);
        batch.push(c);
        if batch.len() >= 2 * USERS_PER_PIPE || u + 1 == ds.users.len() {
            send(con, &batch, "HSET of the user hashes")?;
            batch.clear();
            progress("users", u + 1, ds.users.len());
        }
    }
    Ok(LoadReport {
        items: ds.items.len(),
        users: ds.users.len(),
        catalog_seconds,
        items_seconds,
        users_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Builds the same catalog in this process (no Redis) and returns items per
/// second: the bound a load through Redis is compared with.
pub fn in_process_build_rate(
    ds: &Dataset,
    emb: &Embeddings,
    settings: &CatalogSettings,
) -> Result<f64> {
    let f = &emb.factors;
    let mut params = IndexParams::new(f.k);
    params.metric = Metric::Ip;
    params.m = settings.m;
    params.ef_construction = settings.ef_construction;
    params.ef_search = settings.ef_search;
    let mut c = Catalog::new(params)?;
    let started = Instant::now();
    for (i, item) in ds.items.iter().enumerate() {
        let attrs = recsys::features::attrs::Attrs::parse(&item.attrs)?;
        c.set(&item.id, f.item(i), Some(attrs))?;
    }
    Ok(ds.items.len() as f64 / started.elapsed().as_secs_f64().max(1e-9))
}
