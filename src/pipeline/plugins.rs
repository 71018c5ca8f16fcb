//! Stage 4, the plugins: candidates flattened into the WIT request (ids,
//! scores, numeric and dictionary-encoded text columns), the filter plugins
//! in sequence, then the order plugin. A failing plugin fails the request,
//! or with FAILOPEN skips its stage (counted in EXPLAIN).

use cel::Value;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::features::attrs::cel_number;
use crate::features::columns::Column;
use crate::pipeline::explain::Explain;
use crate::pipeline::request::{PluginStage, Request, UserInput};
use crate::plugin::{CallError, Host, PluginInput, MISSING};

/// Builds the plugin request for `cands` (slot, score), best first. Columns
/// are filled one at a time (the value-id gathers of a column are
/// independent loads the CPU overlaps); text values are numbered column by
/// column in the order they first appear.
pub fn plugin_input(catalog: &Catalog, user_id: &str, cands: &[(u32, f32)]) -> PluginInput {
    let n = cands.len();
    // The ids are found first, in a loop short enough for the CPU to have
    // many of their cache misses in flight, then copied: one loop doing
    // both waited for each miss in turn (most of this function's time).
    let ids: Vec<&str> = cands
        .iter()
        .map(|(slot, _)| catalog.id_of(*slot).unwrap_or(""))
        .collect();
    let mut input = PluginInput {
        user_id: user_id.to_string(),
        ids: String::with_capacity(ids.iter().map(|id| id.len()).sum()),
        id_offsets: Vec::with_capacity(n + 1),
        scores: cands.iter().map(|c| c.1).collect(),
        ..PluginInput::default()
    };
    for id in ids {
        input.push_id(id);
    }
    let mut columns: Vec<_> = catalog
        .columns()
        .iter()
        .filter(|(_, c)| c.is_numeric() || c.is_text())
        .collect();
    columns.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let (numeric, text): (Vec<_>, Vec<_>) = columns.into_iter().partition(|(_, c)| c.is_numeric());
    input.numeric_names = numeric.iter().map(|(name, _)| name.to_string()).collect();
    input.text_names = text.iter().map(|(name, _)| name.to_string()).collect();
    let mut value_ids = vec![0u32; n];
    let width = numeric.len();
    input.numeric_values = vec![f64::NAN; n * width];
    for (j, (_, col)) in numeric.iter().enumerate() {
        gather_ids(col, cands, &mut value_ids);
        for (i, &id) in value_ids.iter().enumerate() {
            if let Some(x) = col.value(id).and_then(cel_number) {
                input.numeric_values[i * width + j] = x;
            }
        }
    }
    let width = text.len();
    input.text_values = vec![MISSING; n * width];
    let mut dict: hashbrown::HashMap<(usize, u32), u32> = hashbrown::HashMap::new();
    for (j, (_, col)) in text.iter().enumerate() {
        gather_ids(col, cands, &mut value_ids);
        for (i, &id) in value_ids.iter().enumerate() {
            if let Some(Value::String(s)) = col.value(id) {
                input.text_values[i * width + j] = *dict.entry((j, id)).or_insert_with(|| {
                    input.text_dict.push(s.to_string());
                    input.text_dict.len() as u32 - 1
                });
            }
        }
    }
    input
}

/// The value id of `col` for every candidate, into `out`.
fn gather_ids(col: &Column, cands: &[(u32, f32)], out: &mut [u32]) {
    for (o, (slot, _)) in out.iter_mut().zip(cands) {
        *o = col.id(*slot);
    }
}

/// Runs the request's plugins over the ranked candidates; without plugins
/// the candidates pass unchanged.
pub fn apply(
    catalog: &Catalog,
    user: &UserInput,
    req: &Request,
    host: Option<&Host>,
    candidates: Vec<(u32, f32)>,
    ex: &mut Explain,
) -> Result<Vec<(u32, f32)>> {
    let out = run_stages(catalog, user, req, host, candidates, true, ex)?;
    ex.after_plugins = out.len();
    Ok(out)
}

/// Runs only the request's filter plugins (FALLBACK's items: they are not
/// reordered).
pub fn apply_filters(
    catalog: &Catalog,
    user: &UserInput,
    req: &Request,
    host: Option<&Host>,
    candidates: Vec<(u32, f32)>,
    ex: &mut Explain,
) -> Result<Vec<(u32, f32)>> {
    run_stages(catalog, user, req, host, candidates, false, ex)
}

/// The filter plugins, then (with `order`) the order plugin; failures
/// skipped under FAILOPEN are added to EXPLAIN.
fn run_stages(
    catalog: &Catalog,
    user: &UserInput,
    req: &Request,
    host: Option<&Host>,
    candidates: Vec<(u32, f32)>,
    order: bool,
    ex: &mut Explain,
) -> Result<Vec<(u32, f32)>> {
    let filters: Vec<&PluginStage> = req.filter_plugins().collect();
    let order = req.order_plugin().filter(|_| order);
    if filters.is_empty() && order.is_none() {
        return Ok(candidates);
    }
    let host = host
        .ok_or_else(|| Error::invalid("plugins are not available on this server (see the log)"))?;
    let mut failures = Vec::new();
    let mut on_error = |stage: &PluginStage, e: CallError| -> Result<(), String> {
        let msg = format!("plugin '{}': {e}", stage.plugin.name);
        if req.fail_open {
            failures.push(msg);
            Ok(())
        } else {
            Err(msg)
        }
    };
    let out = run_plugins(
        host,
        catalog,
        &user.user_id,
        &filters,
        order,
        candidates,
        &mut on_error,
    )?;
    ex.plugin_failures.extend(failures);
    Ok(out)
}

/// Runs the filter plugins in sequence (each keeps a subset, order kept),
/// then the order plugin. The request is flattened once; later stages see the
/// rows of the candidates still in play.
pub fn run_plugins(
    host: &Host,
    catalog: &Catalog,
    user_id: &str,
    filters: &[&PluginStage],
    order: Option<&PluginStage>,
    mut cands: Vec<(u32, f32)>,
    on_error: &mut dyn FnMut(&PluginStage, CallError) -> Result<(), String>,
) -> Result<Vec<(u32, f32)>, String> {
    let mut input = plugin_input(catalog, user_id, &cands);
    for stage in filters {
        match host.call_filter(&stage.plugin, &input, &stage.config) {
            Ok(mut keep) => {
                keep.sort_unstable();
                input.retain_rows(&keep);
                cands = keep.into_iter().map(|i| cands[i as usize]).collect();
            }
            Err(e) => on_error(stage, e)?,
        }
    }
    match order {
        Some(stage) => run_order(host, stage, &input, cands, on_error),
        None => Ok(cands),
    }
}

/// Runs the order plugin: its indices (and scores, when it gives them).
fn run_order(
    host: &Host,
    stage: &PluginStage,
    input: &PluginInput,
    cands: Vec<(u32, f32)>,
    on_error: &mut dyn FnMut(&PluginStage, CallError) -> Result<(), String>,
) -> Result<Vec<(u32, f32)>, String> {
    match host.call_order(&stage.plugin, input, &stage.config) {
        Ok(o) => Ok(o
            .indices
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let (slot, score) = cands[i as usize];
                (slot, o.scores.as_ref().map_or(score, |s| s[k]))
            })
            .collect()),
        Err(e) => {
            on_error(stage, e)?;
            Ok(cands)
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use crate::features::attrs::Attrs;
    use crate::index::IndexParams;
    use crate::pipeline::recommend;
    use crate::pipeline::request::{PluginStage, Request, UserInput};
    use crate::plugin::Limits;
    use crate::synth::clustered_lowrank;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn print_plugin_stage_costs() {
        let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist");
        let host = Host::new(Limits::default()).unwrap();
        let f = Arc::new(
            host.compile("f", std::fs::read(dist.join("exclude-attr.wasm")).unwrap())
                .unwrap(),
        );
        let o = Arc::new(
            host.compile(
                "o",
                std::fs::read(dist.join("boost-sponsored.wasm")).unwrap(),
            )
            .unwrap(),
        );
        let mut c = Catalog::new(IndexParams {
            ef_search: 64,
            ..IndexParams::new(64)
        })
        .unwrap();
        let items = 100_000;
        for (i, v) in clustered_lowrank(items as usize, 64, 100, 8, 1)
            .iter()
            .enumerate()
        {
            let a = format!(
                r#"{{"genre":"g{}","stock":"{}","sponsored":{}}}"#,
                i % 20,
                if i % 10 == 0 { "out" } else { "in" },
                (i % 50 == 0) as u8
            );
            c.set(&format!("{i:012}"), v, Some(Attrs::parse(&a).unwrap()))
                .unwrap();
        }
        // 200 candidates drawn over the whole catalog, a new set per call,
        // as a walk finds them (their attributes are not in cache).
        let mut rng = crate::rng::SplitMix::new(3);
        let sets: Vec<Vec<(u32, f32)>> = (0..1000)
            .map(|_| (0..200).map(|_| (rng.below(items) as u32, 1.0)).collect())
            .collect();
        let t = Instant::now();
        for cands in &sets {
            std::hint::black_box(plugin_input(&c, "u", cands));
        }
        eprintln!(
            "plugin_input: {:.1} us",
            t.elapsed().as_secs_f64() * 1e6 / sets.len() as f64
        );
        // Calls alone, hot (same input again) and cold (caches flushed by
        // touching 64 MB first, as a walk over a large catalog does).
        let inp = plugin_input(&c, "u", &sets[0]);
        let flush = vec![1u8; 64 << 20];
        let evict = || {
            let sum: u64 = flush.iter().step_by(64).map(|&b| b as u64).sum();
            std::hint::black_box(sum);
        };
        for cold in [false, true] {
            let (mut tf, mut to) = (Vec::new(), Vec::new());
            for k in 0..400 {
                if cold {
                    evict();
                }
                let t = Instant::now();
                host.call_filter(&f, &inp, "stock=out").unwrap();
                let a = t.elapsed().as_secs_f64() * 1e6;
                if cold {
                    evict();
                }
                let t = Instant::now();
                host.call_order(&o, &inp, "sponsored:0.1").unwrap();
                let b = t.elapsed().as_secs_f64() * 1e6;
                if k >= 20 {
                    tf.push(a);
                    to.push(b);
                }
            }
            tf.sort_by(|a, b| a.total_cmp(b));
            to.sort_by(|a, b| a.total_cmp(b));
            eprintln!(
                "calls cold {cold}: filter {:.1} us, order {:.1} us (medians)",
                tf[tf.len() / 2],
                to[to.len() / 2]
            );
        }
        let users = clustered_lowrank(100, 64, 100, 8, 2);
        for with in [false, true] {
            let mut req = Request::new(10);
            if with {
                req.plugins.push((
                    crate::plugin::World::Filter,
                    PluginStage {
                        plugin: f.clone(),
                        config: "stock=out".into(),
                    },
                ));
                req.plugins.push((
                    crate::plugin::World::Order,
                    PluginStage {
                        plugin: o.clone(),
                        config: "sponsored:0.1".into(),
                    },
                ));
            }
            // The first calls on a thread make its instances: warm up first.
            let mut t = Instant::now();
            let mut pu = 0;
            for (k, u) in users.iter().chain(&users).enumerate() {
                if k == users.len() {
                    t = Instant::now();
                    pu = 0;
                }
                let r = recommend(
                    &c,
                    &UserInput {
                        vector_arg: Some(u.clone()),
                        ..UserInput::default()
                    },
                    &req,
                    Some(&host),
                )
                .unwrap();
                pu += r.explain.micros(crate::pipeline::explain::Stage::Plugins);
            }
            eprintln!(
                "with plugins {with}: {} us/request, plugin stage {} us",
                t.elapsed().as_micros() / 100,
                pu / 100
            );
        }
    }
}
