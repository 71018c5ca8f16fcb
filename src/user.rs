//! What the engine keeps about a user in their Redis hash, and the rules
//! for updating it (the Redis module reads and writes the hash; the rules
//! live here so that every command applies the same ones):
//! - `emb`: the user's vector as an FP32 blob (written by anyone, e.g. HSET);
//! - `recent`: JSON array of the most recent item ids, newest first
//!   (written by RECSYS.EVENT, bounded by the HISTORY setting);
//! - `seen`: every item the user interacted with, as a set of 64-bit
//!   hashes of the item ids ([`SeenSet`]: text, `b` and the base64 of 8
//!   bytes per item, so text clients can read the hash; RECSYS.EVENT adds
//!   to it, loaders may write it), read by EXCLUDE_SEEN;
//! - `events:<type>`: number of events of each type (RECSYS.EVENT);
//! - `shown`: what RECOMMEND ... NOREPEAT served in the user's last
//!   requests ([`Shown`]: JSON, newest request first), so a refresh does
//!   not show the same items again.
//!
//! Also the session blend's settings ([`Session`]), which a request or a
//! catalog default carries.

use crate::error::{Error, Result};

/// Hash field with the user's vector.
pub const EMB_FIELD: &str = "emb";
/// Hash field with the recent item ids (JSON array, newest first).
pub const RECENT_FIELD: &str = "recent";

/// Hash field with the set of seen items ([`SeenSet::to_text`]).
pub const SEEN_FIELD: &str = "seen";
/// First character of the text form of `seen`.
pub const SEEN_TEXT_MARK: u8 = b'b';
/// Hash field with the items recent NOREPEAT requests served ([`Shown`]).
pub const SHOWN_FIELD: &str = "shown";
/// Most requests NOREPEAT looks back over.
pub const MAX_NOREPEAT: usize = 50;
/// Most item ids `shown` keeps (older requests are dropped first): about
/// 20 KB of text with 20-byte ids.
pub const MAX_SHOWN_IDS: usize = 1000;

/// Most items a user's `seen` set holds (about 1.07 MB of text);
/// RECSYS.EVENT stops adding beyond it (the `recent` list still moves).
pub const MAX_SEEN_ITEMS: usize = 100_000;
/// Most recent items a SESSION blend may average.
pub const MAX_SESSION_ITEMS: usize = 1000;

/// `SESSION n weight`: the user vector becomes the normalized long-term
/// vector plus `weight` times the normalized mean of the user's `n` most
/// recent items (long-term taste and the current session together).
/// `items == 0` turns the blend off (a request overriding a catalog default).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub items: usize,
    pub weight: f32,
}

impl Session {
    /// Checks the ranges: items 0..=[`MAX_SESSION_ITEMS`], weight 0..=1000.
    pub fn new(items: usize, weight: f32) -> Result<Session> {
        if items > MAX_SESSION_ITEMS {
            return Err(Error::invalid(format!(
                "SESSION items must be between 0 and {MAX_SESSION_ITEMS}, got {items}"
            )));
        }
        if !(0.0..=1000.0).contains(&weight) {
            return Err(Error::invalid(format!(
                "SESSION weight must be between 0 and 1000, got {weight}"
            )));
        }
        Ok(Session { items, weight })
    }

    /// Whether the blend does anything.
    pub fn is_on(&self) -> bool {
        self.items > 0
    }
}

/// Largest SEQUENCE weight (as SESSION's).
pub const MAX_SEQUENCE_WEIGHT: f32 = 1000.0;

/// Checks a SEQUENCE weight: finite, 0 (off) to [`MAX_SEQUENCE_WEIGHT`].
pub fn check_sequence_weight(weight: f32) -> Result<f32> {
    if !(0.0..=MAX_SEQUENCE_WEIGHT).contains(&weight) {
        return Err(Error::invalid(format!(
            "SEQUENCE weight must be between 0 and {MAX_SEQUENCE_WEIGHT}, got {weight}"
        )));
    }
    Ok(weight)
}

/// The 64-bit hash of an item id stored in `seen`: FNV-1a 64 over the id's
/// UTF-8 bytes (offset basis 0xcbf29ce484222325, prime 0x100000001b3), so
/// any language can write the field. Two ids of one catalog collide with
/// probability about n^2 / 2^65 (1e-10 for 100,000 items).
pub fn seen_hash(id: &str) -> u64 {
    crate::codec::fnv1a64(id.as_bytes())
}

/// Every item a user interacted with: the sorted, distinct [`seen_hash`]es
/// of their ids. Stored as text: the letter `b`, then the base64 (standard
/// alphabet, padded) of the little-endian u64s, 8 bytes per item (about
/// 10.7 characters per item), so a client that decodes every field as
/// UTF-8 reads the hash. The older binary form (the bare 8-byte u64s, as
/// written before) is still read: its length is a multiple of 8, the text
/// form's never is (a letter and a multiple of 4). Any order and repeats
/// are accepted when read (then sorted).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SeenSet(Vec<u64>);

impl SeenSet {
    /// Parses the `seen` field (`None`: empty); `user` names the user in the
    /// error (called only then).
    pub fn parse(raw: Option<&[u8]>, user: impl FnOnce() -> String) -> Result<SeenSet> {
        use base64::Engine;
        let Some(bytes) = raw else {
            return Ok(SeenSet::default());
        };
        let decoded;
        let binary = match bytes.split_first() {
            Some((&SEEN_TEXT_MARK, text)) if !bytes.len().is_multiple_of(2) => {
                decoded = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()
                    .filter(|b| b.len().is_multiple_of(8));
                decoded.as_deref()
            }
            _ => Some(bytes).filter(|b| b.len().is_multiple_of(8)),
        };
        let Some(binary) = binary else {
            return Err(Error::invalid(format!(
                "field '{SEEN_FIELD}' of user '{}' must be 'b' and the base64 of 8-byte item hashes (or the older binary form, a multiple of 8 bytes), got {} bytes that are neither",
                user(),
                bytes.len()
            )));
        };
        let mut hashes: Vec<u64> = binary
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if !hashes.is_sorted_by(|a, b| a < b) {
            hashes.sort_unstable();
            hashes.dedup();
        }
        Ok(SeenSet(hashes))
    }

    /// Whether a stored `seen` value is in the older binary form (which
    /// [`SeenSet::parse`] reads and the migration rewrites as text).
    pub fn is_binary(raw: &[u8]) -> bool {
        raw.first() != Some(&SEEN_TEXT_MARK) || raw.len().is_multiple_of(2)
    }

    /// A set of these item ids.
    pub fn from_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> SeenSet {
        SeenSet::from_hashes(ids.into_iter().map(seen_hash))
    }

    /// A set of these hashes (any order; repeats count once).
    pub fn from_hashes(hashes: impl IntoIterator<Item = u64>) -> SeenSet {
        let mut hashes: Vec<u64> = hashes.into_iter().collect();
        hashes.sort_unstable();
        hashes.dedup();
        SeenSet(hashes)
    }

    /// Adds `id`; false when it was there or the set is full
    /// ([`MAX_SEEN_ITEMS`]).
    pub fn insert(&mut self, id: &str) -> bool {
        let h = seen_hash(id);
        match self.0.binary_search(&h) {
            Ok(_) => false,
            Err(_) if self.0.len() >= MAX_SEEN_ITEMS => false,
            Err(at) => {
                self.0.insert(at, h);
                true
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.contains_hash(seen_hash(id))
    }

    /// Whether the item whose [`seen_hash`] is `hash` is in the set.
    #[inline]
    pub fn contains_hash(&self, hash: u64) -> bool {
        self.0.binary_search(&hash).is_ok()
    }

    /// The hashes, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied()
    }

    /// This set with the items of `ids` added (unbounded: a request's
    /// exclusions, never stored).
    pub fn with_ids<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> SeenSet {
        let mut hashes = self.0.clone();
        hashes.extend(ids.into_iter().map(seen_hash));
        hashes.sort_unstable();
        hashes.dedup();
        SeenSet(hashes)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The older binary form: 8 little-endian bytes per item.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|h| h.to_le_bytes()).collect()
    }

    /// The field's value as stored: `b` and the base64 of [`SeenSet::to_bytes`].
    pub fn to_text(&self) -> String {
        use base64::Engine;
        let mut text = String::with_capacity(1 + self.0.len() * 32 / 3 + 4);
        text.push(SEEN_TEXT_MARK as char);
        base64::engine::general_purpose::STANDARD.encode_string(self.to_bytes(), &mut text);
        text
    }
}

/// Parses the `recent` field (`None`: the user has none yet); `user` names
/// the user in the error (called only then).
pub fn parse_recent(raw: Option<&[u8]>, user: impl FnOnce() -> String) -> Result<Vec<String>> {
    match raw {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|_| {
            Error::invalid(format!(
                "field '{RECENT_FIELD}' of user '{}' must be a JSON array of item ids",
                user()
            ))
        }),
    }
}

/// Records an interaction with `item`: it moves to the front of `recent`,
/// which keeps at most `history` ids.
pub fn push_recent(recent: &mut Vec<String>, item: &str, history: usize) {
    recent.retain(|id| id != item);
    recent.insert(0, item.to_string());
    recent.truncate(history);
}

/// The `recent` field's text.
pub fn format_recent(recent: &[String]) -> String {
    // Serializing a list of strings cannot fail.
    serde_json::to_string(recent).unwrap_or_default()
}

/// The `shown` field: per request (newest first) the ids it served.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shown(pub Vec<Vec<String>>);

impl Shown {
    /// Reads the field (absent: nothing shown yet).
    pub fn parse(raw: Option<&[u8]>, user: impl FnOnce() -> String) -> Result<Shown> {
        match raw {
            None => Ok(Shown::default()),
            Some(bytes) => serde_json::from_slice(bytes).map(Shown).map_err(|_| {
                Error::invalid(format!(
                    "field '{SHOWN_FIELD}' of user '{}' must be a JSON array of arrays of item ids (written by RECOMMEND ... NOREPEAT)",
                    user()
                ))
            }),
        }
    }

    /// The ids served by the last `requests` requests.
    pub fn last(&self, requests: usize) -> impl Iterator<Item = &String> {
        self.0.iter().take(requests).flatten()
    }

    /// Adds a request's ids in front, keeping at most `requests` requests
    /// and [`MAX_SHOWN_IDS`] ids (whole requests are dropped, oldest first;
    /// the newest is cut if it alone is longer).
    pub fn push(&mut self, served: Vec<String>, requests: usize) {
        self.0.insert(0, served);
        self.0.truncate(requests.max(1));
        let mut total = 0;
        let mut keep = 0;
        for (i, r) in self.0.iter_mut().enumerate() {
            if i > 0 && total + r.len() > MAX_SHOWN_IDS {
                break;
            }
            r.truncate(MAX_SHOWN_IDS - total);
            total += r.len();
            keep = i + 1;
        }
        self.0.truncate(keep);
    }

    pub fn to_text(&self) -> String {
        // Serializing lists of strings cannot fail.
        serde_json::to_string(&self.0).unwrap_or_default()
    }
}

/// Checks an event TYPE (a name: 1..64 letters, digits, '_' or '-').
pub fn check_event_type(t: &str) -> Result<()> {
    crate::names::check_name("TYPE", t)
}

/// The hash field counting events of type `kind`.
pub fn event_count_field(kind: &str) -> String {
    format!("events:{kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_keeps_the_last_requests_within_bounds() {
        let mut s = Shown::parse(None, || "u".into()).unwrap();
        let ids = |p: &str, n: usize| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
        s.push(ids("a", 2), 2);
        s.push(ids("b", 2), 2);
        s.push(ids("c", 1), 2);
        assert_eq!(s.0, vec![ids("c", 1), ids("b", 2)]);
        assert_eq!(s.last(1).collect::<Vec<_>>(), ["c0"]);
        assert_eq!(s.last(9).count(), 3);
        let back = Shown::parse(Some(s.to_text().as_bytes()), || "u".into()).unwrap();
        assert_eq!(back, s);
        // The id bound drops whole older requests, and cuts a huge newest one.
        s.push(ids("d", MAX_SHOWN_IDS - 1), 5);
        assert_eq!(s.0.len(), 2, "c fits, b does not");
        s.push(ids("e", MAX_SHOWN_IDS + 5), 5);
        assert_eq!((s.0.len(), s.0[0].len()), (1, MAX_SHOWN_IDS));
        assert!(Shown::parse(Some(b"[1]"), || "u".into()).is_err());
    }

    #[test]
    fn recent_moves_to_front_and_is_bounded() {
        let mut r = parse_recent(Some(br#"["a","b","c"]"#), || "u".into()).unwrap();
        push_recent(&mut r, "c", 3);
        assert_eq!(r, ["c", "a", "b"]);
        push_recent(&mut r, "d", 3);
        assert_eq!(r, ["d", "c", "a"]);
        assert_eq!(format_recent(&r), r#"["d","c","a"]"#);
        assert!(parse_recent(Some(b"{"), || "u".into()).is_err());
        assert!(parse_recent(None, || "u".into()).unwrap().is_empty());
    }

    /// The stored form is text (UTF-8, base64 after a `b`) and reads back;
    /// the older binary form still reads, and the two never look alike.
    #[test]
    fn seen_text_form_reads_back_and_tells_binary_apart() {
        for n in 0..40 {
            let ids: Vec<String> = (0..n).map(|i| format!("item:{i}")).collect();
            let s = SeenSet::from_ids(ids.iter().map(String::as_str));
            let text = s.to_text();
            assert!(text.starts_with('b') && text.len() % 2 == 1, "{text}");
            assert!(!SeenSet::is_binary(text.as_bytes()));
            assert_eq!(
                SeenSet::parse(Some(text.as_bytes()), || "u".into()).unwrap(),
                s
            );
            let binary = s.to_bytes();
            assert!(SeenSet::is_binary(&binary));
            assert_eq!(SeenSet::parse(Some(&binary), || "u".into()).unwrap(), s);
        }
        assert_eq!(SeenSet::default().to_text(), "b");
        for bad in ["b!!!", "bAAAA", "xyz", "bAAAAAAAAAAA=="] {
            let e = SeenSet::parse(Some(bad.as_bytes()), || "u".into()).unwrap_err();
            assert!(
                e.to_string().contains("base64 of 8-byte item hashes"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn seen_set_round_trips_and_accepts_any_order() {
        // FNV-1a 64 reference values.
        assert_eq!(seen_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(seen_hash("a"), 0xaf63_dc4c_8601_ec8c);
        let mut s = SeenSet::default();
        assert!(s.insert("b") && s.insert("a") && !s.insert("a"));
        assert!(s.contains("a") && s.contains("b") && !s.contains("c"));
        let back = SeenSet::parse(Some(&s.to_bytes()), || "u".into()).unwrap();
        assert_eq!(back, s);
        // Written out of order with a repeat by some other tool.
        let mut raw = seen_hash("b").to_le_bytes().to_vec();
        raw.extend(seen_hash("a").to_le_bytes());
        raw.extend(seen_hash("b").to_le_bytes());
        assert_eq!(SeenSet::parse(Some(&raw), || "u".into()).unwrap(), s);
        let e = SeenSet::parse(Some(&raw[..9]), || "u".into()).unwrap_err();
        assert!(e.to_string().contains("8-byte"), "{e}");
        assert!(Session::new(1001, 1.0).is_err() && Session::new(1, -1.0).is_err());
        assert!(!Session::new(0, 0.0).unwrap().is_on());
        assert!(check_event_type("view").is_ok());
        assert!(check_event_type("a b").is_err());
    }
}
