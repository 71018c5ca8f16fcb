//! A real Redis Cluster of redis-server processes with the module, for the
//! integration tests and `recsys bench`: N masters with R replicas each on
//! free ports (their bus ports, +10000, free too), made with
//! `redis-cli --cluster create`, and a small router that sends a command
//! to the master (or a replica) that serves a key's slot.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::server::{find_module, RedisServer};

/// A running cluster; every node is killed on drop.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> Result<u16> {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair for a cluster node")
}

impl Cluster {
    /// Starts `masters` masters with `replicas` replicas each; `extra` are
    /// more redis-server arguments for every node.
    pub fn start(masters: usize, replicas: usize, extra: &[&str]) -> Result<Cluster> {
        Self::start_with_module_args(masters, replicas, extra, &[])
    }

    /// Like [`Cluster::start`], loading the module with `module_args`
    /// (e.g. `WORKERS 2`).
    pub fn start_with_module_args(
        masters: usize,
        replicas: usize,
        extra: &[&str],
        module_args: &[&str],
    ) -> Result<Cluster> {
        let module = find_module()?;
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            nodes.push(Self::start_node(&module, extra, None, module_args)?);
        }
        if masters < 3 {
            // redis-cli --cluster create wants 3 masters at least.
            if replicas > 0 {
                bail!("a cluster of fewer than 3 masters is made without replicas");
            }
            Self::join_by_hand(&nodes)?;
        } else {
            let addrs: Vec<String> = nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect();
            let out = Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&addrs)
                .arg("--cluster-replicas")
                .arg(replicas.to_string())
                .arg("--cluster-yes")
                .output()
                .context("redis-cli --cluster create (apt-get install redis-tools)")?;
            if !out.status.success() {
                bail!(
                    "redis-cli --cluster create failed: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        let cluster = Cluster { nodes };
        cluster.wait_ok(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Masters only: each node takes an equal share of the slots, and
    /// meets the first.
    fn join_by_hand(nodes: &[RedisServer]) -> Result<()> {
        let n = nodes.len();
        for (i, node) in nodes.iter().enumerate() {
            let mut c = node.connection()?;
            let (from, to) = (16384 * i / n, 16384 * (i + 1) / n - 1);
            redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(from)
                .arg(to)
                .query::<()>(&mut c)
                .context("CLUSTER ADDSLOTSRANGE")?;
            if i > 0 {
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(nodes[0].port)
                    .query::<()>(&mut c)
                    .context("CLUSTER MEET")?;
            }
        }
        Ok(())
    }

    /// Starts one cluster node (in `dir` when restarting on its files).
    pub fn start_node(
        module: &std::path::Path,
        extra: &[&str],
        dir: Option<tempfile::TempDir>,
        module_args: &[&str],
    ) -> Result<RedisServer> {
        let dir = match dir {
            Some(d) => d,
            None => tempfile::tempdir()?,
        };
        Self::start_node_with(module, module_args, extra, dir, cluster_port()?)
    }

    /// Restarts a node on its data directory and port (its nodes.conf
    /// keeps its identity; the others know it by its address).
    pub fn start_node_on(
        module: &std::path::Path,
        extra: &[&str],
        dir: tempfile::TempDir,
        port: u16,
    ) -> Result<RedisServer> {
        Self::start_node_with(module, &[], extra, dir, port)
    }

    fn start_node_with(
        module: &std::path::Path,
        module_args: &[&str],
        extra: &[&str],
        dir: tempfile::TempDir,
        port: u16,
    ) -> Result<RedisServer> {
        let mut args = vec![
            "--cluster-enabled".to_string(),
            "yes".into(),
            "--cluster-config-file".into(),
            "nodes.conf".into(),
            "--cluster-node-timeout".into(),
            "2000".into(),
            // A replica syncs at once, not 5 s later (a replica that never
            // synced cannot be promoted).
            "--repl-diskless-sync-delay".into(),
            "0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        RedisServer::start_on(dir, module, module_args, &refs, port)
    }

    /// Waits until every node says `cluster_state:ok` and agrees on the
    /// slots, and every replica has synced with its master (a replica that
    /// never synced cannot take over).
    pub fn wait_ok(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.nodes.iter().all(|n| {
                let Ok(mut c) = n.connection() else {
                    return false;
                };
                let mut info = |cmd: &[&str]| {
                    redis::cmd(cmd[0])
                        .arg(&cmd[1..])
                        .query::<String>(&mut c)
                        .unwrap_or_default()
                };
                let replication = info(&["INFO", "replication"]);
                info(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ok && self.slot_map().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("cluster did not become ok");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ports of the masters.
    pub fn masters(&self) -> Vec<u16> {
        self.slot_map()
            .map(|m| {
                let mut v: Vec<u16> = m.values().map(|(p, _)| *p).collect();
                v.sort();
                v.dedup();
                v
            })
            .unwrap_or_default()
    }

    /// First slot of each range -> (master port, replica ports), from a
    /// live node.
    pub fn slot_map(&self) -> Result<BTreeMap<u16, (u16, Vec<u16>)>> {
        for n in &self.nodes {
            let Ok(mut c) = n.connection() else { continue };
            let Ok(slots) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<Vec<redis::Value>>(&mut c)
            else {
                continue;
            };
            let mut map = BTreeMap::new();
            for range in slots {
                let redis::Value::Array(parts) = range else {
                    continue;
                };
                let int = |v: &redis::Value| match v {
                    redis::Value::Int(i) => *i,
                    _ => -1,
                };
                let port = |v: &redis::Value| match v {
                    redis::Value::Array(a) if a.len() > 1 => int(&a[1]) as u16,
                    _ => 0,
                };
                if parts.len() < 3 {
                    continue;
                }
                let start = int(&parts[0]) as u16;
                let replicas = parts[3..].iter().map(port).collect();
                map.insert(start, (port(&parts[2]), replicas));
            }
            if map.is_empty() {
                continue;
            }
            return Ok(map);
        }
        bail!("no node answered CLUSTER SLOTS")
    }

    /// The slot of `key` (Redis's CRC16 of its hash tag).
    pub fn slot(key: &[u8]) -> u16 {
        recsys::cluster::slot::key_slot(key)
    }

    /// The port of the master serving `key`.
    pub fn master_of(&self, key: &[u8]) -> Result<u16> {
        self.master_of_slot(Self::slot(key))
    }

    /// The port of the master serving `slot`.
    pub fn master_of_slot(&self, slot: u16) -> Result<u16> {
        let map = self.slot_map()?;
        map.range(..=slot)
            .next_back()
            .map(|(_, (p, _))| *p)
            .context("no master serves the slot")
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> Option<&RedisServer> {
        self.nodes.iter().find(|n| n.port == port)
    }

    /// The cluster id of the node on `port`.
    pub fn id_of(&self, port: u16) -> Result<String> {
        let mut c = self.node(port).context("unknown node")?.connection()?;
        Ok(redis::cmd("CLUSTER").arg("MYID").query(&mut c)?)
    }

    /// Moves `slot` and its keys to the master on `to`, as `redis-cli
    /// --cluster reshard` does: IMPORTING / MIGRATING, MIGRATE of every
    /// key (catalogs travel as DUMP payloads), then SETSLOT NODE on every
    /// master.
    pub fn move_slot(&self, slot: u16, to: u16) -> Result<()> {
        let from = self.master_of_slot(slot)?;
        if from == to {
            return Ok(());
        }
        let (from_id, to_id) = (self.id_of(from)?, self.id_of(to)?);
        let mut src = self.node(from).context("unknown node")?.connection()?;
        let mut dst = self.node(to).context("unknown node")?.connection()?;
        let setslot = |c: &mut redis::Connection, how: &str, id: &str| -> Result<()> {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(how)
                .arg(id)
                .query::<()>(c)
                .with_context(|| format!("CLUSTER SETSLOT {slot} {how}"))
        };
        setslot(&mut dst, "IMPORTING", &from_id)?;
        setslot(&mut src, "MIGRATING", &to_id)?;
        loop {
            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut src)?;
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(10_000)
                .arg("KEYS")
                .arg(keys)
                .query::<()>(&mut src)
                .context("MIGRATE")?;
        }
        setslot(&mut dst, "NODE", &to_id)?;
        setslot(&mut src, "NODE", &to_id)?;
        for port in self.masters() {
            if port != from && port != to {
                let mut c = self.node(port).context("unknown node")?.connection()?;
                setslot(&mut c, "NODE", &to_id)?;
            }
        }
        Ok(())
    }

    /// A cluster client (redis-rs) that knows every node.
    pub fn client(&self) -> Result<redis::cluster::ClusterClient> {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect();
        Ok(redis::cluster::ClusterClient::new(nodes)?)
    }

    /// A connection to the master of `key`.
    pub fn connection_for(&self, key: &[u8]) -> Result<redis::Connection> {
        let port = self.master_of(key)?;
        let node = self.node(port).context("unknown node")?;
        node.connection()
    }
}

impl Drop for Cluster {
    /// A test that fails with a cluster up shows what its nodes logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!("--- redis.log of node {} ---\n{}", n.port, n.log_lines(60));
            }
        }
    }
}
