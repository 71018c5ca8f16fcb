//! A cursor over command arguments with typed, range-checked getters whose
//! errors say what was wrong and what is expected.

use recsys_core::Error;
use redis_module::RedisString;

/// What a command handler returns: a reply, or an error whose kind picks
/// the reply prefix (reply.rs).
pub type CmdResult<T> = Result<T, Error>;

pub struct Args<'a> {
    args: &'a [RedisString],
    pos: usize,
}

impl<'a> Args<'a> {
    /// Skips the command name.
    pub fn new(args: &'a [RedisString]) -> Self {
        Args { args, pos: 1 }
    }

    /// A cursor over words that have no command name before them.
    pub fn words(args: &'a [RedisString]) -> Self {
        Args { args, pos: 0 }
    }

    pub fn has_more(&self) -> bool {
        self.pos < self.args.len()
    }

    pub fn remaining(&self) -> usize {
        self.args.len().saturating_sub(self.pos)
    }

    pub fn next_string(&mut self, what: &str) -> CmdResult<&'a RedisString> {
        let a = self
            .args
            .get(self.pos)
            .ok_or_else(|| Error::invalid(format!("missing {what}")))?;
        self.pos += 1;
        Ok(a)
    }

    pub fn next_bytes(&mut self, what: &str) -> CmdResult<&'a [u8]> {
        Ok(self.next_string(what)?.as_slice())
    }

    pub fn next_str(&mut self, what: &str) -> CmdResult<&'a str> {
        std::str::from_utf8(self.next_bytes(what)?)
            .map_err(|_| Error::invalid(format!("{what} must be UTF-8 text")))
    }

    /// The next argument upper-cased (option keywords).
    pub fn next_keyword(&mut self) -> CmdResult<String> {
        Ok(self.next_str("option")?.to_ascii_uppercase())
    }

    pub fn next_int(&mut self, what: &str, min: i64, max: i64) -> CmdResult<i64> {
        let s = self.next_str(what)?;
        let v: i64 = s
            .parse()
            .map_err(|_| format!("{what} must be an integer, got '{s}'"))?;
        if v < min || v > max {
            return Err(Error::invalid(format!(
                "{what} must be between {min} and {max}, got {v}"
            )));
        }
        Ok(v)
    }

    pub fn next_float(&mut self, what: &str, min: f64, max: f64) -> CmdResult<f64> {
        let s = self.next_str(what)?;
        let v: f64 = s
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("{what} must be a finite number, got '{s}'"))?;
        if v < min || v > max {
            return Err(Error::invalid(format!(
                "{what} must be between {min} and {max}, got {v}"
            )));
        }
        Ok(v)
    }

    /// The next argument upper-cased, without consuming it.
    pub fn peek_keyword(&self) -> Option<String> {
        let a = self.args.get(self.pos)?;
        std::str::from_utf8(a.as_slice())
            .ok()
            .map(|s| s.to_ascii_uppercase())
    }

    pub fn next_usize(&mut self, what: &str, min: usize, max: usize) -> CmdResult<usize> {
        Ok(self.next_int(what, min as i64, max as i64)? as usize)
    }

    /// `SESSION items weight` (after the keyword): items 0..=1000 (0: no
    /// blend), weight 0..=1000.
    pub fn next_session(&mut self) -> CmdResult<recsys_core::pipeline::request::Session> {
        use recsys_core::pipeline::request::{Session, MAX_SESSION_ITEMS};
        let items = self.next_usize("SESSION items", 0, MAX_SESSION_ITEMS)?;
        let weight = self.next_float("SESSION weight", 0.0, 1e3)? as f32;
        Session::new(items, weight)
    }

    /// `SEQUENCE weight`: 0 (off) to [`recsys_core::user::MAX_SEQUENCE_WEIGHT`].
    pub fn next_sequence_weight(&mut self) -> CmdResult<f32> {
        let max = recsys_core::user::MAX_SEQUENCE_WEIGHT;
        Ok(self.next_float("SEQUENCE weight", 0.0, max as f64)? as f32)
    }
}
