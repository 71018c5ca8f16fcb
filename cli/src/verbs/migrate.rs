//! `recsys migrate-users`: rewrites the `seen` field of user hashes written
//! in the older binary form (8 bytes per item) as text (`b` + base64), so
//! that clients decoding every field as UTF-8 (redis-py with
//! `decode_responses=True`) can read the hashes. RECSYS.EVENT rewrites a
//! user's field on their next event anyway; this converts the rest.
//!
//! Each hash is converted under WATCH: an EVENT that changes it between the
//! read and the write makes the transaction fail, and the hash is read
//! again, so no event is lost. Run it against every master of a cluster.

use anyhow::{Context, Result};
use clap::Args;
use recsys::user::{SeenSet, SEEN_FIELD};

#[derive(Args)]
pub struct MigrateUsers {
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis: String,
    /// SCAN MATCH pattern of the user keys.
    #[arg(long = "match", default_value = "*")]
    pub pattern: String,
}

/// How many hashes were looked at and how many were rewritten.
#[derive(Debug, Default, PartialEq)]
pub struct Migrated {
    pub hashes: usize,
    pub rewritten: usize,
}

pub fn run(a: &MigrateUsers) -> Result<()> {
    let client = redis::Client::open(a.redis.as_str())?;
    let mut con = client
        .get_connection()
        .with_context(|| format!("connecting to {}", a.redis))?;
    let m = migrate(&mut con, &a.pattern)?;
    println!(
        "{} user hashes matching '{}': {} had a binary '{SEEN_FIELD}' field, now text",
        m.hashes, a.pattern, m.rewritten
    );
    Ok(())
}

/// Converts every hash matching `pattern` whose `seen` is binary.
pub fn migrate(con: &mut redis::Connection, pattern: &str) -> Result<Migrated> {
    let keys: Vec<Vec<u8>> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000)
        .arg("TYPE")
        .arg("hash")
        .clone()
        .iter(con)?
        .collect();
    let mut m = Migrated::default();
    for key in keys {
        m.hashes += 1;
        loop {
            redis::cmd("WATCH").arg(&key).query::<()>(con)?;
            let seen: Option<Vec<u8>> = redis::cmd("HGET").arg(&key).arg(SEEN_FIELD).query(con)?;
            let Some(seen) = seen.filter(|s| SeenSet::is_binary(s)) else {
                redis::cmd("UNWATCH").query::<()>(con)?;
                break;
            };
            let name = String::from_utf8_lossy(&key).into_owned();
            let set = SeenSet::parse(Some(&seen), || name.clone())?;
            let done: Option<()> = redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg(SEEN_FIELD)
                .arg(set.to_text())
                .ignore()
                .query(con)?;
            if done.is_some() {
                m.rewritten += 1;
                break;
            }
        }
    }
    Ok(m)
}
