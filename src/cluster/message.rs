//! The messages nodes of a Redis Cluster exchange over the cluster bus to
//! keep catalog copies, plugins and experiment counts in step, and their byte format (the
//! project's codec: a tag, then length-prefixed fields; every read is
//! bounds-checked, so a corrupt message is an error, never a panic).

use crate::catalog::log::{LogPos, HASH_BYTES};
use crate::cluster::popularity::{PopularityEvent, MAX_PENDING};
use crate::codec::{Reader, Writer};

/// Most arguments a replicated write may carry in an update.
const MAX_WRITE_ARGS: usize = 1 << 24;
/// Most entries in one announce.
const MAX_ANNOUNCED: usize = 1 << 20;
/// Most row keys in one fetch, answer or invalidation.
pub const MAX_ROW_KEYS: usize = 1 << 16;

/// A master's answer for one row key of a [`Message::RowFetch`].
#[derive(Debug, Clone, PartialEq)]
pub enum RowAnswer {
    /// The key's bytes.
    Row(Vec<u8>),
    /// The key is in a slot this master serves and does not exist.
    Absent,
    /// The key's slot is not this master's (moved, or moving).
    NotMine,
}

/// A plugin's version as nodes compare them: last writer wins, by
/// (`version`, `origin`), and a removal is a version without bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersion {
    pub name: String,
    /// Milliseconds since the epoch at the node that loaded or removed it
    /// (raised past the previous version when clocks disagree).
    pub version: u64,
    /// The node id where it was loaded or removed (breaks ties).
    pub origin: String,
    /// SHA-256 of the component; `None` for a removal.
    pub sha256: Option<[u8; 32]>,
}

impl PluginVersion {
    /// Whether `self` supersedes `other` (same name).
    pub fn newer_than(&self, other: &PluginVersion) -> bool {
        (self.version, &self.origin) > (other.version, &other.origin)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The catalog's owner applied `write` (command and arguments, as it
    /// replicated them), moving it from `prev` to `pos`.
    Update {
        catalog: Vec<u8>,
        prev: LogPos,
        pos: LogPos,
        write: Vec<Vec<u8>>,
    },
    /// What a master holds, sent to every node each announce interval:
    /// the catalogs whose keys it serves, at their positions, and its
    /// plugins' versions (removals included while they are remembered).
    Announce {
        catalogs: Vec<(Vec<u8>, LogPos)>,
        plugins: Vec<PluginVersion>,
    },
    /// "Send me the whole catalog": to a node that announced it.
    SnapshotRequest { catalog: Vec<u8> },
    /// Part `part` of `parts` of the catalog's encoding at `pos`.
    SnapshotPart {
        catalog: Vec<u8>,
        pos: LogPos,
        part: u32,
        parts: u32,
        bytes: Vec<u8>,
    },
    /// A plugin loaded (`bytes`) or removed (`None`) somewhere.
    Plugin {
        version: PluginVersion,
        bytes: Option<Vec<u8>>,
    },
    /// "Send me plugin `name`": to a node that announced a newer version.
    PluginRequest { name: String },
    /// Experiment counts a master flushed from its copy of `catalog`, to
    /// the catalog's owner (an encoded `experiment::counts::Delta`).
    ExperimentCounts {
        catalog: Vec<u8>,
        experiment: String,
        generation: u64,
        delta: Vec<u8>,
    },
    /// "Tell me when your copy of `catalog` has reached `pos`": from the
    /// catalog's owner to every node, for RECSYS.COPIES.WAIT.
    CopyWait { catalog: Vec<u8>, pos: LogPos },
    /// "My copy of `catalog` serves at `pos`": the answer to a
    /// [`Message::CopyWait`], sent once the copy has reached it.
    CopyAt { catalog: Vec<u8>, pos: LogPos },
    /// EVENTs a master recorded on `catalog` since its last flush, to
    /// every node: each master adds them to its popularity.
    Popularity {
        catalog: Vec<u8>,
        events: Vec<PopularityEvent>,
    },
    /// "Send me these embedding rows": to the master of their slots, from
    /// a node ranking with a model whose tables are row keys.
    RowFetch { request: u64, keys: Vec<Vec<u8>> },
    /// The answer to a [`Message::RowFetch`], one per key, in its order.
    RowData { request: u64, rows: Vec<RowAnswer> },
    /// Row keys written or deleted on their master, to every node: caches
    /// forget them. No keys: forget every row.
    RowsChanged { keys: Vec<Vec<u8>> },
}

const UPDATE: u32 = 1;
const ANNOUNCE: u32 = 2;
const SNAPSHOT_REQUEST: u32 = 3;
const SNAPSHOT_PART: u32 = 4;
const PLUGIN: u32 = 5;
const PLUGIN_REQUEST: u32 = 6;
const EXPERIMENT_COUNTS: u32 = 7;
const COPY_WAIT: u32 = 8;
const COPY_AT: u32 = 9;
const POPULARITY: u32 = 10;
const ROW_FETCH: u32 = 11;
const ROW_DATA: u32 = 12;
const ROWS_CHANGED: u32 = 13;

fn put_keys(w: &mut Writer, keys: &[Vec<u8>]) {
    w.u64(keys.len() as u64);
    for k in keys {
        w.blob(k);
    }
}

fn get_keys(r: &mut Reader) -> Result<Vec<Vec<u8>>, String> {
    let n = bounded_count(r, 8, MAX_ROW_KEYS)?;
    (0..n).map(|_| r.blob().map(<[u8]>::to_vec)).collect()
}

fn put_pos(w: &mut Writer, p: &LogPos) {
    w.u64(p.seq);
    w.0.extend_from_slice(&p.hash);
}

fn get_pos(r: &mut Reader) -> Result<LogPos, String> {
    let seq = r.u64()?;
    let mut hash = [0u8; HASH_BYTES];
    hash.copy_from_slice(r.take(HASH_BYTES)?);
    Ok(LogPos { seq, hash })
}

fn put_version(w: &mut Writer, v: &PluginVersion) {
    w.blob(v.name.as_bytes());
    w.u64(v.version);
    w.blob(v.origin.as_bytes());
    match &v.sha256 {
        Some(sha) => {
            w.u32(1);
            w.0.extend_from_slice(sha);
        }
        None => w.u32(0),
    }
}

fn get_version(r: &mut Reader) -> Result<PluginVersion, String> {
    let name = r.text("plugin name")?.to_string();
    let version = r.u64()?;
    let origin = r.text("origin node")?.to_string();
    let sha256 = match r.u32()? {
        0 => None,
        1 => {
            let mut sha = [0u8; 32];
            sha.copy_from_slice(r.take(32)?);
            Some(sha)
        }
        _ => return Err("bad plugin version flag".into()),
    };
    Ok(PluginVersion {
        name,
        version,
        origin,
        sha256,
    })
}

/// A count of at most `max` entries that fits the bytes left.
fn bounded_count(r: &mut Reader, min_bytes: usize, max: usize) -> Result<usize, String> {
    let n = r.count(min_bytes)?;
    if n > max {
        return Err(format!("{n} entries, more than {max}"));
    }
    Ok(n)
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        match self {
            Message::Update {
                catalog,
                prev,
                pos,
                write,
            } => {
                w.u32(UPDATE);
                w.blob(catalog);
                put_pos(&mut w, prev);
                put_pos(&mut w, pos);
                w.u64(write.len() as u64);
                for part in write {
                    w.blob(part);
                }
            }
            Message::Announce { catalogs, plugins } => {
                w.u32(ANNOUNCE);
                w.u64(catalogs.len() as u64);
                for (name, pos) in catalogs {
                    w.blob(name);
                    put_pos(&mut w, pos);
                }
                w.u64(plugins.len() as u64);
                for v in plugins {
                    put_version(&mut w, v);
                }
            }
            Message::SnapshotRequest { catalog } => {
                w.u32(SNAPSHOT_REQUEST);
                w.blob(catalog);
            }
            Message::SnapshotPart {
                catalog,
                pos,
                part,
                parts,
                bytes,
            } => {
                w.u32(SNAPSHOT_PART);
                w.blob(catalog);
                put_pos(&mut w, pos);
                w.u32(*part);
                w.u32(*parts);
                w.blob(bytes);
            }
            Message::Plugin { version, bytes } => {
                w.u32(PLUGIN);
                put_version(&mut w, version);
                match bytes {
                    Some(b) => {
                        w.u32(1);
                        w.blob(b);
                    }
                    None => w.u32(0),
                }
            }
            Message::PluginRequest { name } => {
                w.u32(PLUGIN_REQUEST);
                w.blob(name.as_bytes());
            }
            Message::ExperimentCounts {
                catalog,
                experiment,
                generation,
                delta,
            } => {
                w.u32(EXPERIMENT_COUNTS);
                w.blob(catalog);
                w.blob(experiment.as_bytes());
                w.u64(*generation);
                w.blob(delta);
            }
            Message::CopyWait { catalog, pos } | Message::CopyAt { catalog, pos } => {
                w.u32(if matches!(self, Message::CopyWait { .. }) {
                    COPY_WAIT
                } else {
                    COPY_AT
                });
                w.blob(catalog);
                put_pos(&mut w, pos);
            }
            Message::Popularity { catalog, events } => {
                w.u32(POPULARITY);
                w.blob(catalog);
                w.u64(events.len() as u64);
                for e in events {
                    w.blob(&e.item);
                    w.f64(e.weight);
                    w.u64(e.ts_ms as u64);
                }
            }
            Message::RowFetch { request, keys } => {
                w.u32(ROW_FETCH);
                w.u64(*request);
                put_keys(&mut w, keys);
            }
            Message::RowData { request, rows } => {
                w.u32(ROW_DATA);
                w.u64(*request);
                w.u64(rows.len() as u64);
                for a in rows {
                    match a {
                        RowAnswer::Row(bytes) => {
                            w.u32(0);
                            w.blob(bytes);
                        }
                        RowAnswer::Absent => w.u32(1),
                        RowAnswer::NotMine => w.u32(2),
                    }
                }
            }
            Message::RowsChanged { keys } => {
                w.u32(ROWS_CHANGED);
                put_keys(&mut w, keys);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, String> {
        let mut r = Reader::new(bytes);
        let m = match r.u32()? {
            UPDATE => {
                let catalog = r.blob()?.to_vec();
                let prev = get_pos(&mut r)?;
                let pos = get_pos(&mut r)?;
                let n = bounded_count(&mut r, 8, MAX_WRITE_ARGS)?;
                let write = (0..n)
                    .map(|_| r.blob().map(<[u8]>::to_vec))
                    .collect::<Result<_, _>>()?;
                Message::Update {
                    catalog,
                    prev,
                    pos,
                    write,
                }
            }
            ANNOUNCE => {
                let n = bounded_count(&mut r, 8 + 8 + HASH_BYTES, MAX_ANNOUNCED)?;
                let catalogs = (0..n)
                    .map(|_| Ok((r.blob()?.to_vec(), get_pos(&mut r)?)))
                    .collect::<Result<_, String>>()?;
                let n = bounded_count(&mut r, 8 + 8 + 8 + 4, MAX_ANNOUNCED)?;
                let plugins = (0..n)
                    .map(|_| get_version(&mut r))
                    .collect::<Result<_, _>>()?;
                Message::Announce { catalogs, plugins }
            }
            SNAPSHOT_REQUEST => Message::SnapshotRequest {
                catalog: r.blob()?.to_vec(),
            },
            SNAPSHOT_PART => Message::SnapshotPart {
                catalog: r.blob()?.to_vec(),
                pos: get_pos(&mut r)?,
                part: r.u32()?,
                parts: r.u32()?,
                bytes: r.blob()?.to_vec(),
            },
            PLUGIN => {
                let version = get_version(&mut r)?;
                let bytes = match r.u32()? {
                    0 => None,
                    1 => Some(r.blob()?.to_vec()),
                    _ => return Err("bad plugin bytes flag".into()),
                };
                Message::Plugin { version, bytes }
            }
            PLUGIN_REQUEST => Message::PluginRequest {
                name: r.text("plugin name")?.to_string(),
            },
            EXPERIMENT_COUNTS => Message::ExperimentCounts {
                catalog: r.blob()?.to_vec(),
                experiment: r.text("experiment name")?.to_string(),
                generation: r.u64()?,
                delta: r.blob()?.to_vec(),
            },
            COPY_WAIT => Message::CopyWait {
                catalog: r.blob()?.to_vec(),
                pos: get_pos(&mut r)?,
            },
            COPY_AT => Message::CopyAt {
                catalog: r.blob()?.to_vec(),
                pos: get_pos(&mut r)?,
            },
            POPULARITY => {
                let catalog = r.blob()?.to_vec();
                let n = bounded_count(&mut r, 8 + 8 + 8, MAX_PENDING)?;
                let events = (0..n)
                    .map(|_| {
                        Ok(PopularityEvent {
                            item: r.blob()?.to_vec(),
                            weight: r.f64()?,
                            ts_ms: r.u64()? as i64,
                        })
                    })
                    .collect::<Result<_, String>>()?;
                Message::Popularity { catalog, events }
            }
            ROW_FETCH => Message::RowFetch {
                request: r.u64()?,
                keys: get_keys(&mut r)?,
            },
            ROW_DATA => {
                let request = r.u64()?;
                let n = bounded_count(&mut r, 4, MAX_ROW_KEYS)?;
                let rows = (0..n)
                    .map(|_| match r.u32()? {
                        0 => Ok(RowAnswer::Row(r.blob()?.to_vec())),
                        1 => Ok(RowAnswer::Absent),
                        2 => Ok(RowAnswer::NotMine),
                        other => Err(format!("bad row answer tag {other}")),
                    })
                    .collect::<Result<_, String>>()?;
                Message::RowData { request, rows }
            }
            ROWS_CHANGED => Message::RowsChanged {
                keys: get_keys(&mut r)?,
            },
            other => return Err(format!("unknown message tag {other}")),
        };
        if r.remaining() != 0 {
            return Err("trailing bytes after the message".into());
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        let p = LogPos::ZERO.next(&[b"a"]);
        let v = PluginVersion {
            name: "f".into(),
            version: 7,
            origin: "n1".into(),
            sha256: Some([3; 32]),
        };
        vec![
            Message::Update {
                catalog: b"shop".to_vec(),
                prev: LogPos::ZERO,
                pos: p,
                write: vec![b"RECSYS.ITEM.SET".to_vec(), b"shop".to_vec(), vec![0, 1]],
            },
            Message::Announce {
                catalogs: vec![(b"a".to_vec(), p), (b"b".to_vec(), LogPos::ZERO)],
                plugins: vec![
                    v.clone(),
                    PluginVersion {
                        sha256: None,
                        ..v.clone()
                    },
                ],
            },
            Message::SnapshotRequest {
                catalog: b"shop".to_vec(),
            },
            Message::SnapshotPart {
                catalog: b"shop".to_vec(),
                pos: p,
                part: 1,
                parts: 3,
                bytes: vec![9; 100],
            },
            Message::Plugin {
                version: v.clone(),
                bytes: Some(vec![1, 2]),
            },
            Message::Plugin {
                version: v,
                bytes: None,
            },
            Message::PluginRequest { name: "f".into() },
            Message::ExperimentCounts {
                catalog: b"shop".to_vec(),
                experiment: "ab".into(),
                generation: 5,
                delta: vec![1, 2, 3],
            },
            Message::CopyWait {
                catalog: b"shop".to_vec(),
                pos: p,
            },
            Message::CopyAt {
                catalog: b"shop".to_vec(),
                pos: p,
            },
            Message::Popularity {
                catalog: b"shop".to_vec(),
                events: vec![
                    PopularityEvent {
                        item: b"a".to_vec(),
                        weight: 1.5,
                        ts_ms: 1_700_000_000_000,
                    },
                    PopularityEvent {
                        item: vec![0, 1],
                        weight: -2.0,
                        ts_ms: 0,
                    },
                ],
            },
            Message::RowFetch {
                request: 9,
                keys: vec![b"t:1".to_vec(), b"t:2".to_vec()],
            },
            Message::RowData {
                request: 9,
                rows: vec![
                    RowAnswer::Row(vec![0, 0, 128, 63]),
                    RowAnswer::Absent,
                    RowAnswer::NotMine,
                ],
            },
            Message::RowsChanged {
                keys: vec![b"t:1".to_vec()],
            },
            Message::RowsChanged { keys: vec![] },
        ]
    }

    #[test]
    fn every_message_round_trips_and_no_cut_decodes() {
        for m in samples() {
            let bytes = m.encode();
            assert_eq!(Message::decode(&bytes).unwrap(), m);
            for cut in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..cut]).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Message::decode(&longer).is_err());
        }
        assert!(Message::decode(&99u32.to_le_bytes()).is_err());
    }

    #[test]
    fn plugin_versions_order_by_time_then_origin() {
        let v = |version, origin: &str| PluginVersion {
            name: "p".into(),
            version,
            origin: origin.into(),
            sha256: None,
        };
        assert!(v(2, "a").newer_than(&v(1, "z")));
        assert!(v(1, "b").newer_than(&v(1, "a")));
        assert!(!v(1, "a").newer_than(&v(1, "a")));
    }
}
