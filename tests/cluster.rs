//! The module on a real Redis Cluster (3 masters, 1 replica each, started
//! by `recsys_cli::cluster`): catalog copies on every master, RECOMMEND
//! and EVENT routed by the user key through a cluster client, copies that
//! catch up before they serve (after a restart from RDB or AOF), a
//! failover and a reshard while recommendations flow, BATCH on every
//! master, and plugins that reach every node (docs/cluster.md).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{batch_id, call, pairs, text, vectors, wasm};
use recsys::vector::to_fp32_blob;
use recsys_cli::cluster::Cluster;
use redis::cluster::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Connection, Value};

const DIM: usize = 8;

/// One cluster at a time: six nodes per test share the machine's cores,
/// and a node starved past the node timeout is taken for dead.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start() -> Cluster {
    Cluster::start(3, 1, &["--cluster-require-full-coverage", "no"]).expect("start a cluster")
}

/// RECSYS.RECOMMEND through redis-rs's cluster client, routed by the user
/// key's slot (redis-rs routes unknown commands by their first argument,
/// the catalog; `route_command` sends it where the user lives, in one
/// round trip; MOVED, ASK and TRYAGAIN are followed by the client).
fn recommend(
    con: &mut ClusterConnection,
    catalog: &str,
    user: &str,
    extra: &[&[u8]],
) -> redis::RedisResult<Vec<String>> {
    let mut cmd = redis::cmd("RECSYS.RECOMMEND");
    cmd.arg(catalog).arg(user);
    for a in extra {
        cmd.arg(*a);
    }
    let route = Route::new(Cluster::slot(user.as_bytes()), SlotAddr::Master);
    let v = con.route_command(
        &cmd,
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
    )?;
    Ok(ids(v))
}

/// Writes `emb` for every user through the cluster client.
fn store_users(con: &mut ClusterConnection, users: &[(String, Vec<f32>)]) {
    for chunk in users.chunks(500) {
        let mut p = redis::cluster::cluster_pipe();
        for (u, v) in chunk {
            p.cmd("HSET")
                .arg(u)
                .arg("emb")
                .arg(to_fp32_blob(v))
                .ignore();
        }
        p.query::<()>(con).unwrap();
    }
}

/// A client that recommends for `users` over and over on its own thread
/// until stopped, logging when each answer or error came.
struct Reader {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Vec<(Instant, Outcome)>>,
}

/// One request's outcome: answered, or the error's kind (its code, such as
/// `CLUSTERDOWN` or `MOVED`, or the I/O failure) and text.
type Outcome = Result<(), (String, String)>;

/// What a [`Reader`] saw, by time.
struct ReadLog {
    events: Vec<(Instant, Outcome)>,
}

impl ReadLog {
    fn in_window(&self, from: Instant, to: Instant) -> impl Iterator<Item = &(Instant, Outcome)> {
        self.events
            .iter()
            .filter(move |(t, _)| *t >= from && *t <= to)
    }

    /// Answers between two instants.
    fn answers(&self, from: Instant, to: Instant) -> usize {
        self.in_window(from, to).filter(|(_, o)| o.is_ok()).count()
    }

    /// Errors by kind over the whole run, with one text of each kind.
    fn errors(&self) -> std::collections::BTreeMap<String, (usize, String)> {
        let mut kinds = std::collections::BTreeMap::new();
        for (_, o) in &self.events {
            if let Err((kind, text)) = o {
                kinds.entry(kind.clone()).or_insert((0, text.clone())).0 += 1;
            }
        }
        kinds
    }

    /// The longest time between two answers (or a window's edge and an
    /// answer) within a window: how long users waited at worst.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for (t, _) in self.in_window(from, to).filter(|(_, o)| o.is_ok()) {
            gap = gap.max(t.duration_since(last));
            last = *t;
        }
        gap.max(to.duration_since(last))
    }
}

impl Reader {
    fn start(cl: &Cluster, catalog: &'static str, users: Vec<String>) -> Reader {
        let mut con = cl.client().unwrap().get_connection().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        let thread = std::thread::spawn(move || {
            let mut events = Vec::new();
            'outer: loop {
                for u in &users {
                    if s.load(Relaxed) {
                        break 'outer;
                    }
                    let outcome = match recommend(&mut con, catalog, u, &[b"K", b"3"]) {
                        Ok(r) if r.len() == 3 => {
                            o.fetch_add(1, Relaxed);
                            Ok(())
                        }
                        Ok(r) => Err(("SHORT".to_string(), format!("{u}: {r:?}"))),
                        Err(e) => {
                            let kind = e.code().unwrap_or("IO").to_string();
                            Err((kind, format!("{u}: {e}")))
                        }
                    };
                    events.push((Instant::now(), outcome));
                }
            }
            events
        });
        Reader { stop, ok, thread }
    }

    fn answered(&self) -> u64 {
        self.ok.load(Relaxed)
    }

    fn stop(self) -> ReadLog {
        self.stop.store(true, Relaxed);
        ReadLog {
            events: self.thread.join().unwrap(),
        }
    }
}

/// Every item `(id, vector)` is in the catalog through `c` with that
/// vector (as stored: normalized, the catalogs here being COSINE).
fn assert_items_stored(c: &mut Connection, catalog: &str, items: &[(String, Vec<f32>)]) {
    for (id, v) in items {
        let got = call(
            c,
            &[
                b"RECSYS.ITEM.GET",
                catalog.as_bytes(),
                id.as_bytes(),
                b"FP32",
            ],
        )
        .unwrap();
        let blob = pairs(&got)
            .into_iter()
            .find(|(k, _)| k == "vector")
            .map(|(_, b)| match b {
                Value::BulkString(b) => b,
                other => panic!("{id}: vector {other:?}"),
            })
            .unwrap_or_else(|| panic!("{id} is missing: {got:?}"));
        let stored = recsys::vector::from_fp32_blob(&blob, v.len()).unwrap();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (a, b) in stored.iter().zip(v) {
            assert!((a - b / norm).abs() < 1e-6, "{id}: {stored:?} vs {v:?}");
        }
    }
}

fn numbered(items: &[Vec<f32>], first: usize) -> Vec<(String, Vec<f32>)> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("item:{}", first + i), v.clone()))
        .collect()
}

fn ids(v: Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(text).collect(),
        other => panic!("expected ids, got {other:?}"),
    }
}

/// The map fields of each entry of RECSYS.COPIES.
fn copies(c: &mut Connection) -> Vec<Vec<(String, String)>> {
    let Value::Array(entries) = call(c, &[b"RECSYS.COPIES"]).unwrap() else {
        panic!("RECSYS.COPIES")
    };
    entries
        .into_iter()
        .map(|e| match e {
            Value::Array(kv) => kv.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect(),
            Value::Map(kv) => kv.iter().map(|(k, v)| (text(k), text(v))).collect(),
            other => panic!("copy entry {other:?}"),
        })
        .collect()
}

fn field(entry: &[(String, String)], name: &str) -> String {
    entry
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// MOVED and ASK answers a node has given: `errorstat_MOVED` and
/// `errorstat_ASK` of INFO errorstats.
fn redirections(cl: &Cluster, port: u16) -> i64 {
    let mut c = cl.node(port).unwrap().connection().unwrap();
    let info: String = redis::cmd("INFO").arg("errorstats").query(&mut c).unwrap();
    info.lines()
        .filter(|l| l.starts_with("errorstat_MOVED:") || l.starts_with("errorstat_ASK:"))
        .filter_map(|l| l.split("count=").nth(1)?.parse::<i64>().ok())
        .sum()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every master but the owner serves a copy of `catalog` with
/// `items` items.
fn wait_for_copies(cl: &Cluster, catalog: &str, items: usize) {
    let owner = cl.master_of(catalog.as_bytes()).unwrap();
    for port in cl.masters().into_iter().filter(|&p| p != owner) {
        let mut c = cl.node(port).unwrap().connection().unwrap();
        wait_until(
            &format!("the copy on {port}"),
            Duration::from_secs(30),
            || {
                copies(&mut c).iter().any(|e| {
                    field(e, "catalog") == catalog
                        && field(e, "state") == "serving"
                        && field(e, "items") == items.to_string()
                })
            },
        );
    }
}

fn load_items(c: &mut Connection, catalog: &str, vs: &[Vec<f32>], first: usize) {
    for chunk in vs.chunks(100).enumerate() {
        let mut cmd = redis::cmd("RECSYS.ITEM.MSET");
        cmd.arg(catalog).arg("WITHATTRS");
        for (i, v) in chunk.1.iter().enumerate() {
            let n = first + chunk.0 * 100 + i;
            cmd.arg(format!("item:{n}"))
                .arg(to_fp32_blob(v))
                .arg(format!(r#"{{"n":{n}}}"#));
        }
        let _: i64 = cmd.query(c).unwrap();
    }
}

#[test]
fn users_on_every_shard_get_recommendations_from_their_nodes_copy() {
    let _one = one_at_a_time();
    let cl = start();
    let masters = cl.masters();
    assert_eq!(masters.len(), 3);
    let mut owner = cl.connection_for(b"shop").unwrap();
    call(
        &mut owner,
        &[b"RECSYS.CREATE", b"shop", b"DIM", b"8", b"METRIC", b"IP"],
    )
    .unwrap();
    let items = vectors(500, DIM, 7);
    load_items(&mut owner, "shop", &items, 0);
    wait_for_copies(&cl, "shop", items.len());

    // 10,000 users with no hash tag land on every master; through a
    // cluster client each gets its recommendations from its own node, in
    // one round trip, the same as the owner's catalog gives for the same
    // vector.
    let users = vectors(10_000, DIM, 99);
    let named: Vec<(String, Vec<f32>)> = users
        .iter()
        .enumerate()
        .map(|(u, v)| (format!("user:{u}"), v.clone()))
        .collect();
    let mut by_node: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for (u, (name, _)) in named.iter().enumerate() {
        let port = cl.master_of(name.as_bytes()).unwrap();
        by_node.entry(port).or_default().push(u);
    }
    assert_eq!(by_node.len(), 3, "users spread over every master");
    let mut con = cl.client().unwrap().get_connection().unwrap();
    store_users(&mut con, &named);
    let before: Vec<i64> = masters.iter().map(|&p| redirections(&cl, p)).collect();
    let mut served = 0;
    for (u, (name, v)) in named.iter().enumerate() {
        let got = recommend(&mut con, "shop", name, &[b"K", b"5"]).unwrap();
        if u % 97 == 0 {
            let want: Vec<String> = redis::cmd("RECSYS.SEARCH")
                .arg("shop")
                .arg(5)
                .arg("FP32")
                .arg(to_fp32_blob(v))
                .query(&mut owner)
                .unwrap();
            assert_eq!(got, want, "{name}");
        }
        served += (got.len() == 5) as usize;
    }
    assert_eq!(served, users.len());
    let after: Vec<i64> = masters.iter().map(|&p| redirections(&cl, p)).collect();
    assert_eq!(before, after, "no request was redirected (MOVED or ASK)");

    // Sent to a node that does not serve the user, RECOMMEND is redirected
    // by the user's slot (the catalog is not a declared key).
    let u = by_node.values().next().unwrap()[0];
    let user = format!("user:{u}");
    let other = masters
        .iter()
        .find(|&&p| p != cl.master_of(user.as_bytes()).unwrap())
        .unwrap();
    let mut wrong = cl.node(*other).unwrap().connection().unwrap();
    let e = call(&mut wrong, &[b"RECSYS.RECOMMEND", b"shop", user.as_bytes()]).unwrap_err();
    assert!(e.to_string().to_uppercase().contains("MOVED"), "{e}");

    // EVENT on the user's node writes the hash there and uses its copy.
    let mut c = cl.connection_for(user.as_bytes()).unwrap();
    let n: i64 = redis::cmd("RECSYS.EVENT")
        .arg("shop")
        .arg(&user)
        .arg("item:3")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    let e = call(
        &mut c,
        &[b"RECSYS.EVENT", b"shop", user.as_bytes(), b"nope"],
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");

    // Later writes follow: a deleted item disappears from every copy, an
    // attribute change is seen everywhere, replicas keep their master's
    // copies.
    let _: i64 = redis::cmd("RECSYS.ITEM.DEL")
        .arg("shop")
        .arg("item:0")
        .query(&mut owner)
        .unwrap();
    let _: () = redis::cmd("RECSYS.ITEM.SETATTRS")
        .arg("shop")
        .arg("item:1")
        .arg(r#"{"n":-1}"#)
        .query(&mut owner)
        .unwrap();
    // RECSYS.COPIES.WAIT on the owner returns once both other masters'
    // copies have both writes: each serves them as soon as it returns.
    let started = Instant::now();
    let reached: i64 = redis::cmd("RECSYS.COPIES.WAIT")
        .arg("shop")
        .arg(2)
        .arg(10_000)
        .query(&mut owner)
        .unwrap();
    assert_eq!(reached, 2);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for port in masters
        .iter()
        .filter(|&&p| p != cl.master_of(b"shop").unwrap())
    {
        let mut c = cl.node(*port).unwrap().connection().unwrap();
        let entry = copies(&mut c)
            .into_iter()
            .find(|e| field(e, "catalog") == "shop")
            .unwrap();
        assert_eq!(
            field(&entry, "items"),
            (items.len() - 1).to_string(),
            "{port}"
        );
        assert_eq!(field(&entry, "state"), "serving", "{port}");
    }
    // More copies than there are other masters: the timeout answers with
    // the two that have the writes.
    let started = Instant::now();
    let reached: i64 = redis::cmd("RECSYS.COPIES.WAIT")
        .arg("shop")
        .arg(3)
        .arg(300)
        .query(&mut owner)
        .unwrap();
    assert_eq!(reached, 2);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    for (args, wanted) in [
        (&[&b"shop"[..], b"1", b"0"][..], "timeout"),
        (&[b"shop", b"-1", b"100"], "numcopies"),
        (&[b"shop", b"1"], "wrong number of arguments"),
    ] {
        let mut full: Vec<&[u8]> = vec![b"RECSYS.COPIES.WAIT"];
        full.extend_from_slice(args);
        let e = call(&mut owner, &full).unwrap_err();
        assert!(e.to_string().contains(wanted), "{args:?}: {e}");
    }
    let mut n = cl.connection_for(b"nope").unwrap();
    let e = call(&mut n, &[b"RECSYS.COPIES.WAIT", b"nope", b"1", b"100"]).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let map = cl.slot_map().unwrap();
    for (_, (master, replicas)) in map {
        if master == cl.master_of(b"shop").unwrap() {
            continue;
        }
        for port in std::iter::once(master).chain(replicas) {
            let mut c = cl.node(port).unwrap().connection().unwrap();
            if port != master {
                let _: () = redis::cmd("READONLY").query(&mut c).unwrap();
                wait_until("a replica's copy", Duration::from_secs(20), || {
                    copies(&mut c)
                        .iter()
                        .any(|e| field(e, "items") == (items.len() - 1).to_string())
                });
            }
            // The item that was deleted is never recommended, asked for a
            // user this node serves (a replica serves its master's slots).
            let user = (0..)
                .map(|i| format!("reader:{i}"))
                .find(|k| cl.master_of(k.as_bytes()).unwrap() == master)
                .unwrap();
            // Copies apply writes in order but not at the same instant:
            // the attribute change may still be on its way.
            let recommend = |c: &mut Connection| {
                ids(call(
                    c,
                    &[
                        b"RECSYS.RECOMMEND",
                        b"shop",
                        user.as_bytes(),
                        b"VECTOR",
                        &to_fp32_blob(&items[0]),
                        b"K",
                        b"3",
                        b"WHERE",
                        b"n < 0",
                    ],
                )
                .unwrap())
            };
            wait_until(
                &format!("the attribute change on {port}"),
                Duration::from_secs(20),
                || recommend(&mut c) == vec!["item:1".to_string()],
            );
        }
    }
    // Popularity sums every master's EVENTs: each master's users click
    // another item, and within a flush every master's cold start (a user
    // with no hash) and its replica's give the same order.
    let clicks = [("item:10", 5), ("item:11", 3), ("item:12", 4)];
    let user_on = |prefix: &str, port: u16| {
        (0..)
            .map(|i| format!("{prefix}:{i}"))
            .find(|k| cl.master_of(k.as_bytes()).unwrap() == port)
            .unwrap()
    };
    for (&port, (item, n)) in masters.iter().zip(clicks) {
        let user = user_on("fan", port);
        let mut c = cl.node(port).unwrap().connection().unwrap();
        for _ in 0..n {
            let _: i64 = redis::cmd("RECSYS.EVENT")
                .arg("shop")
                .arg(&user)
                .arg(item)
                .query(&mut c)
                .unwrap();
        }
    }
    let want = vec!["item:10", "item:12", "item:11"];
    for (_, (master, replicas)) in cl.slot_map().unwrap() {
        let cold = user_on("cold", master);
        for port in std::iter::once(master).chain(replicas) {
            let mut c = cl.node(port).unwrap().connection().unwrap();
            if port != master {
                let _: () = redis::cmd("READONLY").query(&mut c).unwrap();
            }
            wait_until(
                &format!("the summed popularity on {port}"),
                Duration::from_secs(10),
                || {
                    ids(call(
                        &mut c,
                        &[b"RECSYS.RECOMMEND", b"shop", cold.as_bytes(), b"K", b"3"],
                    )
                    .unwrap())
                        == want
                },
            );
        }
    }

    // INFO says how many copies serve.
    let info: String = redis::cmd("INFO")
        .arg("recsys")
        .query(&mut cl.node(*other).unwrap().connection().unwrap())
        .unwrap();
    assert!(info.contains("cluster_enabled:1"), "{info}");
}

/// A master holding a copy goes down (SHUTDOWN with `stop_saves`), writes
/// go on without it; it comes back from its files (`extra`: RDB or AOF)
/// with its copy as it was: until the owner has confirmed or replaced it
/// the node answers TRYAGAIN, never the stale catalog; then it serves the
/// whole catalog.
fn missed_writes_are_caught_up_after_a_restart(extra: &[&str], stop_saves: bool) {
    // No replicas: the node that goes down stays the master of its slots.
    let mut args = vec!["--cluster-require-full-coverage", "no"];
    args.extend_from_slice(extra);
    let cl = Cluster::start(3, 0, &args).unwrap();
    let mut owner = cl.connection_for(b"shop").unwrap();
    call(&mut owner, &[b"RECSYS.CREATE", b"shop", b"DIM", b"8"]).unwrap();
    let items = vectors(300, DIM, 3);
    load_items(&mut owner, "shop", &items[..200], 0);
    wait_for_copies(&cl, "shop", 200);
    let owner_port = cl.master_of(b"shop").unwrap();
    let victim = *cl.masters().iter().find(|&&p| p != owner_port).unwrap();
    let probe_user = (0..)
        .map(|i| format!("probe:{i}"))
        .find(|k| cl.master_of(k.as_bytes()).unwrap() == victim)
        .unwrap();
    let mut cl = cl;
    let idx = cl.nodes.iter().position(|n| n.port == victim).unwrap();
    let node = cl.nodes.remove(idx);
    let module = node.module.clone();
    let dir = node.stop(stop_saves);
    // The other masters mark it failed and serve their slots again.
    wait_until("the cluster without it", Duration::from_secs(30), || {
        call(&mut owner, &[b"RECSYS.INFO", b"shop"]).is_ok()
    });
    load_items(&mut owner, "shop", &items[200..], 200);
    let node = Cluster::start_node_on(&module, &args, dir, victim).unwrap();
    let mut c = node.connection().unwrap();
    let probe = to_fp32_blob(&items[250]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tryagain = 0;
    loop {
        let r = call(
            &mut c,
            &[
                b"RECSYS.RECOMMEND",
                b"shop",
                probe_user.as_bytes(),
                b"VECTOR",
                &probe,
                b"K",
                b"1",
            ],
        );
        match r {
            Ok(v) => {
                assert_eq!(ids(v), vec!["item:250".to_string()], "never the stale copy");
                break;
            }
            Err(e) if e.to_string().to_uppercase().contains("TRYAGAIN") => tryagain += 1,
            // While the node rejoins the cluster.
            Err(e) if e.to_string().to_uppercase().contains("CLUSTERDOWN") => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the copy did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("TRYAGAIN answers while catching up: {tryagain}");
    let entry = copies(&mut c)
        .into_iter()
        .find(|e| field(e, "catalog") == "shop")
        .unwrap();
    assert_eq!(field(&entry, "items"), "300");
    assert_eq!(field(&entry, "state"), "serving");
    cl.nodes.push(node);
}

#[test]
fn a_copy_that_missed_writes_catches_up_before_it_serves() {
    let _one = one_at_a_time();
    missed_writes_are_caught_up_after_a_restart(&[], true);
}

#[test]
fn a_node_restarted_from_its_aof_catches_up_before_it_serves() {
    let _one = one_at_a_time();
    // No RDB at all: the copy comes back from the AOF's RECSYS.COPY
    // commands alone.
    missed_writes_are_caught_up_after_a_restart(
        &["--appendonly", "yes", "--aof-use-rdb-preamble", "no"],
        false,
    );
}

#[test]
fn the_owners_replica_takes_over_and_copies_follow_it() {
    let _one = one_at_a_time();
    let cl = start();
    let mut owner = cl.connection_for(b"shop").unwrap();
    call(&mut owner, &[b"RECSYS.CREATE", b"shop", b"DIM", b"8"]).unwrap();
    let items = vectors(200, DIM, 5);
    load_items(&mut owner, "shop", &items[..100], 0);
    // Acknowledged by the owner's replica: must survive the failover.
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query(&mut owner)
        .unwrap();
    assert_eq!(acked, 1, "the replica acknowledged the writes");
    wait_for_copies(&cl, "shop", 100);
    let old = cl.master_of(b"shop").unwrap();
    // Users on the other masters keep getting recommendations while the
    // owner dies and its replica takes over.
    let readers: Vec<String> = (0..)
        .map(|i| format!("reader:{i}"))
        .filter(|u| cl.master_of(u.as_bytes()).unwrap() != old)
        .take(20)
        .collect();
    let mut con = cl.client().unwrap().get_connection().unwrap();
    let named: Vec<(String, Vec<f32>)> = readers
        .iter()
        .zip(vectors(20, DIM, 6))
        .map(|(u, v)| (u.clone(), v))
        .collect();
    store_users(&mut con, &named);
    let reader = Reader::start(&cl, "shop", readers);
    wait_until(
        "the reader's first answers",
        Duration::from_secs(10),
        || reader.answered() > 0,
    );
    let mut cl = cl;
    let idx = cl.nodes.iter().position(|n| n.port == old).unwrap();
    let killed = Instant::now();
    drop(cl.nodes.remove(idx)); // killed
    wait_until("the replica's promotion", Duration::from_secs(60), || {
        cl.master_of(b"shop").is_ok_and(|p| p != old)
    });
    let promoted = Instant::now();
    let mut owner = cl.connection_for(b"shop").unwrap();
    wait_until("writes on the new owner", Duration::from_secs(30), || {
        call(&mut owner, &[b"RECSYS.INFO", b"shop"]).is_ok()
    });
    // Every acknowledged item survived, by id and vector.
    assert_eq!(common::info_field(&mut owner, "shop", "items"), 100);
    assert_items_stored(&mut owner, "shop", &numbered(&items[..100], 0));
    load_items(&mut owner, "shop", &items[100..], 100);
    wait_for_copies(&cl, "shop", 200);
    std::thread::sleep(Duration::from_millis(300));
    let done = Instant::now();
    let log = reader.stop();
    // The readers' masters kept serving from their copies while the owner
    // was dead (the failover takes the node timeout, 2 s, and more).
    let outage = promoted.duration_since(killed);
    let (during, after) = (log.answers(killed, promoted), log.answers(promoted, done));
    let gap = log.longest_gap(killed, done);
    eprintln!(
        "failover: outage {outage:?}, answers during {during}, after {after}, longest gap {gap:?}, errors {:?}",
        log.errors()
    );
    assert!(outage > Duration::from_secs(1), "a real outage: {outage:?}");
    assert!(
        during > 0,
        "no answers while the owner was dead ({outage:?})"
    );
    assert!(after > 0, "no answers after the promotion");
    // (Measured: under 10 ms; the readers' nodes never stop serving.)
    assert!(
        gap < Duration::from_secs(1),
        "users waited {gap:?} for an answer (outage {outage:?})"
    );
    assert!(
        log.errors().is_empty(),
        "recommendations failed during the failover: {:?}",
        log.errors()
    );
}

#[test]
fn a_reshard_moves_the_catalog_and_users_while_recommendations_flow() {
    let _one = one_at_a_time();
    let cl = Cluster::start(3, 0, &[]).unwrap();
    let mut con = cl.client().unwrap().get_connection().unwrap();
    let _: Value = redis::cmd("RECSYS.CREATE")
        .arg("shop")
        .arg("DIM")
        .arg(DIM)
        .query(&mut con)
        .unwrap();
    let items = vectors(400, DIM, 11);
    let mut owner = cl.connection_for(b"shop").unwrap();
    load_items(&mut owner, "shop", &items[..300], 0);
    wait_for_copies(&cl, "shop", 300);
    let (from, to) = {
        let from = cl.master_of(b"shop").unwrap();
        let to = *cl.masters().iter().find(|&&p| p != from).unwrap();
        (from, to)
    };
    // 600 users; those on the catalog's owner move with it.
    let users: Vec<(String, Vec<f32>)> = (0..600)
        .map(|i| format!("user:{i}"))
        .zip(vectors(600, DIM, 12))
        .collect();
    store_users(&mut con, &users);
    let moving: std::collections::BTreeSet<u16> = users
        .iter()
        .map(|(u, _)| Cluster::slot(u.as_bytes()))
        .filter(|&s| cl.master_of_slot(s).unwrap() == from)
        .chain([Cluster::slot(b"shop")])
        .collect();
    let reader = Reader::start(&cl, "shop", users.iter().map(|(u, _)| u.clone()).collect());
    wait_until(
        "the reader's first answers",
        Duration::from_secs(10),
        || reader.answered() > 0,
    );
    let moves_began = Instant::now();
    // Half the slots move, then a write through the cluster client
    // (routed by the catalog key), then the catalog's slot and the rest.
    let slots: Vec<u16> = moving.into_iter().collect();
    let (first, second) = slots.split_at(slots.len() / 2);
    for &slot in first {
        cl.move_slot(slot, to).unwrap();
    }
    let mut write = |n: usize| {
        let _: i64 = redis::cmd("RECSYS.ITEM.SET")
            .arg("shop")
            .arg(format!("item:{n}"))
            .arg("FP32")
            .arg(to_fp32_blob(&items[n]))
            .query(&mut con)
            .unwrap();
    };
    write(300);
    cl.move_slot(Cluster::slot(b"shop"), to).unwrap();
    write(301);
    for &slot in second {
        cl.move_slot(slot, to).unwrap();
    }
    let moves_ended = Instant::now();
    assert_eq!(cl.master_of(b"shop").unwrap(), to);
    let mut owner = cl.connection_for(b"shop").unwrap();
    load_items(&mut owner, "shop", &items[302..], 302);
    wait_for_copies(&cl, "shop", 400);
    // The old owner serves its users from a copy it kept of the key.
    let mut old = cl.node(from).unwrap().connection().unwrap();
    let entry = copies(&mut old)
        .into_iter()
        .find(|e| field(e, "catalog") == "shop")
        .expect("a copy on the old owner");
    assert_eq!(field(&entry, "state"), "serving");
    assert_eq!(field(&entry, "owner"), cl.id_of(to).unwrap());
    // The new owner drops its copy at its next announce: the key is its
    // catalog (requests used the key as soon as it arrived).
    let mut new = cl.node(to).unwrap().connection().unwrap();
    wait_until(
        "the new owner's copy dropped",
        Duration::from_secs(5),
        || {
            copies(&mut new)
                .iter()
                .all(|e| field(e, "catalog") != "shop")
        },
    );
    let log = reader.stop();
    let window = moves_ended.duration_since(moves_began);
    let during = log.answers(moves_began, moves_ended);
    let gap = log.longest_gap(moves_began, moves_ended);
    eprintln!(
        "reshard: {} slot moves in {window:?}, answers during {during}, longest gap {gap:?}, errors {:?}",
        slots.len(),
        log.errors()
    );
    // Users were answered all along the moves, never waiting long.
    assert!(during > 0, "no answers while slots moved ({window:?})");
    // (Measured: about 0.2 s at most, while the catalog's key migrates.)
    assert!(
        gap < Duration::from_secs(2),
        "users waited {gap:?} for an answer"
    );
    assert!(
        log.errors().is_empty(),
        "recommendations failed during the reshard: {:?}",
        log.errors()
    );
    // Every acknowledged item is on the new owner, by id and vector.
    assert_eq!(common::info_field(&mut owner, "shop", "items"), 400);
    assert_items_stored(&mut owner, "shop", &numbered(&items, 0));
    // Every user, wherever it lives now, sees the items written meanwhile.
    for (u, v) in users.iter().step_by(50) {
        let _ = v;
        let got = recommend(
            &mut con,
            "shop",
            u,
            &[b"VECTOR", &to_fp32_blob(&items[301]), b"K", b"1"],
        )
        .unwrap();
        assert_eq!(got, vec!["item:301".to_string()], "{u}");
    }
}

#[test]
fn batch_on_every_master_writes_each_list_where_its_user_lives() {
    let _one = one_at_a_time();
    let cl = Cluster::start(3, 0, &[]).unwrap();
    let mut owner = cl.connection_for(b"shop").unwrap();
    call(&mut owner, &[b"RECSYS.CREATE", b"shop", b"DIM", b"8"]).unwrap();
    let items = vectors(200, DIM, 21);
    load_items(&mut owner, "shop", &items, 0);
    wait_for_copies(&cl, "shop", 200);
    let users: Vec<(String, Vec<f32>)> = (0..1500)
        .map(|i| format!("user:{i}"))
        .zip(vectors(1500, DIM, 22))
        .collect();
    let mut con = cl.client().unwrap().get_connection().unwrap();
    store_users(&mut con, &users);
    // One user whose vector is malformed: counted as an error, not written.
    let _: () = redis::cmd("HSET")
        .arg("user:bad")
        .arg("emb")
        .arg("xyz")
        .query(&mut con)
        .unwrap();
    let mut totals = [0i64; 3];
    let mut covered = vec![false; 16384];
    let slots = cl.slot_map().unwrap();
    for port in cl.masters() {
        let mut c = cl.node(port).unwrap().connection().unwrap();
        let id = batch_id(
            &redis::cmd("RECSYS.BATCH")
                .arg("shop")
                .arg("MATCH")
                .arg("user:*")
                .arg("K")
                .arg(4)
                .arg("INTO")
                .arg("rec:")
                .query::<Value>(&mut c)
                .unwrap(),
        );
        let mut status = Vec::new();
        wait_until("the batch", Duration::from_secs(60), || {
            let v = call(&mut c, &[b"RECSYS.BATCH.STATUS", id.to_string().as_bytes()]).unwrap();
            status = match v {
                Value::Array(kv) => kv.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect(),
                Value::Map(kv) => kv.iter().map(|(k, v)| (text(k), text(v))).collect(),
                other => panic!("{other:?}"),
            };
            field(&status, "state") != "running"
        });
        assert_eq!(field(&status, "state"), "done", "{status:?}");
        for (t, name) in totals.iter_mut().zip(["users", "written", "errors"]) {
            *t += field(&status, name).parse::<i64>().unwrap();
        }
        // Each batch says which slots it covered: this master's.
        for range in field(&status, "slots").split(',') {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (a, b) = (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap());
            for (slot, seen) in covered.iter_mut().enumerate().take(b + 1).skip(a) {
                let owner = slots.range(..=slot as u16).next_back().map(|(_, m)| m.0);
                assert_eq!(owner, Some(port), "slot {slot}");
                assert!(!*seen, "slot {slot} covered twice");
                *seen = true;
            }
        }
    }
    assert!(covered.iter().all(|&c| c), "every slot covered once");
    assert_eq!(
        totals,
        [1501, 1500, 1],
        "users, written, errors over all masters"
    );
    // Each list sits in its user's slot (`rec:{user:N}`), on the user's
    // node, and holds the user's recommendations.
    for (u, _) in users.iter().step_by(37) {
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("rec:{{{u}}}"))
            .arg(0)
            .arg(-1)
            .query(&mut con)
            .unwrap();
        let want = recommend(&mut con, "shop", u, &[b"K", b"4"]).unwrap();
        assert_eq!(list, want, "{u}");
    }
    assert!(!redis::cmd("EXISTS")
        .arg("rec:{user:bad}")
        .query::<bool>(&mut con)
        .unwrap());
}

#[test]
fn plugins_loaded_on_one_node_reach_every_node() {
    let _one = one_at_a_time();
    let cl = start();
    let mut first = cl.nodes[0].connection().unwrap();
    let _: Value = redis::cmd("RECSYS.PLUGIN.LOAD")
        .arg("cap")
        .arg(wasm("max-per-category"))
        .query(&mut first)
        .unwrap();
    let has = |c: &mut Connection| {
        let v = call(c, &[b"RECSYS.PLUGIN.LIST"]).unwrap();
        format!("{v:?}").contains("cap")
    };
    for n in &cl.nodes {
        let mut c = n.connection().unwrap();
        wait_until(
            &format!("the plugin on {}", n.port),
            Duration::from_secs(30),
            || has(&mut c),
        );
    }
    let last = cl.nodes.len() - 1;
    let c = cl.nodes[last].connection().unwrap();
    let masters = cl.masters();
    // Removal from a master reaches every node too.
    let mut m = cl.node(masters[2]).unwrap().connection().unwrap();
    let removed: i64 = redis::cmd("RECSYS.PLUGIN.DEL")
        .arg("cap")
        .query(&mut m)
        .unwrap();
    assert_eq!(removed, 1);
    for n in &cl.nodes {
        let mut c = n.connection().unwrap();
        wait_until(
            &format!("the removal on {}", n.port),
            Duration::from_secs(30),
            || !has(&mut c),
        );
    }
    drop(c);
}

/// The counts of an experiment's REPORT: (variant, impressions, clicks).
fn experiment_counts(c: &mut Connection, catalog: &str, name: &str) -> Vec<(String, i64, i64)> {
    let v: Value = redis::cmd("RECSYS.EXPERIMENT.REPORT")
        .arg(catalog)
        .arg(name)
        .query(c)
        .unwrap();
    let top = pairs(&v);
    let Some((_, Value::Array(variants))) = top.iter().find(|(k, _)| k == "variants") else {
        panic!("no variants in {v:?}");
    };
    variants
        .iter()
        .map(|v| {
            let m = pairs(v);
            let get = |k: &str| text(&m.iter().find(|(n, _)| n == k).unwrap().1);
            (
                get("name"),
                get("impressions").parse().unwrap(),
                get("clicks").parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_experiment_set_once_serves_every_master_and_its_report_sums_them() {
    let _one = one_at_a_time();
    let cl = Cluster::start(3, 0, &["--cluster-require-full-coverage", "no"]).unwrap();
    let mut owner = cl.connection_for(b"shop").unwrap();
    call(&mut owner, &[b"RECSYS.CREATE", b"shop", b"DIM", b"8"]).unwrap();
    load_items(&mut owner, "shop", &vectors(200, DIM, 3), 0);
    wait_for_copies(&cl, "shop", 200);
    let set: String = redis::cmd("RECSYS.EXPERIMENT.SET")
        .arg(&[
            "shop", "ab", "VARIANT", "a", "OPTIONS", "K 2", "VARIANT", "b", "OPTIONS", "K 3",
        ])
        .query(&mut owner)
        .unwrap();
    assert_eq!(set, "OK");
    // Users on every master are served with their variant by their own
    // node's copy (once the copy has the experiment, within a second).
    let users: Vec<String> = (0..300).map(|u| format!("user:{u}")).collect();
    let nodes: std::collections::BTreeSet<u16> = users
        .iter()
        .map(|u| cl.master_of(u.as_bytes()).unwrap())
        .collect();
    assert_eq!(nodes.len(), 3);
    let q = to_fp32_blob(&vectors(1, DIM, 4)[0]);
    let (mut served, mut clicks) = (0i64, 0i64);
    for (i, user) in users.iter().enumerate() {
        let mut c = cl.connection_for(user.as_bytes()).unwrap();
        let ask = |c: &mut Connection| {
            call(
                c,
                &[
                    b"RECSYS.RECOMMEND",
                    b"shop",
                    user.as_bytes(),
                    b"VECTOR",
                    &q,
                    b"EXPERIMENT",
                    b"ab",
                ],
            )
        };
        let mut reply = ask(&mut c);
        let deadline = Instant::now() + Duration::from_secs(30);
        while reply.is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            reply = ask(&mut c);
        }
        let reply = reply.unwrap();
        let Value::Array(fields) = reply else {
            panic!("{reply:?}")
        };
        let (items, request, variant) =
            (ids(fields[1].clone()), text(&fields[3]), text(&fields[5]));
        assert_eq!(items.len(), if variant == "a" { 2 } else { 3 });
        served += 1;
        if i % 4 == 0 {
            call(
                &mut c,
                &[
                    b"RECSYS.EVENT",
                    b"shop",
                    user.as_bytes(),
                    items[0].as_bytes(),
                    b"TYPE",
                    b"click",
                    b"REQUEST",
                    request.as_bytes(),
                ],
            )
            .unwrap();
            clicks += 1;
        }
    }
    // Each master flushes its counts to the catalog's owner within a second.
    wait_until(
        "the owner's report to sum every master",
        Duration::from_secs(30),
        || {
            let r = experiment_counts(&mut owner, "shop", "ab");
            r.iter().map(|v| v.1).sum::<i64>() == served
                && r.iter().map(|v| v.2).sum::<i64>() == clicks
        },
    );
    let r = experiment_counts(&mut owner, "shop", "ab");
    assert!(r.iter().all(|v| v.1 > 50), "{r:?}");
}
