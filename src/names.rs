//! Names users give things (plugins, models, event types): 1..64 ASCII
//! letters, digits, '_' or '-', so they are safe in keys, logs and replies.

use crate::error::{Error, Result};

/// Longest name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a name; `what` says what it names in the error ("plugin name").
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} must be 1..{MAX_NAME_LEN} letters, digits, '_' or '-', got '{name}'"
        )))
    }
}

/// The value named `text` (any case) in a list of spellings; the error
/// says what was named (`what`, e.g. "STRATEGY") and lists the choices.
pub fn one_of<T: Copy>(what: &str, text: &str, choices: &[(&str, T)]) -> Result<T> {
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, value)| value)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            let expected = match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => names.join(""),
            };
            Error::invalid(format!("unknown {what} '{text}', expected {expected}"))
        })
}
