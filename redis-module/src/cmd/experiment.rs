//! RECSYS.EXPERIMENT.SET, DEL, REPORT and SYNC: A/B experiments of a
//! catalog (docs/experiments.md). The writes apply in
//! [`crate::experiments`] and are committed like every catalog write;
//! REPORT reads the counts and computes the statistics on the spot.

use recsys_core::codec::Writer;
use recsys_core::experiment::stats::{compare, wilson, Rate};
use recsys_core::experiment::Experiment;
use recsys_core::Error;
use redis_module::{Context, RedisString};

use crate::args::{Args, CmdResult};
use crate::cluster::replayed;
use crate::commit::{commit, commit_verbatim};
use crate::experiments::{self, parse_set};
use crate::keys::catalog_at;
use crate::reply::Reply;

/// RECSYS.EXPERIMENT.SET key name VARIANT v [WEIGHT w] [OPTIONS text] ...
/// [CREATED ms]: sets (or replaces, with fresh counts) an experiment; every
/// variant's OPTIONS is checked now. Replicated with CREATED, so every
/// copy has the same generation.
pub fn set(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let key = Args::new(argv).next_string("key")?;
    let catalog = catalog_at(ctx, key)?;
    let check = (!replayed(ctx)).then_some(ctx);
    let (e, created_given) = parse_set(&catalog, argv, check)?;
    let created = e.generation.to_string();
    experiments::put(&catalog, e)?;
    let mut write: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
    if !created_given {
        write.extend([&b"CREATED"[..], created.as_bytes()]);
    }
    commit(ctx, key, &catalog, &write, "recsys.experiment");
    Ok(Reply::Ok)
}

/// RECSYS.EXPERIMENT.DEL key name: 1 when it existed.
pub fn del(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let key = Args::new(argv).next_string("key")?;
    let catalog = catalog_at(ctx, key)?;
    let applied = experiments::del_now(&catalog, argv)?;
    if applied.changed {
        commit_verbatim(ctx, key, &catalog, argv, "recsys.experiment");
    }
    Ok(applied.reply.into())
}

/// RECSYS.EXPERIMENT.SYNC: counts and states a master sends its replicas
/// and AOF (see [`crate::experiments`]); refused from clients.
pub fn sync(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    if !replayed(ctx) {
        return Err(Error::invalid(
            "RECSYS.EXPERIMENT.SYNC is internal: masters send it to their replicas and AOF",
        ));
    }
    let key = Args::new(argv).next_string("key")?;
    let catalog = catalog_at(ctx, key)?;
    let applied = experiments::sync_now(&catalog, argv)?;
    if applied.changed {
        commit_verbatim(ctx, key, &catalog, argv, "recsys.experiment");
    }
    Ok(applied.reply.into())
}

/// The AOF form of an experiment: `RECSYS.EXPERIMENT.SYNC key STATE bytes`.
pub fn state_bytes(e: &Experiment) -> Vec<u8> {
    let mut out = Vec::new();
    e.encode(&mut Writer(&mut out));
    out
}

fn rate_fields(out: &mut Vec<(String, Reply)>, name: &str, r: Rate) {
    out.push((name.into(), Reply::Double(r.value)));
    out.push((format!("{name}_low"), Reply::Double(r.low)));
    out.push((format!("{name}_high"), Reply::Double(r.high)));
}

/// RECSYS.EXPERIMENT.REPORT key name: per variant its users, impressions,
/// clicks, purchases, CTR and purchase rate with 95% intervals, and each
/// variant against the control (the first): lift, p-value, significant.
pub fn report(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    let name = a.next_str("experiment name")?;
    if a.has_more() {
        return Err(
            "RECSYS.EXPERIMENT.REPORT takes the catalog key and one experiment name".into(),
        );
    }
    let catalog = catalog_at(ctx, key)?;
    let e = catalog
        .read()
        .experiments()
        .get(name)
        .cloned()
        .ok_or_else(|| format!("experiment '{name}' does not exist in catalog '{key}'"))?;
    let counts = &e.counts.variants;
    let n = |c: &recsys_core::experiment::counts::Counter| c.get();
    let control = &counts[0];
    let variants = e
        .variants
        .iter()
        .zip(counts)
        .enumerate()
        .map(|(i, (v, c))| {
            let (imp, clicks, buys) = (n(&c.impressions), n(&c.clicks), n(&c.purchases));
            let mut f: Vec<(String, Reply)> = vec![
                ("name".into(), Reply::Text(v.name.clone())),
                ("weight".into(), Reply::Int(v.weight as i64)),
                ("options".into(), Reply::Text(v.options.clone())),
                ("users".into(), Reply::Int(c.users.estimate() as i64)),
                ("impressions".into(), Reply::Int(imp as i64)),
                ("clicks".into(), Reply::Int(clicks as i64)),
                ("purchases".into(), Reply::Int(buys as i64)),
            ];
            rate_fields(&mut f, "ctr", wilson(clicks, imp));
            rate_fields(&mut f, "purchase_rate", wilson(buys, imp));
            if i > 0 {
                let base = n(&control.impressions);
                for (what, s1, s0) in [
                    ("ctr", clicks, n(&control.clicks)),
                    ("purchase_rate", buys, n(&control.purchases)),
                ] {
                    let cmp = compare(s1, imp, s0, base);
                    f.push((format!("{what}_lift"), Reply::Double(cmp.lift)));
                    f.push((format!("{what}_p_value"), Reply::Double(cmp.p_value)));
                    f.push((
                        format!("{what}_significant"),
                        Reply::Int(cmp.significant as i64),
                    ));
                }
            }
            Reply::Map(f)
        })
        .collect();
    let u = &e.counts.unattributed;
    Ok(Reply::Map(vec![
        ("experiment".into(), Reply::Text(e.name.clone())),
        ("generation".into(), Reply::Int(e.generation as i64)),
        ("control".into(), Reply::Text(e.variants[0].name.clone())),
        ("variants".into(), Reply::Array(variants)),
        ("expired_requests".into(), Reply::Int(n(&u.expired) as i64)),
        (
            "mismatched_requests".into(),
            Reply::Int(n(&u.mismatched) as i64),
        ),
        (
            "duplicate_feedback".into(),
            Reply::Int(n(&u.duplicates) as i64),
        ),
        (
            "remembered_credits".into(),
            Reply::Int(e.remembered() as i64),
        ),
    ]))
}
