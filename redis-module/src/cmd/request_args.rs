//! The pipeline options RECSYS.RECOMMEND and RECSYS.BATCH share (K,
//! CANDIDATES, WHERE, plugins, RANK, ...): parsed here into a core
//! [`Request`] whose own `validate` holds the rules between options.

use recsys_core::catalog::Catalog;
use recsys_core::index::params::MAX_EF;
use recsys_core::pipeline::examples::{Examples, Strategy, MAX_EXAMPLES};
use recsys_core::pipeline::rank::rank_model;
use recsys_core::pipeline::request::PluginStage;
use recsys_core::pipeline::request::{Ordering, Request, MAX_CANDIDATES, MAX_EXCLUDE, MAX_K};
use recsys_core::pipeline::sources::{Fallback, Merge, Source};
use recsys_core::pipeline::user_vector::sequence_blend;
use recsys_core::plugin::World;
use recsys_core::Error;

use crate::args::{Args, CmdResult};
use crate::plugin_store;
use crate::util::now_ms;

/// One pipeline option: its keyword, its grammar for COMMAND DOCS
/// ([`crate::command_docs`]; empty when each command declares it itself,
/// as K), and how its arguments are read (the keyword already read).
pub struct PipelineOption {
    pub name: &'static str,
    pub syntax: &'static str,
    parse: fn(&str, &mut Args, &mut Request) -> CmdResult<()>,
}

/// The pipeline options RECOMMEND and BATCH share: the one list their
/// parsers, their "unknown option" errors and their COMMAND DOCS come from.
pub const PIPELINE_OPTIONS: &[PipelineOption] = &[
    PipelineOption {
        name: "K",
        syntax: "",
        parse: |_, a, r| {
            r.k = a.next_usize("K", 1, MAX_K)?;
            Ok(())
        },
    },
    PipelineOption {
        name: "CANDIDATES",
        syntax: "[CANDIDATES candidates:integer]",
        parse: |_, a, r| {
            r.candidates = a.next_usize("CANDIDATES", 1, MAX_CANDIDATES)?;
            Ok(())
        },
    },
    PipelineOption {
        name: "EF",
        syntax: "[EF ef:integer]",
        parse: |_, a, r| {
            r.ef = Some(a.next_usize("EF", 1, MAX_EF)?);
            Ok(())
        },
    },
    PipelineOption {
        name: "WHERE",
        syntax: "[WHERE where:string]",
        parse: |_, a, r| {
            r.where_text = Some(a.next_str("WHERE expression")?.to_string());
            Ok(())
        },
    },
    PipelineOption {
        name: "EXCLUDE_SEEN",
        syntax: "[EXCLUDE_SEEN]",
        parse: |_, _, r| {
            r.exclude_seen = true;
            Ok(())
        },
    },
    PipelineOption {
        name: "EXCLUDE",
        syntax: "[EXCLUDE exclude=(count:integer id:string...)]",
        parse: |_, a, r| {
            let n = a.next_usize("EXCLUDE count", 1, MAX_EXCLUDE)?;
            for _ in 0..n {
                r.exclude.push(a.next_str("EXCLUDE id")?.to_string());
            }
            Ok(())
        },
    },
    PipelineOption {
        name: "MIN_SCORE",
        syntax: "[MIN_SCORE min_score:double]",
        parse: |_, a, r| {
            r.min_score = Some(a.next_float("MIN_SCORE", -1e30, 1e30)? as f32);
            Ok(())
        },
    },
    PipelineOption {
        name: "POSITIVE",
        syntax: "[POSITIVE positive=(count:integer example=(id:string [WEIGHT weight:double])...)]",
        parse: examples,
    },
    PipelineOption {
        name: "NEGATIVE",
        syntax: "[NEGATIVE negative=(count:integer example=(id:string [WEIGHT weight:double])...)]",
        parse: examples,
    },
    PipelineOption {
        name: "STRATEGY",
        syntax: "[STRATEGY strategy=(AVERAGE | BEST_SCORE)]",
        parse: |_, a, r| {
            r.examples.strategy = Strategy::parse(a.next_str("STRATEGY")?)?;
            Ok(())
        },
    },
    PipelineOption {
        name: "SOURCES",
        syntax: "[SOURCES sources=(count:integer source=(name:string share:integer)...)]",
        parse: |_, a, r| {
            let n = a.next_usize("SOURCES count", 1, Source::NAMED.len())?;
            let mut sources = r.sources.take().unwrap_or_default();
            for _ in 0..n {
                let source = Source::parse(a.next_str("SOURCES source")?)?;
                let share = a.next_usize("SOURCES share", 1, MAX_CANDIDATES)?;
                sources.push(source, share)?;
            }
            r.sources = Some(sources);
            Ok(())
        },
    },
    PipelineOption {
        name: "MERGE",
        syntax: "[MERGE merge=(RRF | SCORE)]",
        parse: |_, a, r| {
            let merge = Merge::parse(a.next_str("MERGE")?)?;
            r.sources.get_or_insert_with(Default::default).merge = merge;
            Ok(())
        },
    },
    PipelineOption {
        name: "FALLBACK",
        syntax: "[FALLBACK fallback=(POPULAR | LATEST)]",
        parse: |_, a, r| {
            r.fallback = Some(Fallback::parse(a.next_str("FALLBACK")?)?);
            Ok(())
        },
    },
    PipelineOption {
        name: "RANK",
        syntax: "[RANK rank:string]",
        parse: |_, a, r| {
            r.rank = Some(a.next_str("RANK model name")?.to_string());
            Ok(())
        },
    },
    PipelineOption {
        name: "FILTER",
        syntax: "[FILTER filter=(plugin:string [ARGS args:string])]...",
        parse: plugin,
    },
    PipelineOption {
        name: "ORDER",
        syntax: "[ORDER order=(plugin:string [ARGS args:string])]",
        parse: plugin,
    },
    PipelineOption {
        name: "FAILOPEN",
        syntax: "[FAILOPEN]",
        parse: |_, _, r| {
            r.fail_open = true;
            Ok(())
        },
    },
    PipelineOption {
        name: "SOFTMAX",
        syntax: "[SOFTMAX softmax=(temperature:double [SEED seed:integer])]",
        parse: |_, a, r| {
            let t = a.next_float("SOFTMAX temperature", 1e-6, 1e6)?;
            let mut seed = now_ms() as u64 ^ 0x5EED;
            if a.peek_keyword().as_deref() == Some("SEED") {
                a.next_keyword()?;
                seed = a.next_int("SEED", 0, i64::MAX)? as u64;
            }
            r.ordering = Ordering::Softmax {
                temperature: t as f32,
                seed,
            };
            Ok(())
        },
    },
    PipelineOption {
        name: "DIVERSITY",
        syntax: "[DIVERSITY diversity=(attribute:string max:integer)]",
        parse: |_, a, r| {
            let attr = a.next_str("DIVERSITY attribute")?.to_string();
            let max = a.next_usize("DIVERSITY max", 1, MAX_K)?;
            r.diversity = Some((attr, max));
            Ok(())
        },
    },
    PipelineOption {
        name: "SESSION",
        syntax: "[SESSION session=(items:integer weight:double)]",
        parse: |_, a, r| {
            r.session = Some(a.next_session()?);
            Ok(())
        },
    },
    PipelineOption {
        name: "SEQUENCE",
        syntax: "[SEQUENCE sequence:double]",
        parse: |_, a, r| {
            r.sequence = Some(a.next_sequence_weight()?);
            Ok(())
        },
    },
];

/// Words that only follow another option's argument, and what they follow.
const FOLLOWERS: &[(&str, &str)] = &[
    ("SEED", "SEED must follow SOFTMAX temperature"),
    ("ARGS", "ARGS must follow FILTER name or ORDER name"),
    (
        "WEIGHT",
        "WEIGHT must follow an id of POSITIVE n id ... or NEGATIVE n id ...",
    ),
];

/// The COMMAND DOCS grammar of the pipeline options (those with one).
pub fn pipeline_syntax() -> String {
    let parts: Vec<&str> = PIPELINE_OPTIONS
        .iter()
        .map(|o| o.syntax)
        .filter(|s| !s.is_empty())
        .collect();
    parts.join(" ")
}

/// The "unknown option" error of a command that takes `own` options
/// besides the pipeline's.
pub fn unknown_option(other: &str, own: &[&str]) -> Error {
    let pipeline = PIPELINE_OPTIONS.iter().map(|o| o.name);
    let all: Vec<&str> = own.iter().copied().chain(pipeline).collect();
    Error::invalid(format!(
        "unknown option '{other}', expected {}",
        all.join(", ")
    ))
}

/// Parses one pipeline option (`kw` already read). Returns false when `kw`
/// is not a pipeline option.
pub fn pipeline_option(kw: &str, a: &mut Args, req: &mut Request) -> CmdResult<bool> {
    if let Some(&(_, error)) = FOLLOWERS.iter().find(|(word, _)| *word == kw) {
        return Err(Error::invalid(error));
    }
    match PIPELINE_OPTIONS.iter().find(|o| o.name == kw) {
        Some(option) => {
            (option.parse)(kw, a, req)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// `FILTER name [ARGS s]` and `ORDER name [ARGS s]`.
fn plugin(kw: &str, a: &mut Args, req: &mut Request) -> CmdResult<()> {
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
    Ok(())
}

/// `POSITIVE n id [WEIGHT w] ...` and `NEGATIVE n id [WEIGHT w] ...`.
fn examples(kw: &str, a: &mut Args, req: &mut Request) -> CmdResult<()> {
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
    Ok(())
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
