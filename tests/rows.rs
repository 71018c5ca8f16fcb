//! Embedding tables kept as Redis keys (SCHEMA ... ROWS, docs/ranking.md):
//! a DLRM whose tables are row keys ranks exactly as the same DLRM with
//! the tables in its file, on one node and on a 3-master cluster where the
//! rows are spread over every master; a row written while serving is used
//! by the next request on every node; missing, malformed and deleted rows
//! read as zeros and are counted; bad declarations are refused.

mod common;
use std::time::{Duration, Instant};

use common::*;
use recsys::rank::dlrm::{f32_tensor, write_safetensors};
use recsys::rank::rows::encode;
use recsys::vector::to_fp32_blob;
use recsys_cli::cluster::Cluster;
use redis::cluster::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Connection, ConnectionLike, Value};

const DIM: usize = 16;
const ITEMS: usize = 600;
/// The tables the tests keep as keys, and their prefixes.
const OUTSIDE: [(usize, &str); 2] = [(2, "emb2:"), (5, "emb5:")];
/// The fixture's embedding width and table rows.
const EMB: usize = 32;
const ROWS: usize = 100;

/// The reference ranker's file, the same file without the OUTSIDE tables,
/// and every table's rows.
fn files() -> (Vec<u8>, Vec<u8>, Vec<Vec<f32>>) {
    let full = fixture("dlrm_ranker.safetensors");
    let st = safetensors::SafeTensors::deserialize(&full).unwrap();
    let mut kept = Vec::new();
    let mut tables = vec![Vec::new(); 8];
    for (name, _) in st.tensors() {
        let (shape, data) = f32_tensor(&st, "fixture", &name).unwrap();
        if let Some(t) = name
            .strip_prefix("emb.")
            .and_then(|t| t.parse::<usize>().ok())
        {
            assert_eq!(shape, [ROWS, EMB]);
            tables[t] = data.clone();
            if OUTSIDE.iter().any(|(o, _)| *o == t) {
                continue;
            }
        }
        kept.push((name, shape, data));
    }
    (full.clone(), write_safetensors(&kept), tables)
}

/// The full file with `tables` in place of its embedding tables.
fn full_with(tables: &[Vec<f32>]) -> Vec<u8> {
    let full = fixture("dlrm_ranker.safetensors");
    let st = safetensors::SafeTensors::deserialize(&full).unwrap();
    let all = st
        .tensors()
        .into_iter()
        .map(|(name, _)| {
            let (shape, data) = f32_tensor(&st, "fixture", &name).unwrap();
            match name
                .strip_prefix("emb.")
                .and_then(|t| t.parse::<usize>().ok())
            {
                Some(t) => (name, shape, tables[t].clone()),
                None => (name, shape, data),
            }
        })
        .collect::<Vec<_>>();
    write_safetensors(&all)
}

fn outside_schema() -> String {
    let mut s = ranker_schema();
    for (t, prefix) in OUTSIDE {
        s = s.replace(
            &format!("SPARSE item.c{t} 100"),
            &format!("SPARSE item.c{t} 100 ROWS {prefix}"),
        );
    }
    s
}

fn model_set(name: &str, bytes: &[u8], schema: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("RECSYS.MODEL.SET");
    cmd.arg("cat")
        .arg(name)
        .arg("DLRM")
        .arg(bytes)
        .arg("ROLE")
        .arg("RANK")
        .arg("SCHEMA")
        .arg(schema.split_whitespace().collect::<Vec<_>>());
    cmd
}

fn item_set(i: usize, v: &[f32]) -> redis::Cmd {
    let attrs: Vec<String> = (0..8)
        .map(|k| format!("\"c{k}\":{}", (i * 7 + k * 13) % ROWS))
        .collect();
    let mut cmd = redis::cmd("RECSYS.ITEM.SET");
    cmd.arg("cat")
        .arg(format!("item:{i}"))
        .arg("FP32")
        .arg(to_fp32_blob(v))
        .arg("ATTRS")
        .arg(format!("{{{}}}", attrs.join(",")));
    cmd
}

fn user_set(u: usize, emb: &[f32]) -> redis::Cmd {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(format!("u:{u}"));
    for i in 0..8 {
        cmd.arg(format!("d{i}")).arg(format!(
            "{:.3}",
            ((u * 31 + i * 17) % 29) as f32 / 7.0 - 2.0
        ));
    }
    cmd.arg("emb").arg(to_fp32_blob(emb));
    cmd
}

fn row_set(prefix: &str, id: usize, row: &[f32]) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(format!("{prefix}{id}")).arg(encode(row));
    cmd
}

/// RECOMMEND ... RANK `model` WITHSCORES for `user`.
fn rank_cmd(user: &str, model: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("RECSYS.RECOMMEND");
    cmd.arg(&[
        "cat",
        user,
        "K",
        "20",
        "CANDIDATES",
        "60",
        "RANK",
        model,
        "WITHSCORES",
    ]);
    cmd
}

/// A WITHSCORES reply as (id, score) pairs.
fn pairs_of(v: Vec<String>) -> Ranked {
    v.chunks(2)
        .map(|p| (p[0].clone(), p[1].parse().unwrap()))
        .collect()
}

fn ranked(c: &mut impl ConnectionLike, user: &str, model: &str) -> redis::RedisResult<Ranked> {
    Ok(pairs_of(rank_cmd(user, model).query(c)?))
}

fn assert_same(a: &[(String, f32)], b: &[(String, f32)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "{what}: {a:?} vs {b:?}");
        assert!(
            (x.1 - y.1).abs() < 1e-5,
            "{what}: {} {} vs {}",
            x.0,
            x.1,
            y.1
        );
    }
}

/// Every test user gets the same list and scores from `inside` and
/// `outside` (`when` names the moment in failures).
fn assert_models_agree(c: &mut Connection, when: &str) {
    for u in 0..6 {
        let user = format!("u:{u}");
        let want = ranked(c, &user, "inside").unwrap();
        assert_same(
            &want,
            &ranked(c, &user, "outside").unwrap(),
            &format!("{user} {when}"),
        );
    }
}

fn info_num(c: &mut Connection, field: &str) -> i64 {
    let all = info(c, "recsys");
    all.get(&format!("recsys_{field}"))
        .unwrap_or_else(|| panic!("INFO has no recsys_{field}: {all:?}"))
        .parse()
        .unwrap()
}

#[test]
fn rows_in_keys_rank_like_tables_in_the_model_on_one_node() {
    let s = server();
    let mut c = s.connection().unwrap();
    let (full, slim, mut tables) = files();
    cmd(&mut c, &format!("RECSYS.CREATE cat DIM {DIM}")).unwrap();
    let vs = vectors(ITEMS, DIM, 7);
    let mut p = redis::pipe();
    for (i, v) in vs.iter().enumerate() {
        p.add_command(item_set(i, v)).ignore();
    }
    for u in 0..6 {
        p.add_command(user_set(u, &vs[u * 50])).ignore();
    }
    for (t, prefix) in OUTSIDE {
        for id in 0..ROWS {
            p.add_command(row_set(prefix, id, &tables[t][id * EMB..(id + 1) * EMB]))
                .ignore();
        }
    }
    p.query::<()>(&mut c).unwrap();

    // Refused: ROWS with the table still in the file, ROWS on ONNX or
    // QUERY models, ROWS without a prefix or with a blank one.
    let e = model_set("bad", &full, &outside_schema())
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("keeps its table in Redis keys (ROWS) but the DLRM file has emb.2"),
        "{e}"
    );
    let e = model_set(
        "bad",
        &slim,
        &ranker_schema().replace("item.c2 100", "item.c2 100 ROWS"),
    )
    .query::<Value>(&mut c)
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("ROWS of item.c2 needs a key prefix, got the keyword 'SPARSE'"),
        "{e}"
    );
    let mut query = redis::cmd("RECSYS.MODEL.SET");
    query.arg(&["cat", "q", "DLRM"]).arg(&slim).arg(&[
        "ROLE", "QUERY", "SCHEMA", "SPARSE", "user.c", "100", "ROWS", "u:",
    ]);
    let e = query.query::<Value>(&mut c).unwrap_err();
    assert!(
        e.to_string().contains("for DLRM models with ROLE RANK"),
        "{e}"
    );
    assert!(cmd(&mut c, "RECSYS.MODEL.LIST cat")
        .map(|v| v == Value::Array(vec![]))
        .unwrap());

    model_set("inside", &full, &ranker_schema())
        .query::<()>(&mut c)
        .unwrap();
    model_set("outside", &slim, &outside_schema())
        .query::<()>(&mut c)
        .unwrap();
    assert_models_agree(&mut c, "at first");
    let (lookups, hits) = (
        info_num(&mut c, "row_lookups"),
        info_num(&mut c, "row_hits"),
    );
    assert!(lookups > 0 && info_num(&mut c, "row_fetched_local") > 0);
    assert!(hits > 0, "rows shared by users come from the cache");
    ranked(&mut c, "u:0", "outside").unwrap();
    assert_eq!(
        info_num(&mut c, "row_hits") - hits,
        info_num(&mut c, "row_lookups") - lookups,
        "a repeated request finds every row in the cache"
    );

    // A row written while serving is used by the next request: the same
    // scores as a model whose file holds the new row.
    let id = (7 * 2 + 2 * 13) % ROWS; // item:2's c2
    let new_row: Vec<f32> = tables[2][id * EMB..(id + 1) * EMB]
        .iter()
        .map(|x| x * -3.0 + 0.1)
        .collect();
    tables[2][id * EMB..(id + 1) * EMB].copy_from_slice(&new_row);
    row_set("emb2:", id, &new_row).query::<()>(&mut c).unwrap();
    model_set("inside", &full_with(&tables), &ranker_schema())
        .query::<()>(&mut c)
        .unwrap();
    assert_models_agree(&mut c, "after SET");

    // Deleted and malformed rows read as zeros, and are counted.
    let absent = info_num(&mut c, "row_absent");
    let malformed = info_num(&mut c, "row_malformed");
    tables[2][id * EMB..(id + 1) * EMB].fill(0.0);
    cmd(&mut c, &format!("DEL emb2:{id}")).unwrap();
    let other = (7 * 3 + 5 * 13) % ROWS; // item:3's c5
    tables[5][other * EMB..(other + 1) * EMB].fill(0.0);
    redis::cmd("SET")
        .arg(format!("emb5:{other}"))
        .arg(&[1u8, 2, 3][..])
        .query::<()>(&mut c)
        .unwrap();
    model_set("inside", &full_with(&tables), &ranker_schema())
        .query::<()>(&mut c)
        .unwrap();
    assert_models_agree(&mut c, "after DEL");
    assert!(info_num(&mut c, "row_absent") > absent);
    assert!(info_num(&mut c, "row_malformed") > malformed);

    // The model and its rows survive a reload; the cache starts over.
    cmd(&mut c, "DEBUG RELOAD").unwrap();
    assert_eq!(info_num(&mut c, "row_cache_rows"), 0);
    let want = ranked(&mut c, "u:1", "inside").unwrap();
    assert_same(
        &want,
        &ranked(&mut c, "u:1", "outside").unwrap(),
        "after DEBUG RELOAD",
    );
    // A smaller cache keeps to its budget.
    cmd(&mut c, "CONFIG SET recsys.row-cache-mb 0").unwrap();
    assert!(info_num(&mut c, "row_cache_bytes") <= 1);
    let want = ranked(&mut c, "u:2", "inside").unwrap();
    assert_same(
        &want,
        &ranked(&mut c, "u:2", "outside").unwrap(),
        "without a cache",
    );
}

/// A request routed to the master of the user's slot.
fn ranked_on_users_master(
    con: &mut ClusterConnection,
    user: &str,
    model: &str,
) -> redis::RedisResult<Ranked> {
    let route = Route::new(Cluster::slot(user.as_bytes()), SlotAddr::Master);
    let v = con.route_command(
        &rank_cmd(user, model),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
    )?;
    Ok(pairs_of(redis::from_redis_value(&v)?))
}

/// Users until every master serves some: (user, its master's port).
fn users_on_every_master(cl: &Cluster, per_master: usize) -> Vec<(usize, u16)> {
    let masters = cl.masters();
    let mut out: Vec<(usize, u16)> = Vec::new();
    for u in 0.. {
        let port = cl.master_of(format!("u:{u}").as_bytes()).unwrap();
        if out.iter().filter(|(_, p)| *p == port).count() < per_master {
            out.push((u, port));
        }
        if out.len() == per_master * masters.len() {
            break;
        }
    }
    out
}

/// Retries `f` until it holds or `secs` pass.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn same(a: &[(String, f32)], b: &[(String, f32)]) -> Result<(), String> {
    let ok = a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() < 1e-5);
    ok.then_some(()).ok_or_else(|| format!("{a:?} vs {b:?}"))
}

/// A cluster, a connection to it, users with their masters, the tables.
type ServedCluster = (Cluster, ClusterConnection, Vec<(usize, u16)>, Vec<Vec<f32>>);
/// A ranked list (id, score), best first.
type Ranked = Vec<(String, f32)>;

/// One cluster at a time: nodes starved of CPU by another test's cluster
/// are taken for dead.
fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cluster of 3 masters (each with `replicas` replicas) serving `cat`
/// with the models `inside` (tables in the file) and `outside` (tables 2 and
/// 5 as row keys spread over every master), and two users per master, once
/// every master ranks them alike with both models. Returns the users (with
/// their masters) and every table's rows.
fn cluster_with_rows(replicas: usize) -> ServedCluster {
    let cl = Cluster::start(3, replicas, &["--cluster-require-full-coverage", "no"])
        .expect("start a cluster");
    let mut con = cl.client().unwrap().get_connection().unwrap();
    let (full, slim, tables) = files();
    redis::cmd("RECSYS.CREATE")
        .arg(&["cat", "DIM", &DIM.to_string()])
        .query::<()>(&mut con)
        .unwrap();
    let vs = vectors(ITEMS, DIM, 7);
    let mut p = redis::cluster::cluster_pipe();
    for (i, v) in vs.iter().enumerate() {
        p.add_command(item_set(i, v)).ignore();
    }
    p.query::<()>(&mut con).unwrap();
    let users = users_on_every_master(&cl, 2);
    let mut p = redis::cluster::cluster_pipe();
    for (u, _) in &users {
        p.add_command(user_set(*u, &vs[u * 37 % ITEMS])).ignore();
    }
    for (t, prefix) in OUTSIDE {
        for id in 0..ROWS {
            p.add_command(row_set(prefix, id, &tables[t][id * EMB..(id + 1) * EMB]))
                .ignore();
        }
    }
    p.query::<()>(&mut con).unwrap();
    // The rows are spread: every master holds some.
    for port in cl.masters() {
        let mut c = cl.node(port).unwrap().connection().unwrap();
        let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert!(n > 10, "master {port} holds {n} keys");
    }
    model_set("inside", &full, &ranker_schema())
        .query::<()>(&mut con)
        .unwrap();
    model_set("outside", &slim, &outside_schema())
        .query::<()>(&mut con)
        .unwrap();

    // Every master's copy ranks with rows fetched from the others.
    for (u, port) in &users {
        let user = format!("u:{u}");
        eventually(20, &format!("{user} on {port}"), || {
            let want =
                ranked_on_users_master(&mut con, &user, "inside").map_err(|e| e.to_string())?;
            let got =
                ranked_on_users_master(&mut con, &user, "outside").map_err(|e| e.to_string())?;
            same(&want, &got)
        });
    }
    (cl, con, users, tables)
}

#[test]
fn rows_spread_over_a_cluster_rank_like_tables_in_the_model_and_updates_reach_every_master() {
    let _serial = one_cluster_at_a_time();
    let (cl, mut con, users, mut tables) = cluster_with_rows(0);
    let (mut remote, mut served) = (0, 0);
    for port in cl.masters() {
        let mut c = cl.node(port).unwrap().connection().unwrap();
        remote += info_num(&mut c, "row_fetched_remote");
        served += info_num(&mut c, "row_requests_served");
    }
    assert!(
        remote > 0 && served > 0,
        "rows crossed the bus: {remote} rows, {served} requests"
    );

    // A row written on its master reaches every master's next request:
    // first a model whose file holds the new row reaches every copy, then
    // the row is written.
    let id = (7 * 4 + 2 * 13) % ROWS; // item:4's c2
    let new_row: Vec<f32> = tables[2][id * EMB..(id + 1) * EMB]
        .iter()
        .map(|x| x * 2.5 - 0.2)
        .collect();
    tables[2][id * EMB..(id + 1) * EMB].copy_from_slice(&new_row);
    model_set("updated", &full_with(&tables), &ranker_schema())
        .query::<()>(&mut con)
        .unwrap();
    let copies: i64 = redis::cmd("RECSYS.COPIES.WAIT")
        .arg(&["cat", "2", "10000"])
        .query(&mut con)
        .unwrap();
    assert_eq!(copies, 2);
    let mut differ = 0;
    for (u, _) in &users {
        let user = format!("u:{u}");
        let want = ranked_on_users_master(&mut con, &user, "updated").unwrap();
        let old = ranked_on_users_master(&mut con, &user, "outside").unwrap();
        differ += usize::from(same(&want, &old).is_err());
    }
    assert!(differ > 0, "the new row changes some user's list or scores");
    row_set("emb2:", id, &new_row)
        .query::<()>(&mut con)
        .unwrap();
    let written = Instant::now();
    for (u, port) in &users {
        let user = format!("u:{u}");
        eventually(
            5,
            &format!("{user} on {port} after the row changed"),
            || {
                let want = ranked_on_users_master(&mut con, &user, "updated")
                    .map_err(|e| e.to_string())?;
                let got = ranked_on_users_master(&mut con, &user, "outside")
                    .map_err(|e| e.to_string())?;
                same(&want, &got)
            },
        );
    }
    eprintln!(
        "every master served the new row {:?} after the write",
        written.elapsed()
    );
    let mut changes = 0;
    for port in cl.masters() {
        let mut c = cl.node(port).unwrap().connection().unwrap();
        changes += info_num(&mut c, "row_changes_received");
    }
    assert!(changes >= 2, "the owner told the other masters ({changes})");
}

/// Ranks `user` on its master with both models: (inside, outside).
fn both(con: &mut ClusterConnection, user: &str) -> Result<(Ranked, Ranked), String> {
    let want = ranked_on_users_master(con, user, "inside").map_err(|e| e.to_string())?;
    let got = ranked_on_users_master(con, user, "outside").map_err(|e| e.to_string())?;
    Ok((want, got))
}

#[test]
fn rows_keep_serving_through_an_unreachable_master_and_a_failover() {
    let _serial = one_cluster_at_a_time();
    let (mut cl, mut con, users, _) = cluster_with_rows(1);
    let owner = cl.master_of(b"cat").unwrap();
    let down = *cl.masters().iter().find(|&&p| p != owner).unwrap();
    let (asker, on) = users
        .iter()
        .map(|(u, p)| (format!("u:{u}"), *p))
        .find(|(_, p)| *p != down)
        .unwrap();
    let mut asking = cl.node(on).unwrap().connection().unwrap();
    let (want, got) = both(&mut con, &asker).unwrap();
    same(&want, &got).unwrap();

    // The master `down` stops answering for a second (shorter than the node
    // timeout: no failover), as in a partition.
    let stalled = cl.node(down).unwrap().connection().unwrap();
    let sleeper = std::thread::spawn(move || {
        let mut stalled = stalled;
        redis::cmd("DEBUG")
            .arg(&["SLEEP", "1.5"])
            .query::<()>(&mut stalled)
    });
    std::thread::sleep(Duration::from_millis(200));
    // Rows in the cache keep serving: the same answer as before.
    let t = Instant::now();
    let (_, cached) = both(&mut con, &asker).unwrap();
    same(&want, &cached).unwrap();
    // Without the cache, the rows held by `down` are not answered in time:
    // the request is served with zeros for them, counted, within the
    // fetch deadline.
    let unanswered = info_num(&mut asking, "row_unanswered");
    cmd(&mut asking, "CONFIG SET recsys.row-cache-mb 0").unwrap();
    let (_, zeros) = both(&mut con, &asker).unwrap();
    let during = t.elapsed();
    assert!(
        info_num(&mut asking, "row_unanswered") > unanswered,
        "no fetch timed out"
    );
    assert!(
        same(&want, &zeros).is_err(),
        "rows read as zeros change the scores"
    );
    assert!(
        during < Duration::from_millis(1000),
        "served in {during:?} while a master stalled"
    );
    cmd(&mut asking, "CONFIG SET recsys.row-cache-mb 64").unwrap();
    sleeper.join().unwrap().unwrap();
    eventually(10, "the stalled master answers again", || {
        let (want, got) = both(&mut con, &asker)?;
        same(&want, &got)
    });

    // The master `down` dies: its replica is promoted and serves its rows.
    let idx = cl.nodes.iter().position(|n| n.port == down).unwrap();
    drop(cl.nodes.remove(idx));
    let deadline = Instant::now() + Duration::from_secs(60);
    while cl.masters().contains(&down) || cl.masters().len() < 3 {
        assert!(Instant::now() < deadline, "the replica was not promoted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut con = cl.client().unwrap().get_connection().unwrap();
    for (u, _) in &users {
        let user = format!("u:{u}");
        eventually(30, &format!("{user} after the failover"), || {
            let (want, got) = both(&mut con, &user)?;
            same(&want, &got)
        });
    }
}
