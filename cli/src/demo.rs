//! `recsys demo`: a guided tour on generated data. Starts its own redis-server
//! with the module unless `--redis URL` is given, loads a small catalog of
//! "movies" with attributes, and shows searches, similar items and INFO.

use anyhow::Result;
use recsys::rank::dlrm::{Dlrm, DlrmShape};
use recsys::rng::SplitMix;
use recsys::synth::clustered_lowrank;
use recsys::vector::to_fp32_blob;
use redis::Value;

use crate::server::RedisServer;

#[derive(clap::Args, Debug, Clone)]
pub struct Demo {
    /// Use this Redis (with the module loaded) instead of starting one.
    #[arg(long)]
    pub redis: Option<String>,
    /// Items to generate.
    #[arg(long, default_value_t = 5_000)]
    pub items: usize,
}

const GENRES: [&str; 8] = [
    "drama",
    "comedy",
    "action",
    "horror",
    "romance",
    "scifi",
    "documentary",
    "animation",
];

fn show(title: &str, cmd: &str, v: &Value) {
    let pairs = cmd.contains("WITHSCORES") || cmd.contains("INFO") || cmd.contains("EXPLAIN");
    println!("\n> {cmd}\n  # {title}");
    match v {
        Value::Array(items) if !pairs => {
            println!("  {}", items.iter().map(fmt).collect::<Vec<_>>().join("  "));
        }
        Value::Array(items) => {
            for pair in items.chunks(2) {
                let text: Vec<String> = pair.iter().map(fmt).collect();
                println!("  {}", text.join("  "));
            }
        }
        other => println!("  {}", fmt(other)),
    }
}

fn fmt(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).to_string(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => format!("{d:.4}"),
        Value::Nil => "(nil)".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(fmt).collect::<Vec<_>>().join(", ")),
        other => format!("{other:?}"),
    }
}

/// A ranking model: a small DLRM (generated weights, as a team would export
/// from training) over user and item features, then RECOMMEND ... RANK.
fn rank_step(c: &mut redis::Connection) -> Result<()> {
    let shape = DlrmShape {
        dense: 2,
        cardinalities: vec![GENRES.len(), 16],
        dim: 8,
        bottom: vec![16, 8],
        top: vec![16, 1],
    };
    let weights = Dlrm::generate(&shape, 1);
    let schema = format!(
        "DENSE user.age DEFAULT 30 DENSE score SPARSE item.genre {} VOCAB {} SPARSE user.country 16 HASH",
        GENRES.len(),
        GENRES.join(",")
    );
    let v: Value = redis::cmd("RECSYS.MODEL.SET")
        .arg("demo:movies")
        .arg("ctr")
        .arg("DLRM")
        .arg(weights)
        .arg("SCHEMA")
        .arg(&schema)
        .query(c)?;
    show(
        "a click-through model (native DLRM, safetensors weights) with its feature schema",
        &format!("RECSYS.MODEL.SET demo:movies ctr DLRM <safetensors> SCHEMA {schema}"),
        &v,
    );
    let _: i64 = redis::cmd("HSET")
        .arg("demo:user:1")
        .arg("age")
        .arg(41)
        .arg("country")
        .arg("fr")
        .query(c)?;
    println!("\n> HSET demo:user:1 age 41 country fr");
    let v: Value = redis::cmd("RECSYS.RECOMMEND")
        .arg("demo:movies")
        .arg("demo:user:1")
        .arg("K")
        .arg(5)
        .arg("CANDIDATES")
        .arg(100)
        .arg("RANK")
        .arg("ctr")
        .arg("WITHSCORES")
        .query(c)?;
    show(
        "100 candidates scored by the model in one batch; best predicted click first",
        "RECSYS.RECOMMEND demo:movies demo:user:1 K 5 CANDIDATES 100 RANK ctr WITHSCORES",
        &v,
    );
    Ok(())
}

pub fn run(d: &Demo) -> Result<()> {
    let _server;
    let url = match &d.redis {
        Some(u) => u.clone(),
        None => {
            let s = RedisServer::start(&[], &[])?;
            println!(
                "started redis-server with the recsys module on port {} ({})",
                s.port,
                s.module.display()
            );
            let u = s.url();
            _server = s;
            u
        }
    };
    let mut c = redis::Client::open(url)?.get_connection()?;
    let dim = 32;
    let _: Value = redis::cmd("DEL").arg("demo:movies").query(&mut c)?;
    let _: () = redis::cmd("RECSYS.CREATE")
        .arg("demo:movies")
        .arg("DIM")
        .arg(dim)
        .arg("METRIC")
        .arg("COSINE")
        .query(&mut c)?;
    println!("> RECSYS.CREATE demo:movies DIM {dim} METRIC COSINE");
    // Clusters stand for genres: movie i belongs to the cluster nearest its vector.
    let vectors = clustered_lowrank(d.items, dim, GENRES.len(), 8, 1);
    let mut rng = SplitMix::new(3);
    let mut pipe = redis::pipe();
    for (i, v) in vectors.iter().enumerate() {
        let genre = GENRES[i % GENRES.len()];
        let attrs = format!(
            r#"{{"genre":"{genre}","year":{},"in_stock":{}}}"#,
            1970 + rng.below(55),
            rng.uniform() < 0.9
        );
        pipe.cmd("RECSYS.ITEM.SET")
            .arg("demo:movies")
            .arg(format!("movie:{i}"))
            .arg("FP32")
            .arg(to_fp32_blob(v))
            .arg("ATTRS")
            .arg(attrs)
            .ignore();
    }
    let t = std::time::Instant::now();
    pipe.query::<()>(&mut c)?;
    println!(
        "> RECSYS.ITEM.SET demo:movies movie:<i> FP32 <blob> ATTRS {{...}}   x {} ({:.2} s)",
        d.items,
        t.elapsed().as_secs_f64()
    );

    let user = &vectors[42];
    let v: Value = redis::cmd("RECSYS.SEARCH")
        .arg("demo:movies")
        .arg(5)
        .arg("FP32")
        .arg(to_fp32_blob(user))
        .arg("WITHSCORES")
        .query(&mut c)?;
    show(
        "top 5 movies for a user vector (cosine similarity)",
        "RECSYS.SEARCH demo:movies 5 FP32 <user vector> WITHSCORES",
        &v,
    );
    let v: Value = redis::cmd("RECSYS.SIMILAR")
        .arg("demo:movies")
        .arg("movie:7")
        .arg(5)
        .arg("WITHSCORES")
        .query(&mut c)?;
    show(
        "movies like movie:7, never itself",
        "RECSYS.SIMILAR demo:movies movie:7 5 WITHSCORES",
        &v,
    );
    let v: Value = redis::cmd("RECSYS.ITEM.GET")
        .arg("demo:movies")
        .arg("movie:7")
        .query(&mut c)?;
    if let Value::Array(a) = &v {
        println!(
            "\n> RECSYS.ITEM.GET demo:movies movie:7\n  # vector (first 4 of {dim}) and attributes"
        );
        if let Some(Value::Array(vec)) = a.get(1) {
            println!(
                "  vector  [{} ...]",
                vec.iter().take(4).map(fmt).collect::<Vec<_>>().join(", ")
            );
        }
        println!("  attrs   {}", a.get(3).map(fmt).unwrap_or_default());
    }
    // Recommendations: a user with a few events, then the pipeline.
    for movie in ["movie:11", "movie:19", "movie:27"] {
        let _: Value = redis::cmd("RECSYS.EVENT")
            .arg("demo:movies")
            .arg("demo:user:1")
            .arg(movie)
            .arg("TYPE")
            .arg("view")
            .query(&mut c)?;
    }
    println!(
        "\n> RECSYS.EVENT demo:movies demo:user:1 movie:11 TYPE view   (and movie:19, movie:27)"
    );
    let v: Value = redis::cmd("HGET")
        .arg("demo:user:1")
        .arg("recent")
        .query(&mut c)?;
    show(
        "the user's recent items live in an ordinary hash",
        "HGET demo:user:1 recent",
        &v,
    );
    let v: Value = redis::cmd("RECSYS.RECOMMEND")
        .arg("demo:movies")
        .arg("demo:user:1")
        .arg("K")
        .arg(5)
        .arg("WHERE")
        .arg("in_stock && year >= 1990")
        .arg("EXCLUDE_SEEN")
        .arg("DIVERSITY")
        .arg("genre")
        .arg(2)
        .arg("WITHSCORES")
        .query(&mut c)?;
    show(
        "5 in-stock movies from 1990 on, like the ones watched, not seen yet, at most 2 per genre",
        "RECSYS.RECOMMEND demo:movies demo:user:1 K 5 WHERE 'in_stock && year >= 1990' EXCLUDE_SEEN DIVERSITY genre 2 WITHSCORES",
        &v,
    );
    let v: Value = redis::cmd("RECSYS.RECOMMEND")
        .arg("demo:movies")
        .arg("demo:user:new")
        .arg("K")
        .arg(3)
        .query(&mut c)?;
    show(
        "a new user gets the most popular movies (cold start)",
        "RECSYS.RECOMMEND demo:movies demo:user:new K 3",
        &v,
    );
    rank_step(&mut c)?;
    let v: Value = redis::cmd("RECSYS.RECOMMEND")
        .arg("demo:movies")
        .arg("demo:user:1")
        .arg("K")
        .arg(3)
        .arg("RANK")
        .arg("ctr")
        .arg("EXPLAIN")
        .query(&mut c)?;
    if let Value::Array(a) = &v {
        show(
            "what each stage did",
            "RECSYS.RECOMMEND demo:movies demo:user:1 K 3 RANK ctr EXPLAIN",
            a.get(3).unwrap_or(&Value::Nil),
        );
    }

    let v: Value = redis::cmd("RECSYS.ITEM.DEL")
        .arg("demo:movies")
        .arg("movie:8")
        .query(&mut c)?;
    show(
        "deleted items are never returned",
        "RECSYS.ITEM.DEL demo:movies movie:8",
        &v,
    );
    let v: Value = redis::cmd("RECSYS.INFO").arg("demo:movies").query(&mut c)?;
    show("catalog facts", "RECSYS.INFO demo:movies", &v);
    let e = redis::cmd("RECSYS.SEARCH")
        .arg("demo:movies")
        .arg(5)
        .arg("VALUES")
        .arg(1)
        .arg(2)
        .query::<Value>(&mut c);
    println!(
        "\n> RECSYS.SEARCH demo:movies 5 VALUES 1 2\n  # bad input gets a clear error\n  {}",
        e.err().map(|e| e.to_string()).unwrap_or_default()
    );
    println!(
        "\nTry it yourself: redis-cli -u <url> RECSYS.SIMILAR demo:movies movie:1 10 WITHSCORES"
    );
    Ok(())
}
