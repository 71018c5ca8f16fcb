//! The `recsys` tool end to end on generated data (a fresh machine has no
//! MovieLens): generate -> train -> load into a real redis-server -> eval
//! through RECSYS.RECOMMEND, against the planted structure.

mod common;
use common::*;
use recsys_cli::data::generate::{shop, Shape};
use recsys_cli::loader::{self, CatalogSettings, Install, Keys};
use recsys_cli::train::als::AlsParams;
use recsys_cli::train::{Embeddings, Plan};
use recsys_cli::verbs::eval::evaluate;
use redis::Value;

fn small_shop() -> recsys_cli::data::Dataset {
    shop(Shape {
        users: 500,
        items: 800,
        per_user: 25,
        seed: 3,
    })
}

#[test]
fn train_load_eval_round_trip_beats_popularity_through_redis() {
    let ds = small_shop();
    let emb = recsys_cli::train::fit(&ds, &Plan::default(), |_| {}).unwrap();
    let tuning = emb.manifest.tuning.clone().expect("chosen on validation");
    let verdict = emb.manifest.ranker.expect("a verdict on validation");
    assert!(tuning.chosen.ndcg >= tuning.given.ndcg, "{tuning:?}");
    assert!(
        verdict.epochs >= 1 && verdict.retrieval_ndcg > 0.0,
        "{verdict:?}"
    );
    // The model directory round-trips through its manifest.
    let dir = tempfile::tempdir().unwrap();
    emb.save(dir.path()).unwrap();
    let loaded = Embeddings::load(dir.path()).unwrap();
    assert!(loaded.factors == emb.factors && loaded.ranker == emb.ranker);
    assert_eq!(loaded.manifest.tuning, emb.manifest.tuning);
    assert_eq!(
        (
            loaded.manifest.als,
            loaded.manifest.session,
            loaded.manifest.ranker
        ),
        (emb.manifest.als, emb.manifest.session, emb.manifest.ranker)
    );
    assert_eq!(
        loaded.manifest.files,
        [
            "als.bin",
            "ranker.safetensors",
            "ranker.schema",
            "tower.safetensors"
        ]
    );
    assert!(loaded.tower.is_some() && loaded.tower == emb.tower);
    assert_eq!(loaded.manifest.tower, emb.manifest.tower);
    let s = server();
    let mut c = s.connection().unwrap();
    let keys = Keys { prefix: "t".into() };
    // By default the ranker goes in only when validation suggests it.
    let settings = CatalogSettings::default();
    loader::load(&mut c, &ds, &emb, &keys, &settings, false, |_, _, _| {}).unwrap();
    let list: Vec<Vec<redis::Value>> = redis::cmd("RECSYS.MODEL.LIST")
        .arg("t:items")
        .query(&mut c)
        .unwrap();
    // Each model is a map (a flat array in RESP2): its name follows "name".
    let models: Vec<String> = list
        .iter()
        .map(|m| redis::from_redis_value(&m[1]).unwrap())
        .collect();
    assert_eq!(
        models.contains(&"ranker".to_string()),
        verdict.suggested,
        "{models:?} {verdict:?}"
    );
    // The sequence tower is stored either way; requests blend it in by
    // default only when validation suggests it.
    let tower = emb.manifest.tower.expect("a tower verdict on validation");
    assert!(models.contains(&"sequence".to_string()), "{models:?}");
    // The catalog's default SESSION is the one chosen on validation.
    let info: std::collections::HashMap<String, redis::Value> = redis::cmd("RECSYS.INFO")
        .arg("t:items")
        .query(&mut c)
        .unwrap();
    let session: String = redis::from_redis_value(&info["session"]).unwrap();
    let chosen = emb.manifest.session;
    assert_eq!(
        session
            .split_whitespace()
            .map(|x| x.parse::<f64>().unwrap())
            .collect::<Vec<_>>(),
        vec![chosen.items as f64, chosen.weight as f64],
        "{session}"
    );
    let sequence: f64 = redis::from_redis_value::<String>(&info["sequence"])
        .unwrap()
        .parse()
        .unwrap();
    let want = if tower.suggested { tower.weight } else { 0.0 };
    assert_eq!(sequence, want as f64, "{tower:?}");
    let settings = CatalogSettings {
        ranker: Install::Always,
        ..CatalogSettings::default()
    };
    let report = loader::load(&mut c, &ds, &emb, &keys, &settings, true, |_, _, _| {}).unwrap();
    assert_eq!((report.items, report.users), (800, 500));
    assert_eq!(info_field(&mut c, "t:items", "items"), 800);
    // The user hash holds what the pipeline reads.
    let fields: Vec<String> = redis::cmd("HKEYS").arg("t:user:u0").query(&mut c).unwrap();
    for f in ["emb", "recent", "seen", "age", "gender", "occupation"] {
        assert!(fields.contains(&f.to_string()), "{fields:?}");
    }
    let r = evaluate(&mut c, &ds, &emb, &keys, &[]).unwrap();
    let pop = r.row("popularity").unwrap().recall;
    let served_row = r
        .rows
        .iter()
        .find(|r| r.how.contains("(catalog defaults)"))
        .unwrap();
    let served = served_row.metrics;
    let exact = r
        .rows
        .iter()
        .find(|x| x.how == "in-process, exact" && x.name == served_row.name)
        .unwrap()
        .metrics;
    // Rows are labelled with the blend they ran (the one chosen, or a
    // request's own SESSION).
    let s = emb.manifest.session;
    if s.is_on() {
        assert!(
            served_row
                .name
                .starts_with(&format!("ALS + SESSION {} {}", s.items, s.weight)),
            "{}",
            served_row.name
        );
    }
    // Every served row but the ranker's has its exact in-process twin,
    // the sequence tower's included (served with `SEQUENCE w` when the
    // default leaves it out).
    let towered = r
        .rows
        .iter()
        .filter(|x| {
            x.us_per_user.is_some() && x.name.contains("sequence x") && !x.name.contains("ranker")
        })
        .count();
    assert_eq!(towered, 1, "{:?}", r.rows);
    for row in r
        .rows
        .iter()
        .filter(|x| x.us_per_user.is_some() && !x.name.contains("ranker"))
    {
        let twin = r
            .rows
            .iter()
            .find(|x| x.how == "in-process, exact" && x.name == row.name)
            .unwrap_or_else(|| panic!("no in-process row for {row:?}"));
        assert!(
            (row.metrics.recall - twin.metrics.recall).abs() < 0.02,
            "through Redis {row:?} ~ exact {twin:?}"
        );
    }
    let own = evaluate(
        &mut c,
        &ds,
        &emb,
        &keys,
        &["SESSION".into(), "7".into(), "0.5".into()],
    )
    .unwrap();
    assert!(own
        .rows
        .iter()
        .any(|r| r.name == "ALS + SESSION 7 0.5" && r.us_per_user.is_some()));
    // The trained ranker was loaded and serves (its quality: docs/benchmarks.md).
    let ranked = r.rows.last().unwrap();
    assert!(
        ranked.name.contains("ranker") && ranked.metrics.recall > pop,
        "{ranked:?}"
    );
    assert!(
        served.recall > 1.5 * pop && served.ndcg > 1.5 * r.row("popularity").unwrap().ndcg,
        "planted structure: served {served:?} vs popularity {pop}"
    );
    assert!(
        (served.recall - exact.recall).abs() < 0.02,
        "through Redis {served:?} ~ exact {exact:?}"
    );
    // No test item reached a user's `recent` or `seen` in Redis.
    let split = emb.split(&ds);
    for (u, test) in split.evaluated() {
        let test = &ds.items[test as usize].id;
        let (recent, seen): (String, Vec<u8>) = redis::cmd("HMGET")
            .arg(keys.user(&ds.users[u]))
            .arg("recent")
            .arg("seen")
            .query(&mut c)
            .unwrap();
        let recent: Vec<String> = serde_json::from_str(&recent).unwrap();
        assert!(!recent.contains(test), "user {u}: {test} in recent");
        let seen = recsys::user::SeenSet::parse(Some(&seen), || "u".into()).unwrap();
        assert!(!seen.contains(test), "user {u}: {test} in seen");
        assert!(split.train[u]
            .iter()
            .all(|&i| ds.items[i as usize].id != *test));
    }
    // EXCLUDE_SEEN held: no training positive of any user comes back.
    for u in (0..ds.users.len()).step_by(25) {
        let got: Vec<String> = redis::cmd("RECSYS.RECOMMEND")
            .arg("t:items")
            .arg(keys.user(&ds.users[u]))
            .arg("K")
            .arg(20)
            .arg("EXCLUDE_SEEN")
            .query(&mut c)
            .unwrap();
        assert_eq!(got.len(), 20);
        for &i in &split.train[u] {
            assert!(!got.contains(&ds.items[i as usize].id));
        }
    }
    // The same ranker with its embedding tables as row keys (`recsys load
    // --ranker-rows`) gives every user the same ranked items and scores.
    let rows_keys = Keys { prefix: "r".into() };
    let rows_settings = CatalogSettings {
        ranker: Install::Always,
        ranker_rows: true,
        ..CatalogSettings::default()
    };
    loader::load(
        &mut c,
        &ds,
        &emb,
        &rows_keys,
        &rows_settings,
        false,
        |_, _, _| {},
    )
    .unwrap();
    let info: std::collections::HashMap<String, Value> = redis::cmd("RECSYS.MODEL.INFO")
        .arg("r:items")
        .arg("ranker")
        .query(&mut c)
        .unwrap();
    let schema: String = redis::from_redis_value(&info["schema"]).unwrap();
    assert!(schema.contains("ROWS r:rows:0:"), "{schema}");
    let row_keys: Vec<String> = redis::cmd("KEYS").arg("r:rows:*").query(&mut c).unwrap();
    let tables = schema.matches(" ROWS ").count();
    assert!(
        tables >= 2 && row_keys.len() > tables,
        "{schema} {}",
        row_keys.len()
    );
    let ranked = |c: &mut redis::Connection, cat: &str, user: String| -> Vec<(String, f64)> {
        redis::cmd("RECSYS.RECOMMEND")
            .arg(cat)
            .arg(user)
            .arg("K")
            .arg(10)
            .arg("RANK")
            .arg("ranker")
            .arg("WITHSCORES")
            .query(c)
            .unwrap()
    };
    for u in (0..ds.users.len()).step_by(50) {
        let id = &ds.users[u];
        let in_file = ranked(&mut c, "t:items", keys.user(id));
        let as_rows = ranked(&mut c, "r:items", rows_keys.user(id));
        assert_eq!(in_file.len(), 10);
        for ((a, x), (b, y)) in in_file.iter().zip(&as_rows) {
            assert!(
                a == b && (x - y).abs() < 1e-6,
                "user {id}: {in_file:?} vs {as_rows:?}"
            );
        }
    }
    // Loading over it (--replace) without rows deletes the rows it wrote.
    let settings = CatalogSettings {
        ranker: Install::Always,
        ..CatalogSettings::default()
    };
    loader::load(&mut c, &ds, &emb, &rows_keys, &settings, true, |_, _, _| {}).unwrap();
    let left: Vec<String> = redis::cmd("KEYS").arg("r:rows:*").query(&mut c).unwrap();
    assert!(left.is_empty(), "{} rows left", left.len());
    let schema: String = redis::from_redis_value(
        &redis::cmd("RECSYS.MODEL.INFO")
            .arg("r:items")
            .arg("ranker")
            .query::<std::collections::HashMap<String, Value>>(&mut c)
            .unwrap()["schema"],
    )
    .unwrap();
    assert!(!schema.contains("ROWS"), "{schema}");
    // A batch over every loaded user, followed to the end.
    let id = batch_id(
        &redis::cmd("RECSYS.BATCH")
            .arg("t:items")
            .arg("MATCH")
            .arg(keys.user_pattern())
            .arg("K")
            .arg(5)
            .arg("INTO")
            .arg("recs:")
            .arg("EXCLUDE_SEEN")
            .query::<Value>(&mut c)
            .unwrap(),
    );
    let status = recsys_cli::verbs::batch::follow(&mut c, id, Some(500)).unwrap();
    assert_eq!(status["state"], "done");
    assert_eq!(status["written"], "500");
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("recs:{t:user:u0}")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(list.len(), 5);
    // Loading again needs --replace; with it the catalog is rebuilt.
    let e = loader::load(&mut c, &ds, &emb, &keys, &settings, false, |_, _, _| {}).unwrap_err();
    assert!(format!("{e:#}").contains("exists"), "{e:#}");
    loader::load(&mut c, &ds, &emb, &keys, &settings, true, |_, _, _| {}).unwrap();
    assert_eq!(info_field(&mut c, "t:items", "items"), 800);
    // Artifacts of another dataset, or without the held-out split, are refused.
    let other = shop(Shape {
        seed: 4,
        ..Shape::default()
    });
    let e = loader::load(&mut c, &other, &emb, &keys, &settings, true, |_, _, _| {}).unwrap_err();
    assert!(format!("{e:#}").contains("not on this dataset"), "{e:#}");
    let full = recsys_cli::train::fit(
        &ds,
        &Plan {
            holdout: false,
            tune: None,
            ranker: None,
            ..Plan::default()
        },
        |_| {},
    )
    .unwrap();
    let e = evaluate(&mut c, &ds, &full, &keys, &[]).unwrap_err();
    assert!(format!("{e:#}").contains("--holdout"), "{e:#}");
    assert_eq!(
        cmd(&mut c, "PING").unwrap(),
        Value::SimpleString("PONG".into())
    );
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let ds = small_shop();
    let plan = |seed| Plan {
        als: AlsParams {
            iterations: 3,
            seed,
            ..AlsParams::default()
        },
        tune: None,
        ranker: None,
        ..Plan::default()
    };
    let fit = |seed| recsys_cli::train::fit(&ds, &plan(seed), |_| {}).unwrap();
    let a = fit(1);
    assert_eq!(a, fit(1));
    assert_ne!(a.factors, fit(9).factors);
}

/// `target/release/recsys` (or debug), next to this test's executable.
fn recsys_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("recsys");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (scripts/setup.sh)",
        bin.display()
    );
    bin
}

#[test]
fn the_documented_walkthrough_runs() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tool.md")).unwrap();
    let block = doc
        .split("<!-- walkthrough -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /walkthrough -->").next())
        .expect("docs/tool.md has the walkthrough block");
    let lines: Vec<&str> = block.lines().filter(|l| l.starts_with("recsys ")).collect();
    assert_eq!(lines.len(), 5, "{block}");
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let bin = recsys_binary();
    for line in &lines {
        let line = line.replace("127.0.0.1:6379", &format!("127.0.0.1:{}", s.port));
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let out = std::process::Command::new(&bin)
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("eval.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let served = rows.last().unwrap()["recall"].as_f64().unwrap();
    let popularity = rows[0]["recall"].as_f64().unwrap();
    assert!(served > popularity, "{report}");
    let mut c = s.connection().unwrap();
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("recs:{shop:user:u7}")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(list.len(), 10);
    // A bad file names itself and the line, and exits non-zero.
    std::fs::write(dir.path().join("bad.csv"), "user,item\nu1,i1\nu2\n").unwrap();
    let out = std::process::Command::new(&bin)
        .args(["import", "csv", "bad.csv", "-o", "x.rsd"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.csv line 3"),
        "{err}"
    );
}
