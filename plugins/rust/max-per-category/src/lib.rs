//! Filter plugin: keeps at most k candidates per value of a text attribute,
//! best first (candidates arrive sorted by score). Config: `category:2`.

wit_bindgen::generate!({ world: "filter", path: "../../../wit" });

use std::collections::HashMap;

struct Plugin;

impl Guest for Plugin {
    fn filter(req: Request, config: String) -> Result<Vec<u32>, String> {
        let (attr, k) = config
            .split_once(':')
            .and_then(|(a, k)| Some((a, k.parse::<usize>().ok()?)))
            .ok_or_else(|| format!("config must be attr:k, got '{config}'"))?;
        let n = req.scores.len();
        let width = req.text_names.len();
        let col = req.text_names.iter().position(|a| a == attr);
        let mut seen: HashMap<u32, usize> = HashMap::new();
        let mut keep = Vec::with_capacity(n);
        for i in 0..n {
            let Some(c) = col else {
                keep.push(i as u32);
                continue;
            };
            let count = seen.entry(req.text_values[i * width + c]).or_insert(0);
            if *count < k {
                *count += 1;
                keep.push(i as u32);
            }
        }
        Ok(keep)
    }
}

export!(Plugin);
