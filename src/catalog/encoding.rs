//! The byte format of a catalog (RDB payloads, COPY): the index snapshot,
//! then the items (slot, id, ATTRS), then tagged sections (popularity,
//! default SESSION and SEQUENCE weight, write-log position, the order items
//! were added in, experiments,
//! models). Decoding checks every record against the index and refuses
//! anything inconsistent.

use super::ids::ItemIds;
use super::log::LogPos;
use super::popularity::Popularity;
use super::Catalog;
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::experiment::Experiments;
use crate::features::columns::Columns;
use crate::index::snapshot;
use crate::rank::models::ModelSet;
use crate::user::Session;

/// Section tag of the popularity block.
const POPULARITY_TAG: u32 = 0x504F_5055; // "POPU"
/// Section tag of the models block.
const MODELS_TAG: u32 = 0x4D4F_444C; // "MODL"
/// Section tag of the default SESSION blend.
const SESSION_TAG: u32 = 0x5345_5353; // "SESS"
/// Section tag of the default SEQUENCE weight.
const SEQUENCE_TAG: u32 = 0x544F_5752; // "TOWR"
/// Section tag of the order items were added in.
const RECENCY_TAG: u32 = 0x5245_434E; // "RECN"
/// Section tag of the experiments.
const EXPERIMENTS_TAG: u32 = 0x4558_5045; // "EXPE"
/// Section tag of the write-log position.
const LOG_TAG: u32 = 0x4C4F_4750; // "LOGP"
/// Bytes an item record takes at least: slot, and two blob lengths.
const MIN_ITEM_BYTES: usize = 4 + 8 + 8;

impl Catalog {
    /// A deep copy (COPY): items and graph through the encoding, the models
    /// shared (they are immutable; sharing skips recompiling them).
    pub fn duplicate(&self) -> Result<Catalog> {
        let mut copy = Catalog::decode(&self.encode_parts(false))?;
        copy.models = self.models.clone();
        Ok(copy)
    }

    /// Serializes the catalog (graph and models included).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_parts(true)
    }

    fn encode_parts(&self, with_models: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.memory_bytes() + 64);
        snapshot::encode(&self.index, &mut out);
        let mut w = Writer(&mut out);
        let live: Vec<u32> = (0..self.ids.slots() as u32)
            .filter(|&s| self.ids.id(s).is_some())
            .collect();
        w.u64(live.len() as u64);
        for s in live {
            w.u32(s);
            w.blob(self.ids.id(s).unwrap_or("").as_bytes());
            w.blob(self.attrs_of(s).unwrap_or("").as_bytes());
        }
        w.u32(POPULARITY_TAG);
        self.popularity.encode(&mut w, |s| self.index.is_live(s));
        if let Some(session) = self.session_default {
            w.u32(SESSION_TAG);
            w.u64(session.items as u64);
            w.u32(session.weight.to_bits());
        }
        if let Some(weight) = self.sequence_default {
            w.u32(SEQUENCE_TAG);
            w.u32(weight.to_bits());
        }
        if self.log != LogPos::ZERO {
            w.u32(LOG_TAG);
            w.u64(self.log.seq);
            w.0.extend_from_slice(&self.log.hash);
        }
        w.u32(RECENCY_TAG);
        self.recency.encode(&mut w, |s| {
            self.index.is_live(s) && self.ids.id(s).is_some()
        });
        if !self.experiments.is_empty() {
            w.u32(EXPERIMENTS_TAG);
            self.experiments.encode(&mut w);
        }
        if with_models && !self.models.is_empty() {
            w.u32(MODELS_TAG);
            self.models.encode(&mut w);
        }
        out
    }

    /// Rebuilds a catalog from [`Catalog::encode`]'s bytes; any inconsistency
    /// is an error.
    pub fn decode(bytes: &[u8]) -> Result<Catalog> {
        Self::decode_parts(bytes).map_err(Error::invalid)
    }

    fn decode_parts(bytes: &[u8]) -> Result<Catalog, String> {
        let mut r = Reader::new(bytes);
        let index = snapshot::decode(&mut r)?;
        let slots = index.slots();
        let count = r.count(MIN_ITEM_BYTES)?;
        if count != index.len() {
            return Err("item count does not match the index".into());
        }
        let mut ids = ItemIds::default();
        let mut attrs: Vec<Option<Box<str>>> = Vec::new();
        let mut columns = Columns::default();
        for _ in 0..count {
            let slot = r.u32()?;
            if !index.is_live(slot) || ids.id(slot).is_some() {
                return Err("item record names a deleted or repeated slot".into());
            }
            let id = r.text("item id")?;
            let a = r.text("ATTRS")?;
            super::check_id(id).map_err(String::from)?;
            if !ids.insert(slot, id) {
                return Err(format!(
                    "duplicate item id {:?}",
                    id.escape_debug().to_string()
                ));
            }
            if !a.is_empty() {
                let parsed = crate::features::attrs::Attrs::parse(a)
                    .map_err(|e| format!("item at slot {slot}: {e}"))?;
                columns.set(slot, Some(parsed.object()));
                super::put_attrs(&mut attrs, slot, Some(parsed.into_json()));
            }
        }
        let mut popularity = Popularity::default();
        popularity.grow(slots);
        let mut models = ModelSet::default();
        let mut restore_notes = Vec::new();
        let mut session_default = None;
        let mut sequence_default = None;
        let mut log = LogPos::ZERO;
        let mut experiments = Experiments::default();
        let mut recency = None;
        while r.remaining() > 0 {
            match r.u32()? {
                SESSION_TAG => {
                    let items = usize::try_from(r.u64()?).unwrap_or(usize::MAX);
                    let weight = f32::from_bits(r.u32()?);
                    let s = Session::new(items, weight).map_err(String::from)?;
                    session_default = Some(s).filter(Session::is_on);
                }
                SEQUENCE_TAG => {
                    let weight = f32::from_bits(r.u32()?);
                    crate::user::check_sequence_weight(weight).map_err(String::from)?;
                    sequence_default = Some(weight);
                }
                LOG_TAG => {
                    log.seq = r.u64()?;
                    log.hash.copy_from_slice(r.take(super::log::HASH_BYTES)?);
                }
                EXPERIMENTS_TAG => experiments = Experiments::decode(&mut r)?,
                RECENCY_TAG => recency = Some(super::recency::Recency::decode(&mut r, slots)?),
                POPULARITY_TAG => popularity = Popularity::decode(&mut r, slots)?,
                MODELS_TAG => {
                    models = ModelSet::decode(&mut r, index.params().dim, &mut restore_notes)?;
                }
                _ => return Err("unknown section after the items".into()),
            }
        }
        // Before the order was kept: the items in slot order.
        let recency = recency.unwrap_or_else(|| {
            let mut rec = super::recency::Recency::default();
            for s in 0..slots as u32 {
                if ids.id(s).is_some() {
                    rec.inserted(s);
                }
            }
            rec
        });
        for s in 0..slots as u32 {
            if (recency.added(s) != 0) != ids.id(s).is_some() {
                return Err(format!("slot {s}: item order and items disagree"));
            }
        }
        Ok(Catalog {
            index,
            recency,
            ids,
            attrs,
            columns,
            popularity,
            models,
            experiments,
            restore_notes,
            session_default,
            sequence_default,
            log,
        })
    }
}
