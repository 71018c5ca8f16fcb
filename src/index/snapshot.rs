//! Binary snapshot of an [`Hnsw`]: the graph itself, not only the vectors, so a
//! restart loads at memory speed instead of rebuilding.
//!
//! Layout (little-endian): magic `RCSYSIDX`, format version (u32), header
//! length (u32) and a bincode header, then raw arrays: levels, tombstones,
//! free slots, layer-0 links, upper links, vector rows. Decoding checks every
//! count and every link against the header, so a corrupt payload is an error,
//! never a later out-of-bounds access.

use serde::{Deserialize, Serialize};

use super::hnsw::{Hnsw, NONE};
use super::params::{IndexParams, Metric, Quant};
use super::store::NO_LINK;
use crate::codec::{Reader, Writer};
use crate::rng::SplitMix;

const MAGIC: &[u8; 8] = b"RCSYSIDX";
/// Bumped whenever the layout changes; older versions stay decodable.
/// 2: Q8 blocks of IP and COSINE indexes no longer hold a squared norm
/// (version 1 had one word more per block; decoding drops it).
/// 3: layer-0 blocks hold no link count; unused link slots are `NO_LINK`
/// (decoding older versions rewrites their blocks).
pub const FORMAT_VERSION: u32 = 3;

#[derive(Serialize, Deserialize)]
struct Header {
    params: IndexParams,
    slots: u64,
    free: u64,
    entry: u32,
    max_level: u32,
    rng: u64,
    live: u64,
}

/// Serializes the whole index into `out`.
pub fn encode(h: &Hnsw, out: &mut Vec<u8>) {
    let header = Header {
        params: h.params,
        slots: h.slots() as u64,
        free: h.free.len() as u64,
        entry: h.entry,
        max_level: h.max_level as u32,
        rng: h.rng.state(),
        live: h.live as u64,
    };
    let header =
        bincode::serde::encode_to_vec(&header, bincode::config::standard()).unwrap_or_default();
    let mut w = Writer(out);
    w.bytes(MAGIC);
    w.u32(FORMAT_VERSION);
    w.blob(&header);
    w.bytes(&h.levels);
    let deleted: Vec<u8> = h.deleted.iter().map(|&d| d as u8).collect();
    w.bytes(&deleted);
    w.bytes(&h.free);
    for words in h.store.words() {
        w.bytes(words);
    }
    for (slot, &level) in h.levels.iter().enumerate() {
        if level > 0 {
            if let Some(u) = h.upper.get(&(slot as u32)) {
                w.bytes(u);
            }
        }
    }
}

/// Rebuilds an index from [`encode`]'s bytes, checking everything.
pub fn decode(r: &mut Reader) -> Result<Hnsw, String> {
    if r.take(8)? != MAGIC {
        return Err("not a recsys index payload (bad magic)".into());
    }
    let version = r.u32()?;
    if version == 0 || version > FORMAT_VERSION {
        return Err(format!(
            "index format version {version} is not supported (this build reads 1..={FORMAT_VERSION})"
        ));
    }
    let (header, _): (Header, usize) =
        bincode::serde::decode_from_slice(r.blob()?, bincode::config::standard())
            .map_err(|e| format!("bad index header: {e}"))?;
    header.params.validate()?;
    let p = header.params;
    let slots = usize::try_from(header.slots).map_err(|_| "slot count overflows")?;
    let nfree = usize::try_from(header.free).map_err(|_| "free count overflows")?;
    // Each slot needs at least its level byte, tombstone byte and links: reject
    // absurd counts before allocating.
    let m0 = 2 * p.m;
    let min_bytes_per_slot = 2 + 4 * m0 + p.dim;
    if slots.saturating_mul(min_bytes_per_slot) > r.remaining() || nfree > slots {
        return Err("slot counts do not match the payload size".into());
    }
    if slots > u32::MAX as usize - 1 {
        return Err("too many slots".into());
    }
    let levels: Vec<u8> = r.array(slots)?;
    if levels.iter().any(|&l| l > 32) {
        return Err("node level out of range".into());
    }
    let deleted: Vec<u8> = r.array(slots)?;
    let deleted: Vec<bool> = deleted.into_iter().map(|d| d != 0).collect();
    let free: Vec<u32> = r.array(nfree)?;
    if free
        .iter()
        .any(|&f| f as usize >= slots || !deleted[f as usize])
    {
        return Err("free list names a live or missing slot".into());
    }
    let mut h = Hnsw::new(p);
    let stride = h.store.stride;
    // Before version 3 a layer-0 block began with its link count, and Q8
    // blocks of IP and COSINE indexes held a squared norm in version 1.
    let (count_word, extra) = match (version, p.quant, p.metric) {
        (1, Quant::Q8, m) if m != Metric::L2 => (1, 1),
        (1 | 2, _, _) => (1, 0),
        _ => (0, 0),
    };
    let stored_stride = stride + count_word + extra;
    let stored: Vec<u32> = r.array(slots.saturating_mul(stored_stride))?;
    let nodes: Vec<u32> = if count_word == 0 {
        stored
    } else {
        let mut nodes = Vec::with_capacity(slots * stride);
        for block in stored.chunks_exact(stored_stride) {
            let n = block[0] as usize;
            if n > m0 {
                return Err("link list out of range".into());
            }
            nodes.extend_from_slice(&block[1..1 + n]);
            nodes.extend(std::iter::repeat_n(NO_LINK, m0 - n));
            nodes.extend_from_slice(&block[1 + m0..1 + stride]);
        }
        nodes
    };
    let check_block = |block: &[u32], cap: usize| -> Result<(), String> {
        let n = block[0] as usize;
        if n > cap || block[1..1 + n].iter().any(|&id| id as usize >= slots) {
            return Err("link list out of range".into());
        }
        Ok(())
    };
    for block in nodes.chunks_exact(stride) {
        // Packed links, each naming a slot, then NO_LINK to the end.
        let links = &block[..m0];
        let n = links.iter().take_while(|&&id| id != NO_LINK).count();
        if links[..n].iter().any(|&id| id as usize >= slots)
            || links[n..].iter().any(|&id| id != NO_LINK)
        {
            return Err("link list out of range".into());
        }
    }
    let mut upper = hashbrown::HashMap::new();
    for (slot, &l) in levels.iter().enumerate() {
        if l == 0 {
            continue;
        }
        let u: Vec<u32> = r.array(l as usize * (1 + p.m))?;
        for (layer, block) in (1..).zip(u.chunks_exact(1 + p.m)) {
            check_block(block, p.m)?;
            // A link on layer L must name a node that lives on layer L.
            if block[1..1 + block[0] as usize]
                .iter()
                .any(|&id| (levels[id as usize] as usize) < layer)
            {
                return Err(format!(
                    "a layer-{layer} link names a node below that layer"
                ));
            }
        }
        upper.insert(slot as u32, u.into_boxed_slice());
    }
    let live = deleted.iter().filter(|&&d| !d).count();
    if live as u64 != header.live {
        return Err("live count does not match tombstones".into());
    }
    let (entry, max_level) = (header.entry, header.max_level as usize);
    if slots == 0 {
        if entry != NONE {
            return Err("entry point in an empty index".into());
        }
    } else if entry as usize >= slots || levels[entry as usize] as usize != max_level {
        return Err("entry point is not a top-level node".into());
    }
    // Tombstones may sit above it: a deleted entry point hands the top over
    // to the highest live node, and its slot waits in the free list.
    if levels
        .iter()
        .zip(&deleted)
        .any(|(&l, &d)| !d && l as usize > max_level)
    {
        return Err("a live node is above the top level".into());
    }
    let mut in_free = vec![false; slots];
    for &f in &free {
        if f == entry || std::mem::replace(&mut in_free[f as usize], true) {
            return Err("free list repeats a slot or names the entry point".into());
        }
    }
    h.store.set_words(slots, &nodes);
    h.upper = upper;
    h.levels = levels;
    h.deleted = deleted;
    h.free = free;
    h.entry = entry;
    h.max_level = max_level;
    h.rng = SplitMix::new(header.rng);
    h.live = live;
    Ok(h)
}
