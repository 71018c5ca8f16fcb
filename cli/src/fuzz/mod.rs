//! `recsys fuzz`: throws random and half-valid arguments at every RECSYS
//! command of a real redis-server with the module (directly, inside MULTI
//! and from Lua), and mutated DUMP payloads at RESTORE, and counts what
//! must never happen: the server dying, an `internal error` reply, a reply
//! that takes too long, or an accepted payload that makes the dataset
//! unloadable (checked with DEBUG RELOAD).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use recsys::rng::SplitMix;
use recsys::vector::to_fp32_blob;
use redis::{Connection, Value};

use crate::server::RedisServer;

#[derive(clap::Args, Debug, Clone)]
pub struct Fuzz {
    /// How long to run.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seed of the generator (the same seed throws the same commands).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Compiled example plugins (loaded and mutated when present).
    #[arg(long, default_value = "plugins/dist")]
    pub plugins: PathBuf,
    /// Model fixtures (loaded and mutated when present).
    #[arg(long, default_value = "tests/fixtures")]
    pub fixtures: PathBuf,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub iterations: u64,
    pub by_command: BTreeMap<String, u64>,
    pub errors: u64,
    pub restores: u64,
    pub restores_accepted: u64,
    pub reloads: u64,
    /// Commands after which the server had died.
    pub deaths: Vec<String>,
    /// Replies that said "internal error".
    pub internal_errors: Vec<String>,
    /// Commands without a reply within the timeout.
    pub hangs: Vec<String>,
    /// DEBUG RELOADs that failed (an accepted payload the RDB cannot load).
    pub reload_failures: Vec<String>,
}

impl Report {
    /// Whether anything that must never happen happened.
    pub fn clean(&self) -> bool {
        self.deaths.is_empty()
            && self.internal_errors.is_empty()
            && self.hangs.is_empty()
            && self.reload_failures.is_empty()
    }

    pub fn print(&self) {
        println!(
            "fuzz: {} commands ({} error replies), {} mutated RESTOREs ({} accepted), {} DEBUG RELOADs",
            self.iterations, self.errors, self.restores, self.restores_accepted, self.reloads
        );
        let per: Vec<String> = self
            .by_command
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        println!("per command: {}", per.join(", "));
        println!(
            "deaths: {}, internal errors: {}, hangs: {}, reload failures: {}",
            self.deaths.len(),
            self.internal_errors.len(),
            self.hangs.len(),
            self.reload_failures.len()
        );
        for (what, list) in [
            ("death after", &self.deaths),
            ("internal error", &self.internal_errors),
            ("hang", &self.hangs),
            ("reload failure", &self.reload_failures),
        ] {
            for item in list.iter().take(10) {
                println!("  {what}: {item}");
            }
        }
    }
}

mod gen;

use gen::{Gen, COMMANDS, DIM};

fn describe(cmd: &str, args: &[Vec<u8>]) -> String {
    let mut s = cmd.to_string();
    for a in args.iter().take(12) {
        let text = String::from_utf8_lossy(&a[..a.len().min(40)])
            .escape_debug()
            .to_string();
        s.push_str(&format!(
            " \"{text}\"{}",
            if a.len() > 40 { "..." } else { "" }
        ));
    }
    s
}

/// The error text of a reply tree, if any part of it is an error.
fn reply_errors(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::ServerError(e) => out.push(format!("{e:?}")),
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            items.iter().for_each(|i| reply_errors(i, out))
        }
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            reply_errors(k, out);
            reply_errors(v, out);
        }),
        _ => {}
    }
}

struct Target {
    server: RedisServer,
    conn: Connection,
}

impl Target {
    fn start() -> Result<Target> {
        let server = RedisServer::start(&[], &["--save", ""])?;
        let conn = server.connection()?;
        conn.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut t = Target { server, conn };
        t.setup()?;
        Ok(t)
    }

    fn setup(&mut self) -> Result<()> {
        let c = &mut self.conn;
        redis::cmd("DEBUG")
            .arg("SET-SKIP-CHECKSUM-VALIDATION")
            .arg(1)
            .query::<()>(c)?;
        redis::cmd("RECSYS.CREATE")
            .arg("fz:c1")
            .arg("DIM")
            .arg(DIM)
            .arg("METRIC")
            .arg("COSINE")
            .query::<()>(c)?;
        redis::cmd("RECSYS.CREATE")
            .arg("fz:c2")
            .arg("DIM")
            .arg(DIM)
            .arg("METRIC")
            .arg("L2")
            .arg("QUANT")
            .arg("Q8")
            .query::<()>(c)?;
        let mut g = SplitMix::new(7);
        for cat in ["fz:c1", "fz:c2"] {
            for i in 0..200 {
                let v: Vec<f32> = (0..DIM).map(|_| g.normal() as f32).collect();
                redis::cmd("RECSYS.ITEM.SET")
                    .arg(cat)
                    .arg(format!("item:{i}"))
                    .arg("FP32")
                    .arg(to_fp32_blob(&v))
                    .arg("ATTRS")
                    .arg(format!(
                        r#"{{"genre":"g{}","price":{},"tags":["t{}"]}}"#,
                        i % 5,
                        i % 100,
                        i % 7
                    ))
                    .query::<()>(c)?;
            }
        }
        // Ids that differ in one byte after a NUL: a flipped bit can make
        // them duplicates, whose log line once killed the server.
        for (cat, id) in [
            ("fz:c1", &b"nul\0a"[..]),
            ("fz:c1", b"nul\0b"),
            ("fz:c2", b"nul\0a"),
        ] {
            redis::cmd("RECSYS.ITEM.SET")
                .arg(cat)
                .arg(id)
                .arg("VALUES")
                .arg(&vec!["0.5"; DIM][..])
                .query::<()>(c)?;
        }
        redis::cmd("HSET")
            .arg("fz:u1")
            .arg("age")
            .arg("30")
            .arg("recent")
            .arg(r#"["item:1","item:2"]"#)
            .query::<()>(c)?;
        // A seen set of an odd length (refused by EXCLUDE_SEEN and EVENT).
        redis::cmd("HSET")
            .arg("fz:u2")
            .arg("seen")
            .arg(&b"1234567"[..])
            .query::<()>(c)?;
        redis::cmd("SET").arg("fz:str").arg("x").query::<()>(c)?;
        Ok(())
    }

    /// Sends one command; `None` when the connection failed.
    fn send(&mut self, args: &[Vec<u8>]) -> Option<redis::RedisResult<Value>> {
        let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).unwrap_or("PING"));
        for a in &args[1..] {
            cmd.arg(&a[..]);
        }
        match cmd.query::<Value>(&mut self.conn) {
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => None,
            r => Some(r),
        }
    }
}

/// Runs the fuzzer for `f.seconds`; the report says what it found.
pub fn run(f: &Fuzz) -> Result<Report> {
    let read_all = |dir: &PathBuf, names: &[&str]| -> Vec<Vec<u8>> {
        names
            .iter()
            .filter_map(|n| std::fs::read(dir.join(n)).ok())
            .collect()
    };
    let mut gen = Gen {
        rng: SplitMix::new(f.seed),
        plugins: read_all(&f.plugins, &["exclude-attr.wasm", "boost-sponsored.wasm"]),
        models: read_all(
            &f.fixtures,
            &["dlrm_ranker.safetensors", "query_tower.safetensors"],
        ),
    };
    let mut t = Target::start()?;
    if let Some(p) = gen.plugins.first().cloned() {
        let _ = t.send(&[b"RECSYS.PLUGIN.LOAD".to_vec(), b"fzfilter".to_vec(), p]);
    }
    let mut report = Report::default();
    let deadline = Instant::now() + Duration::from_secs(f.seconds);
    let mut rounds = 0u64;
    while Instant::now() < deadline {
        rounds += 1;
        let n = rounds;
        if n.is_multiple_of(40) {
            restore_mutated(&mut t, &mut gen, &mut report);
        }
        if n.is_multiple_of(1500) {
            report.reloads += 1;
            if let Some(Err(e)) = t.send(&[b"DEBUG".to_vec(), b"RELOAD".to_vec()]) {
                report.reload_failures.push(e.to_string());
                // The server may be left without the data; start afresh.
                t = Target::start()?;
            }
        }
        let cmd = gen.pick(&COMMANDS);
        // Code-compiling commands are slow: keep them rare.
        if matches!(
            cmd,
            "RECSYS.PLUGIN.LOAD" | "RECSYS.MODEL.SET" | "RECSYS.BATCH"
        ) && !gen.chance(0.1)
        {
            continue;
        }
        report.iterations += 1;
        *report.by_command.entry(cmd.to_string()).or_default() += 1;
        let mut args = gen.plausible(cmd);
        if gen.chance(0.7) {
            gen.mutate_args(&mut args);
        }
        let mut line = vec![cmd.as_bytes().to_vec()];
        line.extend(args);
        let mut replies = Vec::new();
        match gen.below(20) {
            0 => {
                let mut eval = vec![
                    b"EVAL".to_vec(),
                    b"return redis.pcall(unpack(ARGV))".to_vec(),
                    b"0".to_vec(),
                ];
                eval.extend(line.iter().cloned());
                replies.push(t.send(&eval));
            }
            1 => {
                replies.push(t.send(&[b"MULTI".to_vec()]));
                replies.push(t.send(&line));
                replies.push(t.send(&[b"EXEC".to_vec()]));
            }
            _ => replies.push(t.send(&line)),
        }
        let what = describe(cmd, &line[1..]);
        let mut errors = Vec::new();
        let mut dead = false;
        for r in replies {
            match r {
                Some(Ok(v)) => reply_errors(&v, &mut errors),
                Some(Err(e)) => errors.push(e.to_string()),
                None => dead = true,
            }
        }
        if !dead && t.send(&[b"PING".to_vec()]).is_none() {
            dead = true;
        }
        report.errors += !errors.is_empty() as u64;
        for e in errors {
            if e.contains("internal error") {
                report.internal_errors.push(format!("{what}: {e}"));
            }
        }
        if dead {
            if t.server.is_alive() {
                report.hangs.push(what);
            } else {
                report
                    .deaths
                    .push(format!("{what}\n{}", t.server.log_tail()));
            }
            t = Target::start()?;
        }
    }
    // The dataset the run leaves must still load.
    report.reloads += 1;
    match t.send(&[b"DEBUG".to_vec(), b"RELOAD".to_vec()]) {
        Some(Ok(_)) => {}
        Some(Err(e)) => report.reload_failures.push(format!("final: {e}")),
        None => report.deaths.push("final DEBUG RELOAD".into()),
    }
    Ok(report)
}

/// DUMPs a catalog, mutates the payload and RESTOREs it; an accepted copy
/// is then used, so a payload that passes validation but is inconsistent
/// shows up as an error or a death.
fn restore_mutated(t: &mut Target, gen: &mut Gen, report: &mut Report) {
    let src = gen.pick(&["fz:c1", "fz:c2"]);
    let Some(Ok(Value::BulkString(mut payload))) = t.send(&[b"DUMP".to_vec(), src.into()]) else {
        return;
    };
    // Keep the RDB version and checksum trailer (10 bytes) in place.
    let body = payload.len().saturating_sub(10);
    let mut head = payload[..body].to_vec();
    gen.mutate_bytes(&mut head);
    head.extend_from_slice(&payload[body..]);
    payload = head;
    report.restores += 1;
    let restored = t.send(&[
        b"RESTORE".to_vec(),
        b"fz:r".to_vec(),
        b"0".to_vec(),
        payload,
        b"REPLACE".to_vec(),
    ]);
    if !matches!(restored, Some(Ok(_))) {
        return;
    }
    report.restores_accepted += 1;
    let probe = gen.values(DIM);
    let mut uses: Vec<Vec<Vec<u8>>> = vec![
        vec![b"RECSYS.INFO".to_vec(), b"fz:r".to_vec()],
        vec![
            b"RECSYS.SIMILAR".to_vec(),
            b"fz:r".to_vec(),
            b"item:3".to_vec(),
            b"5".to_vec(),
        ],
        vec![
            b"RECSYS.RECOMMEND".to_vec(),
            b"fz:r".to_vec(),
            b"fz:nobody".to_vec(),
            b"K".to_vec(),
            b"5".to_vec(),
        ],
    ];
    let mut set = vec![
        b"RECSYS.ITEM.SET".to_vec(),
        b"fz:r".to_vec(),
        b"new".to_vec(),
    ];
    set.extend(probe.clone());
    uses.push(set);
    let mut search = vec![b"RECSYS.SEARCH".to_vec(), b"fz:r".to_vec(), b"5".to_vec()];
    search.extend(probe);
    uses.push(search);
    for u in uses {
        match t.send(&u) {
            Some(Err(e)) if e.to_string().contains("internal error") => report
                .internal_errors
                .push(format!("on a restored payload: {}: {e}", describe("", &u))),
            _ => {}
        }
    }
}

/// `recsys fuzz`: runs and prints the report; fails when it found anything.
pub fn main(f: &Fuzz) -> Result<()> {
    let report = run(f)?;
    report.print();
    if !report.clean() {
        bail!("the fuzzer found failures (above)");
    }
    Ok(())
}
