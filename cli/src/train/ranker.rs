//! The ranker `recsys train` adds to the embeddings: a DLRM (the model
//! RECSYS.MODEL.SET DLRM runs) over the retrieval score, the user's
//! features and the item's attributes, trained with candle and saved as
//! safetensors in the module's layout (`rank::dlrm`).
//!
//! Training data without leakage: each user's last [`LABELS_PER_USER`]
//! training positives are labels, a second ALS is trained on the positives
//! before them, and the
//! user's candidates are that ALS's top [`CANDIDATES`] for the same blended
//! query RECOMMEND computes (SESSION), excluding what they had seen. The
//! label (when retrieved) is the positive; [`NEGATIVES`] other candidates
//! are sampled as negatives. Features are assembled by the module's own
//! schema code over an in-process catalog, so training sees exactly the ids
//! serving computes.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use recsys::catalog::Catalog;
use recsys::features::attrs::Attrs;
use recsys::index::{IndexParams, Metric};
use recsys::pipeline::rank::RequestSignals;
use recsys::pipeline::request::UserInput;
use recsys::rank::dlrm::write_safetensors;
use recsys::rank::schema::{Batch, Schema};
use recsys::rng::SplitMix;
use recsys::user::Session;

use crate::data::{Dataset, Split};
use crate::eval::{query_for, top_k_scored};
use crate::train::als::{self, AlsParams, Csr, Factors};

/// Candidates per training user (and the CANDIDATES RECOMMEND ... RANK uses).
pub const CANDIDATES: usize = 50;
/// The last training positives of each user that serve as labels.
const LABELS_PER_USER: usize = 5;
/// Negatives sampled per positive.
const NEGATIVES: usize = 10;
/// Embedding width of the sparse features.
const EMB_DIM: usize = 8;
const BOTTOM: [usize; 2] = [16, EMB_DIM];
const TOP: [usize; 2] = [32, 1];
/// Values a categorical feature may take to get a VOCAB (else HASH).
const MAX_VOCAB: usize = 64;
/// Buckets of a HASH feature.
const HASH_BUCKETS: usize = 64;
/// Largest integer a feature may hold to be used as an id directly.
const MAX_INTEGER_ID: i64 = 4096;

/// Training settings of the ranker.
#[derive(Debug, Clone)]
pub struct RankerParams {
    /// Epochs at most (`recsys train` stops earlier when validation NDCG
    /// stops improving).
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch: usize,
    pub seed: u64,
    /// The features, in RECSYS.MODEL.SET's SCHEMA syntax (`None`: derived
    /// from the dataset by [`schema_for`]).
    pub schema: Option<String>,
}

impl Default for RankerParams {
    fn default() -> Self {
        RankerParams {
            epochs: 20,
            learning_rate: 0.01,
            batch: 256,
            seed: 1,
            schema: None,
        }
    }
}

/// A trained ranker: the SCHEMA tokens and the safetensors bytes.
#[derive(Debug, Clone)]
pub struct Ranker {
    pub schema: String,
    pub weights: Vec<u8>,
    pub examples: usize,
    pub final_loss: f32,
}

/// The SPARSE declaration for a feature with these text values (`None`:
/// not usable, e.g. free text).
fn sparse_decl(source: &str, values: &BTreeSet<String>, rows: usize) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let ints: Option<Vec<i64>> = values.iter().map(|v| v.parse::<i64>().ok()).collect();
    if let Some(ints) = ints {
        let max = *ints.iter().max()?;
        if ints.iter().all(|&i| i >= 0) && max < MAX_INTEGER_ID {
            return Some(format!("SPARSE {source} {}", max + 1));
        }
    }
    let token = |v: &String| !v.is_empty() && !v.contains(',') && !v.contains(char::is_whitespace);
    if values.len() <= MAX_VOCAB && values.iter().all(token) {
        // Id 0 ("~") stands for missing or unknown values.
        let vocab: Vec<&str> = std::iter::once("~")
            .chain(values.iter().map(String::as_str))
            .collect();
        return Some(format!(
            "SPARSE {source} {} VOCAB {}",
            vocab.len(),
            vocab.join(",")
        ));
    }
    // Nearly one value per row (titles, ids) carries nothing to learn.
    (values.len() * 2 < rows).then(|| format!("SPARSE {source} {HASH_BUCKETS} HASH"))
}

/// Signals the request computes that `recsys train` tries adding to the
/// derived schema, one at a time, on validation: the item's popularity,
/// its similarity to the user's latest items, the user's activity.
pub const SIGNALS: [&str; 3] = ["session", "activity", "popularity"];

/// The relative validation NDCG gain a signal must bring to be kept
/// (smaller differences are within what another seed changes).
pub const SIGNAL_MIN_GAIN: f64 = 0.005;

/// `schema` with `DENSE signal` after its first declaration (the score).
pub fn with_signal(schema: &str, signal: &str) -> String {
    match schema.find(" DENSE ").or_else(|| schema.find(" SPARSE ")) {
        Some(at) => format!("{} DENSE {signal}{}", &schema[..at], &schema[at..]),
        None => format!("{schema} DENSE {signal}"),
    }
}

/// The schema for a dataset: the retrieval score, then every user feature
/// and every scalar item attribute that is categorical or a small integer
/// (free text and real numbers are left out).
pub fn schema_for(ds: &Dataset) -> String {
    let mut decls = vec!["DENSE score".to_string()];
    let mut user_values: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for f in &ds.user_features {
        for (k, v) in f {
            user_values.entry(k).or_default().insert(v.clone());
        }
    }
    for (k, values) in &user_values {
        decls.extend(sparse_decl(&format!("user.{k}"), values, ds.users.len()));
    }
    let mut item_values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for item in &ds.items {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(&item.attrs) {
            for (k, v) in m {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Bool(b) => b.to_string(),
                    serde_json::Value::Number(n) if n.is_i64() => n.to_string(),
                    _ => continue,
                };
                item_values.entry(k).or_default().insert(text);
            }
        }
    }
    for (k, values) in &item_values {
        decls.extend(sparse_decl(&format!("item.{k}"), values, ds.items.len()));
    }
    decls.join(" ")
}

/// The DLRM's trainable tensors, in the module's layout.
struct Net {
    emb: Vec<Var>,
    bottom: Vec<(Var, Var)>,
    top: Vec<(Var, Var)>,
    /// Flat positions (i * v + j, j < i) of the interaction pairs.
    pairs: Tensor,
}

fn uniform(rng: &mut SplitMix, shape: &[usize], scale: f32, dev: &Device) -> Result<Var> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| (rng.uniform() as f32 * 2.0 - 1.0) * scale)
        .collect();
    Ok(Var::from_tensor(&Tensor::from_vec(data, shape, dev)?)?)
}

fn layers(
    rng: &mut SplitMix,
    mut input: usize,
    sizes: &[usize],
    dev: &Device,
) -> Result<Vec<(Var, Var)>> {
    let mut out = Vec::new();
    for &o in sizes {
        let scale = (6.0 / (input + o) as f32).sqrt();
        out.push((
            uniform(rng, &[o, input], scale, dev)?,
            Var::zeros(o, DType::F32, dev)?,
        ));
        input = o;
    }
    Ok(out)
}

impl Net {
    fn new(schema: &Schema, seed: u64, dev: &Device) -> Result<Net> {
        let mut rng = SplitMix::new(seed);
        let emb = schema
            .sparse
            .iter()
            .map(|f| uniform(&mut rng, &[f.cardinality as usize, EMB_DIM], 0.05, dev))
            .collect::<Result<Vec<_>>>()?;
        let dense = schema.dense.len();
        let bottom = if dense > 0 {
            layers(&mut rng, dense, &BOTTOM, dev)?
        } else {
            Vec::new()
        };
        let v = schema.sparse.len() + usize::from(dense > 0);
        let pairs: Vec<u32> = (0..v)
            .flat_map(|i| (0..i).map(move |j| (i * v + j) as u32))
            .collect();
        let top_in = if dense > 0 { EMB_DIM } else { 0 } + pairs.len();
        let top = layers(&mut rng, top_in, &TOP, dev)?;
        Ok(Net {
            emb,
            bottom,
            top,
            pairs: Tensor::new(pairs, dev)?,
        })
    }

    fn vars(&self) -> Vec<Var> {
        let mut v = self.emb.clone();
        for (w, b) in self.bottom.iter().chain(&self.top) {
            v.push(w.clone());
            v.push(b.clone());
        }
        v
    }

    /// Logits `[n]` for dense `[n, #dense]` and one id tensor `[n]` per
    /// sparse feature.
    fn forward(&self, dense: &Tensor, sparse: &[Tensor]) -> Result<Tensor> {
        let mut vectors = Vec::new();
        let mut x = None;
        if !self.bottom.is_empty() {
            let mut h = dense.clone();
            for (w, b) in &self.bottom {
                h = h.matmul(&w.t()?)?.broadcast_add(b)?.relu()?;
            }
            vectors.push(h.clone());
            x = Some(h);
        }
        for (table, ids) in self.emb.iter().zip(sparse) {
            vectors.push(table.index_select(ids, 0)?);
        }
        let t = Tensor::stack(&vectors, 1)?;
        let z = t.matmul(&t.transpose(1, 2)?)?.flatten_from(1)?;
        let z = z.index_select(&self.pairs, 1)?;
        let mut h = match x {
            Some(x) => Tensor::cat(&[&x, &z], 1)?,
            None => z,
        };
        for (n, (w, b)) in self.top.iter().enumerate() {
            h = h.matmul(&w.t()?)?.broadcast_add(b)?;
            if n + 1 < self.top.len() {
                h = h.relu()?;
            }
        }
        Ok(h.squeeze(D::Minus1)?)
    }

    fn safetensors(&self) -> Result<Vec<u8>> {
        let mut tensors = Vec::new();
        let mut put = |name: String, v: &Var| -> Result<()> {
            let t = v.as_tensor();
            tensors.push((name, t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?));
            Ok(())
        };
        for (i, e) in self.emb.iter().enumerate() {
            put(format!("emb.{i}"), e)?;
        }
        for (prefix, mlp) in [("bottom", &self.bottom), ("top", &self.top)] {
            for (j, (w, b)) in mlp.iter().enumerate() {
                put(format!("{prefix}.{j}.weight"), w)?;
                put(format!("{prefix}.{j}.bias"), b)?;
            }
        }
        Ok(write_safetensors(&tensors))
    }
}

/// Numerically stable mean binary cross-entropy of logits against labels.
fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let loss = ((logits.relu()? - (logits * labels)?)? + softplus)?;
    Ok(loss.mean_all()?)
}

/// Training rows: features, label.
struct Examples {
    batch: Batch,
    labels: Vec<f32>,
}

/// The time the in-process catalogs' popularity is counted at (and read
/// at): scores are then the plain counts, as right after `recsys load`.
const POPULARITY_EPOCH_MS: i64 = 0;

/// The catalog RECOMMEND would serve for `ds` with item vectors `factors`
/// (attributes and all), in this process, with each item's popularity the
/// number of `positives` (per user) naming it, as `recsys load` sets it;
/// and each item's slot in it.
pub fn in_process_catalog(
    ds: &Dataset,
    factors: &Factors,
    positives: &[Vec<u32>],
) -> Result<(Catalog, Vec<u32>)> {
    let mut params = IndexParams::new(factors.k);
    params.metric = Metric::Ip;
    let mut catalog = Catalog::new(params)?;
    for (i, item) in ds.items.iter().enumerate() {
        catalog.set(&item.id, factors.item(i), Some(Attrs::parse(&item.attrs)?))?;
    }
    let mut counts = vec![0usize; ds.items.len()];
    positives
        .iter()
        .flatten()
        .for_each(|&i| counts[i as usize] += 1);
    for (item, &n) in ds.items.iter().zip(&counts).filter(|(_, &n)| n > 0) {
        catalog.set_popularity(&item.id, POPULARITY_EPOCH_MS, n as f64)?;
    }
    let slots: Vec<u32> = ds
        .items
        .iter()
        .map(|it| catalog.slot_of(&it.id).context("item slot"))
        .collect::<Result<_>>()?;
    Ok((catalog, slots))
}

/// What RECOMMEND reads about user `u` whose positives are `history`
/// (oldest first) once `recsys load` wrote them: the features and the
/// latest [`crate::loader::RECENT`] items, newest first.
pub fn user_input(ds: &Dataset, u: usize, history: &[u32]) -> UserInput {
    UserInput {
        recent: history
            .iter()
            .rev()
            .take(crate::loader::RECENT)
            .map(|&i| ds.items[i as usize].id.clone())
            .collect(),
        features: ds.user_features[u]
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        now_ms: POPULARITY_EPOCH_MS,
        ..UserInput::default()
    }
}

/// Builds the training rows (see the module doc).
fn examples(
    ds: &Dataset,
    split: &Split,
    schema: &Schema,
    als_params: &AlsParams,
    session: Session,
    seed: u64,
) -> Result<Examples> {
    // Each user's last training positive is the label; the rest trains a
    // second ALS that never saw it.
    let mut prefix: Vec<Vec<u32>> = split.train.clone();
    let mut labels: Vec<Vec<u32>> = vec![Vec::new(); prefix.len()];
    for (u, items) in prefix.iter_mut().enumerate() {
        let n = LABELS_PER_USER.min(items.len().saturating_sub(2));
        labels[u] = items.split_off(items.len() - n);
    }
    let rows: Vec<Vec<(u32, f32)>> = prefix
        .iter()
        .map(|it| it.iter().map(|&i| (i, 1.0)).collect())
        .collect();
    let factors = als::train(&Csr::from_rows(&rows), ds.items.len(), als_params, |_| {});
    let (catalog, slots) = in_process_catalog(ds, &factors, &prefix)?;
    let mut rng = SplitMix::new(seed ^ 0x5A5A);
    let mut out = Batch {
        rows: 0,
        dense: Vec::new(),
        sparse: Vec::new(),
        external: Vec::new(),
    };
    let mut ys = Vec::new();
    for (u, label) in labels.iter().enumerate() {
        if label.is_empty() {
            continue;
        }
        let q = query_for(&factors, u, &prefix[u], session);
        let cands = top_k_scored(&factors, &q, &prefix[u], CANDIDATES);
        let mut picked = Vec::new();
        for c in cands.iter().filter(|c| label.contains(&c.0)) {
            picked.push((slots[c.0 as usize], c.1));
            ys.push(1.0);
        }
        if picked.is_empty() {
            continue;
        }
        let mut others: Vec<usize> = (0..cands.len())
            .filter(|&i| !label.contains(&cands[i].0))
            .collect();
        for n in 0..(NEGATIVES * picked.len()).min(others.len()) {
            let at = n + rng.below((others.len() - n) as u64) as usize;
            others.swap(n, at);
            let c = cands[others[n]];
            picked.push((slots[c.0 as usize], c.1));
            ys.push(0.0);
        }
        let user = user_input(ds, u, &prefix[u]);
        let signals = RequestSignals::new(&catalog, &user);
        let b = schema.assemble(&user.features, catalog.columns(), &signals, &picked);
        out.rows += b.rows;
        out.dense.extend(b.dense);
        out.sparse.extend(b.sparse);
    }
    Ok(Examples {
        batch: out,
        labels: ys,
    })
}

/// Trains the ranker for `ds` on the training positives of `split` (the
/// same split as the embeddings) for `p.epochs` epochs.
pub fn train(
    ds: &Dataset,
    split: &Split,
    als_params: &AlsParams,
    session: Session,
    p: &RankerParams,
) -> Result<Ranker> {
    train_with(ds, split, als_params, session, p, |_, _| Ok(true))
}

/// A ranker schema in RECSYS.MODEL.SET's SCHEMA syntax, parsed as the
/// module parses it.
pub fn parse_schema(text: &str) -> Result<Schema> {
    let tokens: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    Schema::parse(&tokens).map_err(|e| anyhow::anyhow!("ranker schema: {e}"))
}

/// [`train`], calling `after_epoch(epoch, weights)` after each epoch
/// (counted from 1) with that epoch's safetensors; training stops early
/// when it returns false.
pub fn train_with(
    ds: &Dataset,
    split: &Split,
    als_params: &AlsParams,
    session: Session,
    p: &RankerParams,
    mut after_epoch: impl FnMut(usize, &[u8]) -> Result<bool>,
) -> Result<Ranker> {
    let schema_text = p.schema.clone().unwrap_or_else(|| schema_for(ds));
    let schema = parse_schema(&schema_text)?;
    let ex = examples(ds, split, &schema, als_params, session, p.seed)?;
    let dev = Device::Cpu;
    let net = Net::new(&schema, p.seed, &dev)?;
    let mut opt = AdamW::new(
        net.vars(),
        ParamsAdamW {
            lr: p.learning_rate,
            weight_decay: 1e-4,
            ..ParamsAdamW::default()
        },
    )?;
    let (n, dw, sw) = (ex.batch.rows, schema.dense.len(), schema.sparse.len());
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix::new(p.seed);
    let mut final_loss = f32::NAN;
    let mut weights = net.safetensors()?;
    for epoch in 1..=p.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let (mut total, mut batches) = (0.0f32, 0);
        for chunk in order.chunks(p.batch.max(1)) {
            let rows = chunk.len();
            let dense: Vec<f32> = chunk
                .iter()
                .flat_map(|&r| ex.batch.dense[r * dw..(r + 1) * dw].to_vec())
                .collect();
            let sparse: Vec<Tensor> = (0..sw)
                .map(|j| {
                    let ids: Vec<u32> = chunk
                        .iter()
                        .map(|&r| ex.batch.sparse[r * sw + j] as u32)
                        .collect();
                    Tensor::new(ids, &dev)
                })
                .collect::<candle_core::Result<_>>()?;
            let labels: Vec<f32> = chunk.iter().map(|&r| ex.labels[r]).collect();
            let dense = Tensor::from_vec(dense, (rows, dw), &dev)?;
            let labels = Tensor::from_vec(labels, rows, &dev)?;
            let loss = bce_with_logits(&net.forward(&dense, &sparse)?, &labels)?;
            opt.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()?;
            batches += 1;
        }
        final_loss = total / batches.max(1) as f32;
        weights = net.safetensors()?;
        if !after_epoch(epoch, &weights)? {
            break;
        }
    }
    Ok(Ranker {
        schema: schema_text,
        weights,
        examples: n,
        final_loss,
    })
}

#[cfg(test)]
mod tests;
