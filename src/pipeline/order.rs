//! Stage 5, ordering: softmax sampling when asked (Gumbel top-k, seeded),
//! then the first K under an optional per-attribute diversity cap.

use std::collections::HashMap;

use crate::catalog::Catalog;
use crate::pipeline::explain::Explain;
use crate::pipeline::request::{Ordering, Request};
use crate::rng::SplitMix;

/// The final list: ids and scores, at most `req.k`.
pub fn order(
    catalog: &Catalog,
    req: &Request,
    mut candidates: Vec<(u32, f32)>,
    ex: &mut Explain,
) -> Vec<(String, f32)> {
    if let Ordering::Softmax { temperature, seed } = req.ordering {
        candidates = softmax_order(candidates, temperature, seed);
    }
    let diversity = req
        .diversity
        .as_ref()
        .and_then(|(attr, max)| catalog.columns().column(attr).map(|column| (column, *max)));
    let mut per_value: HashMap<u32, usize> = HashMap::new();
    let mut out = Vec::with_capacity(req.k.min(candidates.len()));
    for (slot, score) in candidates {
        if out.len() >= req.k {
            break;
        }
        if let Some((column, max)) = diversity {
            // Items without the attribute are not capped.
            let value = column.id(slot);
            if value != 0 {
                let n = per_value.entry(value).or_insert(0);
                if *n >= max {
                    ex.diversity_dropped += 1;
                    continue;
                }
                *n += 1;
            }
        }
        if let Some(id) = catalog.id_of(slot) {
            out.push((id.to_string(), score));
        }
    }
    ex.returned = out.len();
    out
}

/// Gumbel top-k: adding Gumbel noise to score/T and sorting samples without
/// replacement from softmax(score/T). The same seed gives the same order.
fn softmax_order(scored: Vec<(u32, f32)>, temperature: f32, seed: u64) -> Vec<(u32, f32)> {
    let mut rng = SplitMix::new(seed);
    let mut keyed: Vec<(f64, u32, f32)> = scored
        .into_iter()
        .map(|(slot, score)| {
            let u = rng.uniform().max(f64::MIN_POSITIVE);
            let gumbel = -(-u.ln()).ln();
            (score as f64 / temperature as f64 + gumbel, slot, score)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    keyed
        .into_iter()
        .map(|(_, slot, score)| (slot, score))
        .collect()
}
