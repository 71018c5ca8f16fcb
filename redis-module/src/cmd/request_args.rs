//! The pipeline options RECSYS.RECOMMEND and RECSYS.BATCH share (K,
//! CANDIDATES, WHERE, plugins, RANK, ...): parsed here into a core
//! [`Request`] whose own `validate` holds the rules between options.

use recsys_core::catalog::Catalog;
use recsys_core::index::params::MAX_EF;
use recsys_core::pipeline::examples::{Examples, Strategy, MAX_EXAMPLES};
use recsys_core::pipeline::rank::rank_model;
use recsys_core::pipeline::request::PluginStage;
use recsys_core::pipeline::request::{Ordering, Request, MAX_CANDIDATES, MAX_EXCLUDE, MAX_K};
use recsys_core::pipeline::user_vector::sequence_blend;
use recsys_core::plugin::World;
use recsys_core::Error;

use crate::args::{Args, CmdResult};
use crate::plugin_store;
use crate::util::now_ms;

/// The pipeline options, as [`pipeline_option`] reads them (error messages
/// list them from here; a test checks the command table's syntax names
/// every one).
pub const PIPELINE_OPTIONS: &[&str] = &[
    "K",
    "CANDIDATES",
    "EF",
    "WHERE",
    "EXCLUDE_SEEN",
    "EXCLUDE",
    "MIN_SCORE",
    "POSITIVE",
    "NEGATIVE",
    "STRATEGY",
    "RANK",
    "FILTER",
    "ORDER",
    "FAILOPEN",
    "SOFTMAX",
    "DIVERSITY",
    "SESSION",
    "SEQUENCE",
];

/// The "unknown option" error of a command that takes `own` options
/// besides the pipeline's.
pub fn unknown_option(other: &str, own: &[&str]) -> Error {
    let all: Vec<&str> = own.iter().chain(PIPELINE_OPTIONS).copied().collect();
    Error::invalid(format!(
        "unknown option '{other}', expected {}",
        all.join(", ")
    ))
}

/// Parses one pipeline option (`kw` already read). Returns false when `kw`
/// is not a pipeline option.
pub fn pipeline_option(kw: &str, a: &mut Args, req: &mut Request) -> CmdResult<bool> {
    match kw {
        "K" => req.k = a.next_usize("K", 1, MAX_K)?,
        "CANDIDATES" => req.candidates = a.next_usize("CANDIDATES", 1, MAX_CANDIDATES)?,
        "EF" => req.ef = Some(a.next_usize("EF", 1, MAX_EF)?),
        "WHERE" => req.where_text = Some(a.next_str("WHERE expression")?.to_string()),
        "EXCLUDE_SEEN" => req.exclude_seen = true,
        "EXCLUDE" => {
            let n = a.next_usize("EXCLUDE count", 1, MAX_EXCLUDE)?;
            for _ in 0..n {
                req.exclude.push(a.next_str("EXCLUDE id")?.to_string());
            }
        }
        "MIN_SCORE" => {
            let floor = a.next_float("MIN_SCORE", -1e30, 1e30)?;
            req.min_score = Some(floor as f32);
        }
        "POSITIVE" | "NEGATIVE" => {
            let n = a.next_usize(&format!("{kw} count"), 1, MAX_EXAMPLES)?;
            let list = if kw == "POSITIVE" {
                &mut req.examples.positive
            } else {
                &mut req.examples.negative
            };
            if list.len() + n > MAX_EXAMPLES {
                return Err(Error::invalid(format!(
                    "a request takes at most {MAX_EXAMPLES} {kw} examples"
                )));
            }
            for _ in 0..n {
                let id = a.next_str(&format!("{kw} id"))?.to_string();
                let mut weight = 1.0;
                if a.peek_keyword().as_deref() == Some("WEIGHT") {
                    a.next_keyword()?;
                    let w = a.next_float("example WEIGHT", f64::MIN, f64::MAX)?;
                    weight = Examples::check_weight(w)?;
                }
                list.push((id, weight));
            }
        }
        "WEIGHT" => {
            return Err(Error::invalid(
                "WEIGHT must follow an id of POSITIVE n id ... or NEGATIVE n id ...",
            ))
        }
        "STRATEGY" => req.examples.strategy = Strategy::parse(a.next_str("STRATEGY")?)?,
        "SOFTMAX" => {
            let t = a.next_float("SOFTMAX temperature", 1e-6, 1e6)?;
            let mut seed = now_ms() as u64 ^ 0x5EED;
            if a.peek_keyword().as_deref() == Some("SEED") {
                a.next_keyword()?;
                seed = a.next_int("SEED", 0, i64::MAX)? as u64;
            }
            req.ordering = Ordering::Softmax {
                temperature: t as f32,
                seed,
            };
        }
        "SEED" => return Err(Error::invalid("SEED must follow SOFTMAX temperature")),
        "FILTER" | "ORDER" => {
            let plugin = plugin_store::get(a.next_str("plugin name")?)?;
            let mut config = String::new();
            if a.peek_keyword().as_deref() == Some("ARGS") {
                a.next_keyword()?;
                config = a.next_str("ARGS")?.to_string();
            }
            let world = if kw == "FILTER" {
                World::Filter
            } else {
                World::Order
            };
            req.plugins.push((world, PluginStage { plugin, config }));
        }
        "ARGS" => return Err(Error::invalid("ARGS must follow FILTER name or ORDER name")),
        "FAILOPEN" => req.fail_open = true,
        "RANK" => req.rank = Some(a.next_str("RANK model name")?.to_string()),
        "SESSION" => req.session = Some(a.next_session()?),
        "SEQUENCE" => req.sequence = Some(a.next_sequence_weight()?),
        "DIVERSITY" => {
            let attr = a.next_str("DIVERSITY attribute")?.to_string();
            let max = a.next_usize("DIVERSITY max", 1, MAX_K)?;
            req.diversity = Some((attr, max));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The user hash fields a request's models read (its RANK model's and the
/// catalog's QUERY model's); fails when the RANK model does not exist, or
/// when SEQUENCE asks for a RECENT model the catalog does not have.
pub fn model_fields(catalog: &Catalog, req: &Request) -> CmdResult<Vec<String>> {
    sequence_blend(catalog, req.sequence)?;
    let mut fields = Vec::new();
    if let Some(name) = &req.rank {
        fields.extend_from_slice(rank_model(catalog, name)?.user_fields());
    }
    if let Some(q) = catalog.models().query_model() {
        fields.extend_from_slice(q.user_fields());
    }
    fields.sort();
    fields.dedup();
    Ok(fields)
}
