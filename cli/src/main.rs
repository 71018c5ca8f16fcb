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
    /// Reads interactions (MovieLens, CSV) or generates a shop, into one dataset file.
    Import(recsys_cli::verbs::import::Import),
    /// Trains ALS item and user embeddings on a dataset.
    Train(recsys_cli::verbs::train::Train),
    /// Loads a trained dataset into Redis: catalog (vectors, attributes, popularity) and user hashes.
    Load(recsys_cli::verbs::load::Load),
    /// Measures recall@10 and NDCG@10 through Redis (RECSYS.RECOMMEND) next to popularity and in-process ALS.
    Eval(recsys_cli::verbs::eval::Eval),
    /// Writes every loaded user's recommendations into lists (RECSYS.BATCH), with a progress bar.
    Batch(recsys_cli::verbs::batch::Batch),
    /// Rewrites user hashes' binary `seen` field (written before text was the format) as text.
    MigrateUsers(recsys_cli::verbs::migrate::MigrateUsers),
    /// Simulated users click RECOMMEND ... EXPERIMENT answers of a loaded dataset and credit the clicks; prints the experiment's report.
    Simulate(recsys_cli::verbs::simulate::Simulate),
    /// A guided tour on generated data (starts its own redis-server unless --redis is given).
    Demo(recsys_cli::demo::Demo),
    /// Benchmarks (figures for docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Random and half-valid arguments at every command (and mutated DUMP payloads at RESTORE) against a real server; fails on a death, an internal error, a hang or an unloadable dataset.
    Fuzz(recsys_cli::fuzz::Fuzz),
    /// Writes the DLRM weight fixtures (tests/fixtures; ONNX versions come from scripts/make_onnx_fixtures.py).
    Fixtures(recsys_cli::fixtures::Fixtures),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Every benchmark, written as docs/benchmarks.md with the machine, commit and date.
    All(recsys_cli::bench::all::AllBench),
    /// HNSW build and query speed vs hnswlib on the same vectors.
    Index(recsys_cli::bench::index::IndexBench),
    /// ALS training speed per iteration next to implicit (PyPI) on ~10M generated interactions.
    Als(recsys_cli::bench::als::AlsBench),
    /// The tool on MovieLens 100K: import, train, load, and recall/NDCG through Redis.
    Quality(recsys_cli::bench::quality::QualityBench),
    /// Index quality under churn: rounds of deleting and re-adding items.
    Churn(recsys_cli::bench::churn::ChurnBench),
    /// SEARCH / SIMILAR through redis-server with redis-benchmark, next to GET.
    Redis(recsys_cli::bench::redis::RedisBench),
    /// This module beside RediSearch in one Redis 7.4 server: KNN and filtered KNN, recall and req/s.
    Redisearch(recsys_cli::bench::redisearch::RediSearchBench),
    /// Where an exact scan stops beating the graph walk, per metric, dimension and EF.
    Scan(recsys_cli::bench::scan::ScanBench),
    /// One request's latency on a small catalog (one pipelining client, next to PING), WHERE vs none.
    Small(recsys_cli::bench::small::SmallBench),
    /// RECOMMEND and EVENT through redis-server, next to GET, with the EXPLAIN split.
    Recommend(recsys_cli::bench::recommend::RecommendBench),
    /// WHERE filters in the core pipeline: in-graph walk vs scan.
    Filters(recsys_cli::bench::filters::FilterBench),
    /// Plugin call cost, and RECOMMEND with plugins vs without through Redis.
    Plugins(recsys_cli::bench::plugins::PluginBench),
    /// Ranking: the reference DLRM native vs ONNX Runtime (and GPU), batch sizes, RECOMMEND ... RANK through Redis.
    Rank(recsys_cli::bench::rank::RankBench),
    /// Redis Cluster: RECOMMEND on 1 node vs N masters, write fan-out, catch-up of a new node.
    Cluster(recsys_cli::bench::cluster::ClusterBench),
    /// Embedding tables as row keys over a cluster (HPS): hit rate and RANK latency by cache size.
    Hps(recsys_cli::bench::hps::HpsBench),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Demo(d) => recsys_cli::demo::run(&d),
        Cmd::Import(a) => recsys_cli::verbs::import::run(&a),
        Cmd::Train(a) => recsys_cli::verbs::train::run(&a),
        Cmd::Load(a) => recsys_cli::verbs::load::run(&a),
        Cmd::Eval(a) => recsys_cli::verbs::eval::run(&a),
        Cmd::Batch(a) => recsys_cli::verbs::batch::run(&a),
        Cmd::MigrateUsers(a) => recsys_cli::verbs::migrate::run(&a),
        Cmd::Simulate(a) => recsys_cli::verbs::simulate::run(&a),
        Cmd::Fixtures(f) => recsys_cli::fixtures::run(&f),
        Cmd::Fuzz(f) => recsys_cli::fuzz::main(&f),
        Cmd::Bench(BenchCmd::All(b)) => recsys_cli::bench::all::run(&b),
        Cmd::Bench(BenchCmd::Filters(b)) => recsys_cli::bench::filters::run(&b),
        Cmd::Bench(BenchCmd::Index(b)) => recsys_cli::bench::index::run(&b),
        Cmd::Bench(BenchCmd::Churn(b)) => recsys_cli::bench::churn::run(&b),
        Cmd::Bench(BenchCmd::Als(b)) => recsys_cli::bench::als::run(&b),
        Cmd::Bench(BenchCmd::Quality(b)) => recsys_cli::bench::quality::run(&b),
        Cmd::Bench(BenchCmd::Redis(b)) => recsys_cli::bench::redis::run(&b),
        Cmd::Bench(BenchCmd::Redisearch(b)) => recsys_cli::bench::redisearch::run(&b),
        Cmd::Bench(BenchCmd::Scan(b)) => recsys_cli::bench::scan::run(&b),
        Cmd::Bench(BenchCmd::Small(b)) => recsys_cli::bench::small::run(&b),
        Cmd::Bench(BenchCmd::Recommend(b)) => recsys_cli::bench::recommend::run(&b),
        Cmd::Bench(BenchCmd::Plugins(b)) => recsys_cli::bench::plugins::run(&b),
        Cmd::Bench(BenchCmd::Rank(b)) => recsys_cli::bench::rank::run(&b),
        Cmd::Bench(BenchCmd::Cluster(b)) => recsys_cli::bench::cluster::run(&b),
        Cmd::Bench(BenchCmd::Hps(b)) => recsys_cli::bench::hps::run(&b),
    }
}
