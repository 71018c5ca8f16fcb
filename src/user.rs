//! What the engine keeps about a user in their Redis hash, and the rules
//! for updating it (the Redis module reads and writes the hash; the rules
//! live here so that every command applies the same ones):
//! - `emb`: the user's vector as an FP32 blob (written by anyone, e.g. HSET);
//! - `recent`: JSON array of the most recent item ids, newest first
//!   (written by RECSYS.EVENT, bounded by the HISTORY setting);
//! - `events:<type>`: number of events of each type (RECSYS.EVENT).

use crate::error::{Error, Result};

/// Hash field with the user's vector.
pub const EMB_FIELD: &str = "emb";
/// Hash field with the recent item ids (JSON array, newest first).
pub const RECENT_FIELD: &str = "recent";

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
    fn recent_moves_to_front_and_is_bounded() {
        let mut r = parse_recent(Some(br#"["a","b","c"]"#), || "u".into()).unwrap();
        push_recent(&mut r, "c", 3);
        assert_eq!(r, ["c", "a", "b"]);
        push_recent(&mut r, "d", 3);
        assert_eq!(r, ["d", "c", "a"]);
        assert_eq!(format_recent(&r), r#"["d","c","a"]"#);
        assert!(parse_recent(Some(b"{"), || "u".into()).is_err());
        assert!(parse_recent(None, || "u".into()).unwrap().is_empty());
        assert!(check_event_type("view").is_ok());
        assert!(check_event_type("a b").is_err());
    }
}
