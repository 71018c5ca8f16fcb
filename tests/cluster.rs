//! The module on a real Redis Cluster (3 masters, 1 replica each, started
//! by `recsys_cli::cluster`): catalog copies on every master, RECOMMEND
//! and EVENT routed by the user key, copies that catch up before they
//! serve, a failover, and plugins that reach every node (docs/cluster.md).

mod common;

use std::time::{Duration, Instant};

use common::{call, vectors, wasm};
use recsys::vector::to_fp32_blob;
use recsys_cli::cluster::Cluster;
use redis::{Connection, Value};

const DIM: usize = 8;

fn start() -> Cluster {
    Cluster::start(3, 1, &["--cluster-require-full-coverage", "no"]).expect("start a cluster")
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
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

/// The catalog's write-log seq on its owner (RECSYS.INFO has no seq; the
/// owner's copies listing is empty, so the other masters' listings say it).
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

    // 10,000 users with no hash tag land on every master; each gets its
    // recommendations from its own node, in one round trip, the same as
    // the owner's catalog gives for the same vector.
    let users = vectors(10_000, DIM, 99);
    let mut by_node: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for u in 0..users.len() {
        let port = cl.master_of(format!("user:{u}").as_bytes()).unwrap();
        by_node.entry(port).or_default().push(u);
    }
    assert_eq!(by_node.len(), 3, "users spread over every master");
    let mut served = 0;
    for (port, us) in &by_node {
        let mut c = cl.node(*port).unwrap().connection().unwrap();
        let mut p = redis::pipe();
        for &u in us {
            p.cmd("HSET")
                .arg(format!("user:{u}"))
                .arg("emb")
                .arg(to_fp32_blob(&users[u]))
                .ignore();
        }
        p.query::<()>(&mut c).unwrap();
        let mut p = redis::pipe();
        for &u in us {
            p.cmd("RECSYS.RECOMMEND")
                .arg("shop")
                .arg(format!("user:{u}"))
                .arg("K")
                .arg(5);
        }
        let got: Vec<Vec<String>> = p.query(&mut c).unwrap();
        for (i, &u) in us.iter().enumerate().step_by(97) {
            let want: Vec<String> = redis::cmd("RECSYS.SEARCH")
                .arg("shop")
                .arg(5)
                .arg("FP32")
                .arg(to_fp32_blob(&users[u]))
                .query(&mut owner)
                .unwrap();
            assert_eq!(got[i], want, "user:{u} on {port}");
        }
        served += got.iter().filter(|r| r.len() == 5).count();
    }
    assert_eq!(served, users.len());

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
    wait_for_copies(&cl, "shop", items.len() - 1);
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
            // The item that was deleted is never recommended.
            let got = ids(call(
                &mut c,
                &[
                    b"RECSYS.RECOMMEND",
                    b"shop",
                    b"nobody",
                    b"VECTOR",
                    &to_fp32_blob(&items[0]),
                    b"K",
                    b"3",
                    b"WHERE",
                    b"n < 0",
                ],
            )
            .or_else(|e| {
                // "nobody" may hash to another node: ask there.
                assert!(e.to_string().to_uppercase().contains("MOVED"), "{e}");
                let mut c = cl.connection_for(b"nobody").unwrap();
                call(
                    &mut c,
                    &[
                        b"RECSYS.RECOMMEND",
                        b"shop",
                        b"nobody",
                        b"VECTOR",
                        &to_fp32_blob(&items[0]),
                        b"K",
                        b"3",
                        b"WHERE",
                        b"n < 0",
                    ],
                )
            })
            .unwrap());
            assert_eq!(got, vec!["item:1".to_string()], "on {port}");
        }
    }
    // INFO says how many copies serve.
    let info: String = redis::cmd("INFO")
        .arg("recsys")
        .query(&mut cl.node(*other).unwrap().connection().unwrap())
        .unwrap();
    assert!(info.contains("cluster_enabled:1"), "{info}");
}

#[test]
fn a_copy_that_missed_writes_catches_up_before_it_serves() {
    // No replicas: the node that goes down stays the master of its slots.
    let cl = Cluster::start(3, 0, &["--cluster-require-full-coverage", "no"]).unwrap();
    let mut owner = cl.connection_for(b"shop").unwrap();
    call(&mut owner, &[b"RECSYS.CREATE", b"shop", b"DIM", b"8"]).unwrap();
    let items = vectors(300, DIM, 3);
    load_items(&mut owner, "shop", &items[..200], 0);
    wait_for_copies(&cl, "shop", 200);
    // A master holding a copy goes down; writes go on without it.
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
    let dir = node.stop(true);
    // The other masters mark it failed and serve their slots again.
    wait_until("the cluster without it", Duration::from_secs(30), || {
        call(&mut owner, &[b"RECSYS.INFO", b"shop"]).is_ok()
    });
    load_items(&mut owner, "shop", &items[200..], 200);
    // It comes back from its RDB (copy at 200 items): until the owner has
    // confirmed or replaced its copy it answers TRYAGAIN, never the stale
    // catalog; then it serves all 300.
    let node = Cluster::start_node_on(
        &module,
        &["--cluster-require-full-coverage", "no"],
        dir,
        victim,
    )
    .unwrap();
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
fn the_owners_replica_takes_over_and_copies_follow_it() {
    let cl = start();
    let mut owner = cl.connection_for(b"shop").unwrap();
    call(&mut owner, &[b"RECSYS.CREATE", b"shop", b"DIM", b"8"]).unwrap();
    let items = vectors(200, DIM, 5);
    load_items(&mut owner, "shop", &items[..100], 0);
    let _: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut owner)
        .unwrap();
    wait_for_copies(&cl, "shop", 100);
    let old = cl.master_of(b"shop").unwrap();
    let mut cl = cl;
    let idx = cl.nodes.iter().position(|n| n.port == old).unwrap();
    drop(cl.nodes.remove(idx)); // killed
    wait_until("the replica's promotion", Duration::from_secs(30), || {
        cl.master_of(b"shop").is_ok_and(|p| p != old)
    });
    let mut owner = cl.connection_for(b"shop").unwrap();
    wait_until("writes on the new owner", Duration::from_secs(30), || {
        call(&mut owner, &[b"RECSYS.INFO", b"shop"]).is_ok()
    });
    load_items(&mut owner, "shop", &items[100..], 100);
    wait_for_copies(&cl, "shop", 200);
}

#[test]
fn plugins_loaded_on_one_node_reach_every_node() {
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
