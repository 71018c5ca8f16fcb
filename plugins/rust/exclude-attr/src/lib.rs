//! Filter plugin: drops candidates whose text attribute equals a value.
//! Config: `attr=value`, e.g. `stock=out` hides out-of-stock items.

wit_bindgen::generate!({ world: "filter", path: "../../../wit" });

use recsys::plugin::host::{log, Level};

struct Plugin;

impl Guest for Plugin {
    fn filter(req: Request, config: String) -> Result<Vec<u32>, String> {
        let (attr, value) = config
            .split_once('=')
            .ok_or_else(|| format!("config must be attr=value, got '{config}'"))?;
        let n = req.scores.len();
        let col = req.text_names.iter().position(|a| a == attr);
        let banned = req.text_dict.iter().position(|v| v == value);
        let (Some(col), Some(banned)) = (col, banned) else {
            log(Level::Debug, &format!("no candidate has {attr}={value}: keeping all {n}"));
            return Ok((0..n as u32).collect());
        };
        let width = req.text_names.len();
        Ok((0..n)
            .filter(|&i| req.text_values[i * width + col] != banned as u32)
            .map(|i| i as u32)
            .collect())
    }
}

export!(Plugin);
