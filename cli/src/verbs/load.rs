//! `recsys load`: the catalog, users and popularity into a Redis server with
//! the module, pipelined, with the rate against an in-process build.

use anyhow::Result;
use clap::Args;

use super::Served;
use crate::loader::{self, CatalogSettings, Install};

#[derive(Args)]
pub struct Load {
    #[command(flatten)]
    pub target: Served,
    /// Delete an existing catalog of that name first (and the ranker rows
    /// an earlier load wrote, `<prefix>:rows:*`).
    #[arg(long)]
    pub replace: bool,
    /// Also build the catalog in this process and print the ratio of rates.
    #[arg(long)]
    pub compare: bool,
    /// Install the trained ranker as the catalog's model `ranker`: when its
    /// verdict on validation suggests it, always, or never.
    #[arg(long, value_enum, default_value_t = Install::Suggested)]
    pub ranker: Install,
    /// Blend the trained sequence tower into every request by default (the
    /// catalog's SEQUENCE weight): when its verdict on validation suggests
    /// it, always, or never. The model is stored either way (model
    /// `sequence`), so a request can still say `SEQUENCE w`.
    #[arg(long, value_enum, default_value_t = Install::Suggested)]
    pub tower: Install,
    /// Keep the ranker's embedding tables out of its file, as Redis keys
    /// `<prefix>:rows:<table>:<id>` (SCHEMA ... ROWS, docs/ranking.md): a
    /// training job can then update rows one by one while serving.
    #[arg(long)]
    pub ranker_rows: bool,
}

pub fn run(a: &Load) -> Result<()> {
    let (ds, emb, mut con) = a.target.open()?;
    let keys = a.target.keys();
    let settings = CatalogSettings {
        ranker: a.ranker,
        tower: a.tower,
        ranker_rows: a.ranker_rows,
        ..CatalogSettings::default()
    };
    let bar = super::bar((ds.items.len() + ds.users.len()) as u64, "loading");
    let report = loader::load(
        &mut con,
        &ds,
        &emb,
        &keys,
        &settings,
        a.replace,
        |what, done, _| {
            bar.set_message(what.to_string());
            let offset = if what == "users" { ds.items.len() } else { 0 };
            bar.set_position((offset + done) as u64);
        },
    )?;
    bar.finish_and_clear();
    println!("{}", report.summary(&keys.catalog()));
    let s = emb.manifest.session;
    println!(
        "default SESSION {} {} ({}); ranker: {}",
        s.items,
        s.weight,
        if emb.manifest.tuning.is_some() {
            "chosen on validation"
        } else {
            "as given to recsys train"
        },
        match (&emb.ranker, emb.manifest.ranker) {
            (None, _) => "none trained".to_string(),
            (Some(_), v) if settings.installs_ranker(&emb) => format!(
                "installed as model '{}'{}{}",
                loader::RANKER,
                v.map(|v| format!(" ({})", v.describe()))
                    .unwrap_or_default(),
                if settings.ranker_rows {
                    format!(", its tables as row keys {}*", keys.ranker_rows())
                } else {
                    String::new()
                }
            ),
            (Some(_), v) => format!(
                "left out{} (--ranker always installs it)",
                v.map(|v| format!(": {}", v.describe())).unwrap_or_default()
            ),
        }
    );
    match settings.sequence_weight(&emb) {
        None => println!("sequence tower: none trained"),
        Some(w) => println!(
            "sequence tower: stored as model '{}', catalog default SEQUENCE {w}{}{}",
            loader::SEQUENCE_MODEL,
            emb.manifest
                .tower
                .map(|v| format!(" ({})", v.describe()))
                .unwrap_or_default(),
            if w == 0.0 {
                " (--tower always blends it in)"
            } else {
                ""
            }
        ),
    }
    if a.compare {
        let local = loader::in_process_build_rate(&ds, &emb, &settings)?;
        println!(
            "in-process build: {local:.0} items/s; through Redis: {:.1}% of it",
            100.0 * report.items_per_second() / local
        );
    }
    Ok(())
}
