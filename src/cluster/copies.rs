//! The copies of other nodes' catalogs one node keeps, and the rules that
//! keep each copy equal to its owner's catalog or out of service:
//!
//! - an update applies only on top of the position it was made at
//!   (`prev`); a copy that is anywhere else asks the owner for a snapshot
//!   and answers nothing until it is whole again (TRYAGAIN);
//! - every announce interval the owner says where each catalog is; a
//!   copy elsewhere (a lost update, a failover that lost the old master's
//!   last writes) catches up the same way; a copy its owner stops
//!   announcing (DEL, RENAME, a reshard while the new owner has not
//!   announced yet) is dropped after a grace period unless another node
//!   announces it;
//! - a copy read back from disk serves only once an owner has confirmed
//!   its position;
//! - a catalog key that leaves this node (MIGRATE in a reshard, DEL,
//!   RENAME) stays as a copy that serves again once a node announces the
//!   catalog at the same position (the key's new owner: no snapshot
//!   needed), and is dropped after the grace period when none does.
//!
//! Generic over the catalog handle `C`, so the rules are tested here
//! without Redis; the module applies the writes and moves the bytes.

use std::collections::{BTreeMap, VecDeque};

use crate::catalog::log::LogPos;

/// A copy the owner stopped announcing is dropped after this long.
pub const ORPHAN_GRACE_MS: i64 = 5_000;
/// A snapshot asked for and not complete after this long is asked for again.
pub const SNAPSHOT_TIMEOUT_MS: i64 = 15_000;
/// Updates held while a snapshot is on its way, at most (count, bytes);
/// past either the oldest go (the snapshot will be followed by newer ones,
/// or the next announce asks again).
pub const MAX_PENDING: usize = 100_000;
pub const MAX_PENDING_BYTES: usize = 256 << 20;
/// Largest snapshot accepted, in bytes, and parts.
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 40;
pub const MAX_SNAPSHOT_PARTS: u32 = 1 << 20;

/// An update as it came off the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub prev: LogPos,
    pub pos: LogPos,
    pub write: Vec<Vec<u8>>,
}

impl Update {
    fn bytes(&self) -> usize {
        self.write.iter().map(Vec::len).sum::<usize>() + 64
    }

    /// Whether the write creates the catalog (its first write).
    pub fn is_create(&self) -> bool {
        self.prev == LogPos::ZERO
            && self
                .write
                .first()
                .is_some_and(|c| c.eq_ignore_ascii_case(b"RECSYS.CREATE"))
    }
}

/// A snapshot being received.
#[derive(Debug)]
struct Assembly {
    pos: LogPos,
    parts: u32,
    bytes: Vec<u8>,
    next: u32,
}

/// A copy that is catching up.
#[derive(Debug)]
struct CatchUp {
    from: String,
    asked_ms: i64,
    pending: VecDeque<Update>,
    pending_bytes: usize,
    snapshot: Option<Assembly>,
}

/// One catalog copy.
#[derive(Debug)]
pub struct Copy<C> {
    /// `None` until the first snapshot (or CREATE) arrives.
    pub catalog: Option<C>,
    pub pos: LogPos,
    /// The node that last announced or updated it.
    pub owner: String,
    /// An owner confirmed `pos` since this copy was read back from disk.
    pub confirmed: bool,
    /// Made from a key this node no longer holds, not yet confirmed by a
    /// new owner: serves nowhere, not even on a replica.
    pub handover: bool,
    /// When the owner last confirmed or updated it.
    pub confirmed_ms: i64,
    orphan_since_ms: Option<i64>,
    catch_up: Option<CatchUp>,
    /// Updates applied, snapshots installed (INFO).
    pub updates: u64,
    pub snapshots: u64,
}

impl<C> Copy<C> {
    fn new(owner: &str, now_ms: i64) -> Self {
        Copy {
            catalog: None,
            pos: LogPos::ZERO,
            owner: owner.to_string(),
            confirmed: true,
            handover: false,
            confirmed_ms: now_ms,
            orphan_since_ms: None,
            catch_up: None,
            updates: 0,
            snapshots: 0,
        }
    }

    /// The catalog of a key this node no longer holds (see the module doc).
    pub fn handed_over(catalog: C, pos: LogPos, owner: String, now_ms: i64) -> Self {
        Copy {
            confirmed: false,
            handover: true,
            orphan_since_ms: Some(now_ms),
            ..Copy::restored(catalog, pos, owner, false, now_ms)
        }
    }

    /// An owner vouched for the copy's position.
    fn confirm(&mut self, owner: &str, now_ms: i64) {
        self.owner = owner.to_string();
        self.confirmed = true;
        self.handover = false;
        self.confirmed_ms = now_ms;
        self.orphan_since_ms = None;
    }

    /// A copy about to be created by its first write (replayed CREATE).
    pub fn empty(owner: String, now_ms: i64) -> Self {
        Copy::new(&owner, now_ms)
    }

    /// A copy read back from disk or received from this node's master: it
    /// serves on a replica at once, on a master once confirmed.
    pub fn restored(catalog: C, pos: LogPos, owner: String, confirmed: bool, now_ms: i64) -> Self {
        Copy {
            catalog: Some(catalog),
            pos,
            owner,
            confirmed,
            handover: false,
            confirmed_ms: now_ms,
            orphan_since_ms: None,
            catch_up: None,
            updates: 0,
            snapshots: 0,
        }
    }

    /// Whether requests may use it: whole, not catching up, and (on a
    /// master, or for a handed-over key anywhere) confirmed by an owner.
    pub fn serving(&self, is_master: bool) -> Option<&C> {
        match (&self.catalog, &self.catch_up) {
            (Some(c), None) if self.confirmed || (!is_master && !self.handover) => Some(c),
            _ => None,
        }
    }

    pub fn catching_up(&self) -> bool {
        self.catch_up.is_some()
    }

    /// Start (or keep) catching up from `from`; whether to send a request now.
    fn start_catch_up(&mut self, from: &str, now_ms: i64) -> bool {
        match &mut self.catch_up {
            Some(c) if c.from == from && now_ms - c.asked_ms < SNAPSHOT_TIMEOUT_MS => false,
            Some(c) => {
                c.from = from.to_string();
                c.asked_ms = now_ms;
                c.snapshot = None;
                true
            }
            None => {
                self.catch_up = Some(CatchUp {
                    from: from.to_string(),
                    asked_ms: now_ms,
                    pending: VecDeque::new(),
                    pending_bytes: 0,
                    snapshot: None,
                });
                true
            }
        }
    }

    fn hold(&mut self, u: Update) {
        if let Some(c) = &mut self.catch_up {
            c.pending_bytes += u.bytes();
            c.pending.push_back(u);
            while c.pending.len() > MAX_PENDING || c.pending_bytes > MAX_PENDING_BYTES {
                match c.pending.pop_front() {
                    Some(old) => c.pending_bytes -= old.bytes(),
                    None => break,
                }
            }
        }
    }
}

/// What to do with an update.
#[derive(Debug, PartialEq, Eq)]
pub enum UpdateAction {
    /// Apply it to the copy (create the catalog when `create`), then call
    /// [`Copies::applied`] or [`Copies::failed`].
    Apply { create: bool },
    /// Already applied, or held until the snapshot is in.
    Ignore,
    /// Send a snapshot request to this node.
    Request(String),
}

/// Every copy on this node, by catalog key name.
#[derive(Debug)]
pub struct Copies<C> {
    pub map: BTreeMap<Vec<u8>, Copy<C>>,
}

impl<C> Default for Copies<C> {
    fn default() -> Self {
        Copies {
            map: BTreeMap::new(),
        }
    }
}

impl<C> Copies<C> {
    pub fn get(&self, name: &[u8]) -> Option<&Copy<C>> {
        self.map.get(name)
    }

    /// An update from `from`.
    pub fn on_update(&mut self, from: &str, now_ms: i64, name: &[u8], u: Update) -> UpdateAction {
        if u.is_create() {
            // Created (again) at its owner: a fresh copy, whatever was here.
            self.map.insert(name.to_vec(), Copy::new(from, now_ms));
            return UpdateAction::Apply { create: true };
        }
        let copy = self
            .map
            .entry(name.to_vec())
            .or_insert_with(|| Copy::new(from, now_ms));
        if copy.catch_up.is_some() {
            let ask = copy.start_catch_up(from, now_ms);
            copy.hold(u);
            return if ask {
                UpdateAction::Request(from.to_string())
            } else {
                UpdateAction::Ignore
            };
        }
        if copy.catalog.is_some() && copy.pos == u.prev {
            copy.owner = from.to_string();
            return UpdateAction::Apply { create: false };
        }
        if copy.catalog.is_some() && copy.pos == u.pos {
            return UpdateAction::Ignore;
        }
        copy.start_catch_up(from, now_ms);
        copy.hold(u);
        UpdateAction::Request(from.to_string())
    }

    /// The update (or the CREATE) was applied: the copy is at `pos`.
    pub fn applied(&mut self, name: &[u8], catalog: Option<C>, pos: LogPos, now_ms: i64) {
        if let Some(copy) = self.map.get_mut(name) {
            if let Some(c) = catalog {
                copy.catalog = Some(c);
            }
            copy.pos = pos;
            let owner = copy.owner.clone();
            copy.confirm(&owner, now_ms);
            copy.updates += 1;
        }
    }

    /// An update the owner applied failed here: the copy can no longer be
    /// trusted; returns the node to ask for a snapshot.
    pub fn failed(&mut self, name: &[u8], now_ms: i64) -> Option<String> {
        let copy = self.map.get_mut(name)?;
        let from = copy.owner.clone();
        copy.start_catch_up(&from, now_ms).then_some(from)
    }

    /// `from` announced these catalogs (those whose keys this node holds
    /// left out by the caller). Returns the snapshot requests to send.
    pub fn on_announce(
        &mut self,
        from: &str,
        now_ms: i64,
        catalogs: &[(Vec<u8>, LogPos)],
    ) -> Vec<(Vec<u8>, String)> {
        let mut requests = Vec::new();
        for (name, pos) in catalogs {
            let copy = self
                .map
                .entry(name.clone())
                .or_insert_with(|| Copy::new(from, now_ms));
            if copy.catch_up.is_none() && copy.catalog.is_some() && copy.pos == *pos {
                copy.confirm(from, now_ms);
                continue;
            }
            if copy.start_catch_up(from, now_ms) {
                requests.push((name.clone(), from.to_string()));
            }
        }
        for (name, copy) in self.map.iter_mut() {
            if copy.owner == from && !catalogs.iter().any(|(n, _)| n == name) {
                copy.orphan_since_ms.get_or_insert(now_ms);
            }
        }
        requests
    }

    /// Part of a snapshot from `from`. When the last part is in, returns
    /// the whole encoding to decode (then call [`Copies::install`]).
    pub fn on_snapshot_part(
        &mut self,
        from: &str,
        name: &[u8],
        pos: LogPos,
        part: u32,
        parts: u32,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        let c = self.map.get_mut(name)?.catch_up.as_mut()?;
        if c.from != from || parts == 0 || parts > MAX_SNAPSHOT_PARTS || part >= parts {
            return None;
        }
        if part == 0 {
            c.snapshot = Some(Assembly {
                pos,
                parts,
                bytes: Vec::new(),
                next: 0,
            });
        }
        let a = c.snapshot.as_mut()?;
        if a.pos != pos || a.parts != parts || a.next != part {
            c.snapshot = None;
            return None;
        }
        if a.bytes.len() + bytes.len() > MAX_SNAPSHOT_BYTES {
            c.snapshot = None;
            return None;
        }
        a.bytes.extend_from_slice(bytes);
        a.next += 1;
        if a.next < a.parts {
            return None;
        }
        c.snapshot.take().map(|a| a.bytes)
    }

    /// Installs a decoded snapshot at `pos`; returns the held updates past
    /// it, to feed back through [`Copies::on_update`] in order.
    pub fn install(&mut self, name: &[u8], catalog: C, pos: LogPos, now_ms: i64) -> Vec<Update> {
        let Some(copy) = self.map.get_mut(name) else {
            return Vec::new();
        };
        let held = copy.catch_up.take().map(|c| c.pending).unwrap_or_default();
        copy.catalog = Some(catalog);
        copy.pos = pos;
        let owner = copy.owner.clone();
        copy.confirm(&owner, now_ms);
        copy.snapshots += 1;
        held.into_iter().filter(|u| u.pos.seq > pos.seq).collect()
    }

    /// Copies orphaned for longer than the grace period, removed.
    pub fn expire(&mut self, now_ms: i64) -> Vec<Vec<u8>> {
        let gone: Vec<Vec<u8>> = self
            .map
            .iter()
            .filter(|(_, c)| {
                c.orphan_since_ms
                    .is_some_and(|t| now_ms - t > ORPHAN_GRACE_MS)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in &gone {
            self.map.remove(n);
        }
        gone
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Copy<C>> {
        self.map.remove(name)
    }

    /// The key `name` left this node holding `catalog` at `pos`: keep it
    /// as a handed-over copy (see the module doc).
    pub fn hand_over(&mut self, name: &[u8], catalog: C, pos: LogPos, me: &str, now_ms: i64) {
        self.map.insert(
            name.to_vec(),
            Copy::handed_over(catalog, pos, me.to_string(), now_ms),
        );
    }

    /// Handed-over copies an owner has confirmed since
    /// [`Copies::handed_over_names`] listed them, with their positions.
    pub fn confirmed_among(&self, names: &[Vec<u8>]) -> Vec<(Vec<u8>, LogPos)> {
        names
            .iter()
            .filter_map(|n| {
                let c = self.map.get(n)?;
                (!c.handover && c.confirmed).then(|| (n.clone(), c.pos))
            })
            .collect()
    }

    /// The copies made from keys that left this node, not yet confirmed.
    pub fn handed_over_names(&self) -> Vec<Vec<u8>> {
        self.map
            .iter()
            .filter(|(_, c)| c.handover)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// After loading the data set (AOF replay, RDB): every copy may have
    /// missed writes while this node was down, so on a master none serves
    /// until an owner confirms its position.
    pub fn unconfirm_all(&mut self) {
        for c in self.map.values_mut() {
            c.confirmed = false;
        }
    }

    /// A replica's master confirmed a handed-over copy at `pos`.
    pub fn confirm_replicated(&mut self, name: &[u8], pos: LogPos, now_ms: i64) {
        if let Some(c) = self.map.get_mut(name) {
            if c.pos == pos {
                let owner = c.owner.clone();
                c.confirm(&owner, now_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests;
