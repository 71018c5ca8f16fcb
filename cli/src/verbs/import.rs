//! `recsys import`: MovieLens (100K or CSV), a generic CSV, or a generated
//! shop, written as one dataset file.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::data::generate::{self, Shape};
use crate::data::import::{self, Columns, GenericCsv};

#[derive(Args)]
pub struct Import {
    #[command(subcommand)]
    source: Source,
    /// The dataset file to write.
    #[arg(long, short, global = true, default_value = "dataset.rsd")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Source {
    /// A MovieLens directory: 100K (u.data, u.item, u.user) or latest-style CSV (ratings.csv, movies.csv).
    Movielens { dir: PathBuf },
    /// A CSV of interactions with a header; columns named by flags.
    Csv {
        file: PathBuf,
        #[arg(long, default_value = "user")]
        user_col: String,
        #[arg(long, default_value = "item")]
        item_col: String,
        /// Weight (rating, count) column; without it every row weighs 1.
        #[arg(long)]
        weight_col: Option<String>,
        /// Time column (seconds); without it the line order is the time order.
        #[arg(long)]
        time_col: Option<String>,
        /// A CSV of items: its other columns become attributes.
        #[arg(long)]
        items: Option<PathBuf>,
        #[arg(long, default_value = "item")]
        item_id_col: String,
        #[arg(long)]
        title_col: Option<String>,
        /// Rows weighing at least this are positives.
        #[arg(long, default_value_t = 1.0)]
        positive_min: f32,
    },
    /// A realistic generated shop (power-law popularity, taste clusters, categories, prices, titles).
    Generate {
        #[arg(long, default_value_t = Shape::default().users)]
        users: usize,
        #[arg(long, default_value_t = Shape::default().items)]
        items: usize,
        /// Mean interactions per user.
        #[arg(long, default_value_t = Shape::default().per_user)]
        per_user: usize,
        #[arg(long, default_value_t = Shape::default().seed)]
        seed: u64,
    },
}

pub fn run(a: &Import) -> Result<()> {
    let ds = match &a.source {
        Source::Movielens { dir } => import::movielens(dir)?,
        Source::Csv {
            file,
            user_col,
            item_col,
            weight_col,
            time_col,
            items,
            item_id_col,
            title_col,
            positive_min,
        } => import::generic(&GenericCsv {
            interactions: file.clone(),
            columns: Columns {
                user: user_col.clone(),
                item: item_col.clone(),
                weight: weight_col.clone(),
                time: time_col.clone(),
            },
            items: items.clone(),
            item_id_col: item_id_col.clone(),
            title_col: title_col.clone(),
            positive_min: *positive_min,
        })?,
        Source::Generate {
            users,
            items,
            per_user,
            seed,
        } => generate::shop(Shape {
            users: *users,
            items: *items,
            per_user: *per_user,
            seed: *seed,
        }),
    };
    ds.save(&a.out)?;
    println!("{}: {}", a.out.display(), ds.summary());
    Ok(())
}
