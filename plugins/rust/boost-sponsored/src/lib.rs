//! Order plugin: adds a boost to the score of sponsored items (numeric
//! attribute > 0) and re-sorts. Config: `sponsored:0.2`.
//!
//! The candidates arrive best first, and one boost added to every sponsored
//! score keeps both groups (sponsored, not sponsored) in that order, so the
//! new order is a merge of the two: linear, where a sort of 200 candidates
//! was most of this plugin's time. Input that is not best first (a host may
//! send any order) is sorted instead; both give the same answer: score
//! descending, then index ascending.

wit_bindgen::generate!({ world: "order", path: "../../../wit" });

struct Plugin;

/// Orders `scored` (index, new score) by score descending, then index.
fn order(scored: &[(u32, f32)], sponsored: &[bool], best_first: bool) -> Vec<(u32, f32)> {
    let before = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if !best_first {
        let mut all = scored.to_vec();
        // Indices are unique, so the order is total: no need for a stable sort.
        all.sort_unstable_by(before);
        return all;
    }
    let (mut yes, mut no) = (Vec::new(), Vec::new());
    for (s, &sp) in scored.iter().zip(sponsored) {
        if sp { yes.push(*s) } else { no.push(*s) }
    }
    let mut out = Vec::with_capacity(scored.len());
    let (mut i, mut j) = (0, 0);
    while i < yes.len() && j < no.len() {
        if before(&yes[i], &no[j]).is_le() {
            out.push(yes[i]);
            i += 1;
        } else {
            out.push(no[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&yes[i..]);
    out.extend_from_slice(&no[j..]);
    out
}

impl Guest for Plugin {
    fn order(req: Request, config: String) -> Result<Ordering, String> {
        let (attr, boost) = config
            .split_once(':')
            .and_then(|(a, b)| Some((a, b.parse::<f32>().ok()?)))
            .ok_or_else(|| format!("config must be attr:boost, got '{config}'"))?;
        let n = req.scores.len();
        let width = req.numeric_names.len();
        let col = req.numeric_names.iter().position(|a| a == attr);
        let sponsored: Vec<bool> = (0..n)
            .map(|i| col.is_some_and(|c| req.numeric_values[i * width + c] > 0.0))
            .collect();
        let scored: Vec<(u32, f32)> = (0..n)
            .map(|i| (i as u32, req.scores[i] + if sponsored[i] { boost } else { 0.0 }))
            .collect();
        // Best first in the order the answer uses (total_cmp: -0.0 < 0.0).
        let best_first = req.scores.windows(2).all(|w| w[0].total_cmp(&w[1]).is_ge());
        let ordered = order(&scored, &sponsored, best_first);
        Ok(Ordering {
            indices: ordered.iter().map(|s| s.0).collect(),
            scores: Some(ordered.iter().map(|s| s.1).collect()),
        })
    }
}

export!(Plugin);
