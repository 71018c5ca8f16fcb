//! `recsys`: demo, benchmarks and tools for redis-recsys.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "recsys",
    version,
    about = "redis-recsys: demo, benchmarks and tools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmarks (figures for docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// HNSW build and query speed vs hnswlib on the same vectors.
    Index(recsys_cli::bench::index::IndexBench),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Bench(BenchCmd::Index(b)) => recsys_cli::bench::index::run(&b),
    }
}
