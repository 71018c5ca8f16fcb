//! A catalog's place in its own write history: how many writes it has
//! applied (`seq`) and a hash chained over every one of them. The key's
//! master, its replicas, its AOF and every node's copy of the catalog
//! apply the same writes in the same order, so equal positions mean equal
//! catalogs, and a copy that missed or reordered a write (a partition, a
//! failover that lost the master's last writes) sees a different hash at
//! the same `seq` and knows it must catch up (docs/cluster.md).

use std::fmt;

use sha2::{Digest, Sha256};

/// Bytes of the chained hash kept (SHA-256, truncated).
pub const HASH_BYTES: usize = 16;

/// A position in a catalog's write history.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct LogPos {
    /// Writes applied since the catalog was created.
    pub seq: u64,
    /// SHA-256 (first [`HASH_BYTES`]) of the previous hash, `seq` and the
    /// write's arguments; all zero before the first write.
    pub hash: [u8; HASH_BYTES],
}

impl LogPos {
    /// Before any write.
    pub const ZERO: LogPos = LogPos {
        seq: 0,
        hash: [0; HASH_BYTES],
    };

    /// The position after applying `write` (the command's name and
    /// arguments, exactly as replicated) at this one.
    pub fn next(&self, write: &[&[u8]]) -> LogPos {
        let seq = self.seq.wrapping_add(1);
        let mut h = Sha256::new();
        h.update(self.hash);
        h.update(seq.to_le_bytes());
        for part in write {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let digest = h.finalize();
        let mut hash = [0u8; HASH_BYTES];
        hash.copy_from_slice(&digest[..HASH_BYTES]);
        LogPos { seq, hash }
    }

    /// `seq:hex-hash`, the text form replies and the AOF carry.
    pub fn to_text(&self) -> String {
        let mut s = format!("{}:", self.seq);
        for b in self.hash {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses [`LogPos::to_text`]'s form.
    pub fn parse(text: &str) -> Option<LogPos> {
        let (seq, hex) = text.split_once(':')?;
        let seq = seq.parse().ok()?;
        if hex.len() != HASH_BYTES * 2 || !hex.is_ascii() {
            return None;
        }
        let mut hash = [0u8; HASH_BYTES];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(LogPos { seq, hash })
    }
}

impl fmt::Debug for LogPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_chain_and_round_trip_as_text() {
        let a = LogPos::ZERO.next(&[b"RECSYS.CREATE", b"shop", b"DIM", b"4"]);
        let b = a.next(&[b"RECSYS.ITEM.SET", b"shop", b"x"]);
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_ne!(a.hash, b.hash);
        // The same writes in the same order give the same position ...
        let again = LogPos::ZERO
            .next(&[b"RECSYS.CREATE", b"shop", b"DIM", b"4"])
            .next(&[b"RECSYS.ITEM.SET", b"shop", b"x"]);
        assert_eq!(b, again);
        // ... another write at the same seq a different one, and argument
        // boundaries count ("ab" "c" is not "a" "bc").
        assert_ne!(a.next(&[b"RECSYS.ITEM.SET", b"shop", b"y"]), b);
        assert_ne!(a.next(&[b"ab", b"c"]), a.next(&[b"a", b"bc"]));
        assert_eq!(LogPos::parse(&b.to_text()), Some(b));
        for bad in [
            "",
            "1",
            "x:00",
            "1:zz",
            "1:00",
            &format!("1:{}", "é".repeat(16)),
        ] {
            assert_eq!(LogPos::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_position_survives_encoding() {
        use crate::catalog::Catalog;
        use crate::index::IndexParams;
        let fresh = Catalog::new(IndexParams::new(4)).unwrap();
        assert_eq!(
            Catalog::decode(&fresh.encode()).unwrap().log_pos(),
            LogPos::ZERO
        );
        let mut c = Catalog::new(IndexParams::new(4)).unwrap();
        let p = c.advance_log(&[b"RECSYS.CREATE", b"k"]);
        assert_eq!(Catalog::decode(&c.encode()).unwrap().log_pos(), p);
        assert_eq!(c.duplicate().unwrap().log_pos(), p);
    }
}
