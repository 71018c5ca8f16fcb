//! Redis Cluster's key slots: CRC16 (XMODEM) of the key's hash tag, mod
//! 16384, as `CLUSTER KEYSLOT` computes it. The module needs it to know
//! whether a key it was not given by the command sits in the command's
//! slot (Redis 7.2+ looks a key up in the slot of the command it runs in),
//! the test harness to route commands.

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The slot of `key`: the hash of the text between the first `{` and the
/// next `}` when that is not empty, else of the whole key.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(0) | None => key,
            Some(len) => &key[open + 1..open + 1 + len],
        },
        None => key,
    };
    crc16(tagged) % SLOTS
}

/// Whether `key` has a hash tag: text between its first `{` and the next
/// `}` that is not empty.
pub fn has_hash_tag(key: &[u8]) -> bool {
    key.iter().position(|&b| b == b'{').is_some_and(|open| {
        key[open + 1..]
            .iter()
            .position(|&b| b == b'}')
            .is_some_and(|len| len > 0)
    })
}

/// A key name that starts with `prefix` and sits in `key`'s slot:
/// `prefix{key}`, or `prefix + key` when `key` has a hash tag. A key with
/// a `}` but no hash tag (`a}b`, `a{}`) has no such name: the result is
/// then in another slot, which callers check with [`key_slot`].
pub fn in_slot_of(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + key.len() + 2);
    out.extend_from_slice(prefix);
    if has_hash_tag(key) {
        out.extend_from_slice(key);
    } else {
        out.push(b'{');
        out.extend_from_slice(key);
        out.push(b'}');
    }
    out
}

/// CRC16-CCITT (XMODEM).
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), 3443);
        assert_eq!(key_slot(b"{user1000}.followers"), 3443);
        assert_eq!(key_slot(b"a{}b"), crc16(b"a{}b") % SLOTS);
        assert_eq!(key_slot(b"a{b"), crc16(b"a{b") % SLOTS);
    }

    #[test]
    fn names_in_a_keys_slot() {
        for (key, name) in [
            (&b"user:1"[..], &b"r:{user:1}"[..]),
            (b"user:{42}", b"r:user:{42}"),
            (b"a{b", b"r:{a{b}"),
        ] {
            assert_eq!(in_slot_of(b"r:", key), name);
            assert_eq!(key_slot(name), key_slot(key), "{name:?}");
        }
        // A `}` without a hash tag: no such name exists.
        for odd in [&b"user:}x"[..], b"user:{}"] {
            assert!(!has_hash_tag(odd));
            assert_ne!(key_slot(&in_slot_of(b"r:", odd)), key_slot(odd), "{odd:?}");
        }
    }
}
