//! Order plugin: adds a boost to the score of sponsored items (numeric
//! attribute > 0) and re-sorts. Config: `sponsored:0.2`.

wit_bindgen::generate!({ world: "order", path: "../../../wit" });

struct Plugin;

impl Guest for Plugin {
    fn order(req: Request, config: String) -> Result<Ordering, String> {
        let (attr, boost) = config
            .split_once(':')
            .and_then(|(a, b)| Some((a, b.parse::<f32>().ok()?)))
            .ok_or_else(|| format!("config must be attr:boost, got '{config}'"))?;
        let n = req.scores.len();
        let width = req.numeric_names.len();
        let col = req.numeric_names.iter().position(|a| a == attr);
        let mut scored: Vec<(u32, f32)> = (0..n)
            .map(|i| {
                let sponsored = col.is_some_and(|c| req.numeric_values[i * width + c] > 0.0);
                (i as u32, req.scores[i] + if sponsored { boost } else { 0.0 })
            })
            .collect();
        // Indices are unique, so the order is total: no need for a stable sort.
        scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(Ordering {
            indices: scored.iter().map(|s| s.0).collect(),
            scores: Some(scored.iter().map(|s| s.1).collect()),
        })
    }
}

export!(Plugin);
