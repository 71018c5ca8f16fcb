//! The sequence tower (`recsys::rank::sequence`, where its equations are)
//! trained with candle: every training positive after a user's first is a
//! target, its input the user's earlier positives (newest first, at most
//! `positions`) as ALS item vectors; full softmax over the catalog's item
//! vectors (fixed: the tower learns to query the space the index serves),
//! AdamW. Saved as safetensors that the module's native forward reads.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use recsys::rank::dlrm::write_safetensors;
use recsys::rank::sequence::SequenceTower;
use recsys::rng::SplitMix;
use serde::{Deserialize, Serialize};

use super::als::Factors;
use crate::data::Split;

/// Training settings of the tower.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TowerParams {
    pub hidden: usize,
    pub feed_forward: usize,
    /// Most recent items read.
    pub positions: usize,
    /// Epochs at most (validation stops it earlier).
    pub epochs: usize,
    /// Targets per user, the latest ones (bounds the training time).
    pub targets_per_user: usize,
    pub learning_rate: f64,
    pub batch: usize,
    pub seed: u64,
}

impl Default for TowerParams {
    fn default() -> Self {
        TowerParams {
            hidden: 64,
            feed_forward: 128,
            positions: 20,
            epochs: 8,
            targets_per_user: 40,
            learning_rate: 0.003,
            batch: 256,
            seed: 1,
        }
    }
}

/// Weights of the tower's query in the blend `unit(user) + weight x
/// unit(tower)` tried on validation.
pub const BLEND_WEIGHTS: [f32; 6] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

/// The tower's verdict on validation (kept in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TowerVerdict {
    pub params: TowerParams,
    /// Epochs the saved tower was trained for (the best on validation).
    pub epochs: usize,
    /// The blend weight chosen on validation.
    pub weight: f32,
    pub validation_users: usize,
    /// Validation NDCG@10: the chosen SESSION blend, and that blend with
    /// the tower added at `weight`.
    pub session_ndcg: f64,
    pub tower_ndcg: f64,
    pub suggested: bool,
}

impl TowerVerdict {
    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "sequence tower: validation NDCG@10 {:.4} (SESSION blend + {} x tower, {} epochs) vs {:.4} with the SESSION blend alone ({:+.1}%): {}",
            self.tower_ndcg,
            self.weight,
            self.epochs,
            self.session_ndcg,
            100.0 * (self.tower_ndcg / self.session_ndcg.max(1e-12) - 1.0),
            if self.suggested { "better" } else { "not better" }
        )
    }
}

struct Net {
    vars: Vec<(&'static str, Var)>,
}

impl Net {
    fn new(d: usize, p: &TowerParams, dev: &Device) -> Result<Net> {
        let mut rng = SplitMix::new(p.seed ^ 0x7043);
        let (h, f, l) = (p.hidden, p.feed_forward, p.positions);
        let mut var = |shape: &[usize], scale: f32| -> Result<Var> {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| (rng.uniform() as f32 * 2.0 - 1.0) * scale)
                .collect();
            Ok(Var::from_tensor(&Tensor::from_vec(data, shape, dev)?)?)
        };
        let glorot = |a: usize, b: usize| (6.0 / (a + b) as f32).sqrt();
        Ok(Net {
            vars: vec![
                ("w_in", var(&[d, h], glorot(d, h))?),
                ("pos", var(&[l, h], 0.02)?),
                ("w_q", var(&[h, h], glorot(h, h))?),
                ("w_k", var(&[h, h], glorot(h, h))?),
                ("w_v", var(&[h, h], glorot(h, h))?),
                ("w_1", var(&[h, f], glorot(h, f))?),
                ("b_1", Var::zeros(f, DType::F32, dev)?),
                ("w_2", var(&[f, h], glorot(f, h))?),
                ("b_2", Var::zeros(h, DType::F32, dev)?),
                ("w_out", var(&[h, d], glorot(h, d))?),
            ],
        })
    }

    fn get(&self, name: &str) -> &Tensor {
        self.vars
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_tensor())
            .expect("a tower tensor")
    }

    /// Query vectors `[b, d]` for item vectors `[b, l, d]` (newest first)
    /// with `mask` `[b, l]` (1: an item, 0: padding).
    fn forward(&self, items: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = self.get("w_q").dim(0)?;
        let (b, l, d) = items.dims3()?;
        // [b, l, ·] x [·, h] as one [b·l, ·] product.
        let rows = |x: &Tensor, w: &str, width: usize| -> Result<Tensor> {
            Ok(x.reshape((b * l, width))?
                .matmul(self.get(w))?
                .reshape((b, l, h))?)
        };
        let x = rows(items, "w_in", d)?.broadcast_add(self.get("pos"))?;
        let x0 = x.narrow(1, 0, 1)?.squeeze(1)?;
        let q = x0.matmul(self.get("w_q"))?;
        let k = rows(&x, "w_k", h)?;
        let v = rows(&x, "w_v", h)?;
        let logits = (k.matmul(&q.unsqueeze(2)?)?.squeeze(2)? / (h as f64).sqrt())?;
        let logits = (logits + ((mask - 1.0)? * 1e9)?)?;
        let a = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let z = a.unsqueeze(1)?.matmul(&v)?.squeeze(1)?;
        let y = (x0 + z)?;
        let ff = y
            .matmul(self.get("w_1"))?
            .broadcast_add(self.get("b_1"))?
            .relu()?
            .matmul(self.get("w_2"))?
            .broadcast_add(self.get("b_2"))?;
        Ok((y + ff)?.matmul(self.get("w_out"))?)
    }

    fn safetensors(&self) -> Result<Vec<u8>> {
        let mut tensors = Vec::new();
        for (name, v) in &self.vars {
            let t = v.as_tensor();
            tensors.push((
                name.to_string(),
                t.dims().to_vec(),
                t.flatten_all()?.to_vec1::<f32>()?,
            ));
        }
        Ok(write_safetensors(&tensors))
    }
}

/// (earlier items newest first, target) pairs of `split`'s training positives.
fn examples(split: &Split, p: &TowerParams) -> Vec<(Vec<u32>, u32)> {
    let mut out = Vec::new();
    for seq in &split.train {
        let first = seq.len().saturating_sub(p.targets_per_user).max(1);
        for t in first..seq.len() {
            let history: Vec<u32> = seq[..t].iter().rev().take(p.positions).copied().collect();
            out.push((history, seq[t]));
        }
    }
    out
}

/// The tower's query for `history` (oldest first, as in a split).
pub fn query(tower: &SequenceTower, f: &Factors, history: &[u32]) -> Option<Vec<f32>> {
    tower.query(history.iter().rev().map(|&i| f.item(i as usize)))
}

/// Trains on `split` over item vectors `f`, calling `after_epoch(epoch,
/// weights)` after each epoch (counted from 1); stops when it returns false.
pub fn train_with(
    f: &Factors,
    split: &Split,
    p: &TowerParams,
    mut after_epoch: impl FnMut(usize, &[u8]) -> Result<bool>,
) -> Result<Vec<u8>> {
    let dev = Device::Cpu;
    let (d, l) = (f.k, p.positions.max(1));
    let n_items = f.items.len() / d;
    // The item vectors, and a zero row for padding.
    let mut padded = f.items.clone();
    padded.extend(std::iter::repeat_n(0.0, d));
    let table = Tensor::from_vec(padded, (n_items + 1, d), &dev)?;
    let catalog_t = Tensor::from_vec(f.items.clone(), (n_items, d), &dev)?.t()?;
    let net = Net::new(d, p, &dev)?;
    let mut opt = AdamW::new(
        net.vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: p.learning_rate,
            weight_decay: 1e-4,
            ..ParamsAdamW::default()
        },
    )?;
    let ex = examples(split, p);
    let mut order: Vec<usize> = (0..ex.len()).collect();
    let mut rng = SplitMix::new(p.seed);
    let mut weights = net.safetensors()?;
    for epoch in 1..=p.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for chunk in order.chunks(p.batch.max(1)) {
            let b = chunk.len();
            let mut ids = vec![n_items as u32; b * l];
            let mut mask = vec![0f32; b * l];
            let mut targets = Vec::with_capacity(b);
            for (r, &e) in chunk.iter().enumerate() {
                let (history, target) = &ex[e];
                for (j, &i) in history.iter().take(l).enumerate() {
                    ids[r * l + j] = i;
                    mask[r * l + j] = 1.0;
                }
                targets.push(*target);
            }
            let items = table
                .index_select(&Tensor::from_vec(ids, b * l, &dev)?, 0)?
                .reshape((b, l, d))?;
            let mask = Tensor::from_vec(mask, (b, l), &dev)?;
            let out = net.forward(&items, &mask)?;
            let scores = out.matmul(&catalog_t)?;
            let loss = candle_nn::loss::cross_entropy(&scores, &Tensor::new(targets, &dev)?)?;
            opt.backward_step(&loss)?;
        }
        weights = net.safetensors()?;
        if !after_epoch(epoch, &weights)? {
            break;
        }
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::generate::{shop, Shape};
    use crate::data::{Protocol, Stage};
    use crate::train::als::{self, AlsParams};
    use crate::train::positives_matrix;

    #[test]
    fn the_native_tower_reproduces_candle() {
        let ds = shop(Shape {
            users: 200,
            items: 300,
            per_user: 20,
            seed: 5,
        });
        let split = Split::new(&ds, Protocol::LatestPerUser, Stage::Test);
        let p = AlsParams {
            iterations: 3,
            factors: 16,
            ..AlsParams::default()
        };
        let f = als::train(&positives_matrix(&split), ds.items.len(), &p, |_| {});
        let tp = TowerParams {
            hidden: 12,
            feed_forward: 20,
            positions: 6,
            epochs: 2,
            ..TowerParams::default()
        };
        let mut epochs = 0;
        let w = train_with(&f, &split, &tp, |_, _| {
            epochs += 1;
            Ok(epochs < 2)
        })
        .unwrap();
        assert_eq!(epochs, 2);
        let tower = SequenceTower::from_safetensors(&w, 16).unwrap();
        // candle's forward on the same weights, rows of 1 to 6 items.
        let dev = Device::Cpu;
        let st = candle_core::safetensors::load_buffer(&w, &dev).unwrap();
        let net = Net {
            vars: [
                "w_in", "pos", "w_q", "w_k", "w_v", "w_1", "b_1", "w_2", "b_2", "w_out",
            ]
            .map(|n| (n, Var::from_tensor(&st[n]).unwrap()))
            .to_vec(),
        };
        for (u, seq) in split.train.iter().enumerate().take(40) {
            let n = 1 + u % 6;
            if seq.len() < n {
                continue;
            }
            let history = &seq[seq.len() - n..];
            let native = query(&tower, &f, history).unwrap();
            let mut items = vec![0f32; 6 * 16];
            let mut mask = vec![0f32; 6];
            for (j, &i) in history.iter().rev().enumerate() {
                items[j * 16..(j + 1) * 16].copy_from_slice(f.item(i as usize));
                mask[j] = 1.0;
            }
            let out = net
                .forward(
                    &Tensor::from_vec(items, (1, 6, 16), &dev).unwrap(),
                    &Tensor::from_vec(mask, (1, 6), &dev).unwrap(),
                )
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (a, b) in native.iter().zip(&out) {
                assert!((a - b).abs() < 1e-4, "user {u}: {a} vs {b}");
            }
        }
    }
}
