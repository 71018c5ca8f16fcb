//! The `arguments` of COMMAND DOCS (which redis-cli turns into hints and
//! client generators into typed methods), written in each command's table
//! entry as a one-line grammar and turned here into Redis's argument tree.
//!
//! Grammar: `name:type` is an argument (`key`, `string`, `integer`,
//! `double`, `pattern`, `unix-time`); an upper-case word before an argument
//! or group is its token, alone it is a pure token; `[...]` is optional;
//! `(a | b)` is one of, `(a b)` a block; `name=(...)` names a group; `...`
//! after an element repeats it.

use std::ffi::CString;
use std::os::raw::c_int;
use std::ptr;

use redis_module::raw;

/// One node of the argument tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: String,
    pub kind: Kind,
    pub token: Option<String>,
    pub optional: bool,
    pub multiple: bool,
    /// Each repetition repeats the token (`FILTER a FILTER b`), rather
    /// than the token once before all values (`VALUES 1 2 3`).
    pub multiple_token: bool,
    pub subargs: Vec<Arg>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Key,
    String,
    Integer,
    Double,
    Pattern,
    UnixTime,
    PureToken,
    OneOf,
    Block,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "key" => Kind::Key,
            "string" => Kind::String,
            "integer" => Kind::Integer,
            "double" => Kind::Double,
            "pattern" => Kind::Pattern,
            "unix-time" => Kind::UnixTime,
            _ => return None,
        })
    }

    fn raw(self) -> raw::RedisModuleCommandArgType {
        match self {
            Kind::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            Kind::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            Kind::Double => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_DOUBLE,
            Kind::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
            Kind::Pattern => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PATTERN,
            Kind::UnixTime => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_UNIX_TIME,
            Kind::PureToken => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
            Kind::OneOf => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
            Kind::Block => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
        }
    }
}

fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            if let Some(w) = word.strip_suffix("...") {
                if !w.is_empty() {
                    out.push(w.to_string());
                }
                out.push("...".into());
            } else {
                out.push(std::mem::take(word));
            }
            word.clear();
        }
    };
    for ch in s.chars() {
        match ch {
            '[' | ']' | '(' | ')' | '|' => {
                flush(&mut word, &mut out);
                out.push(ch.to_string());
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

fn is_token_word(w: &str) -> bool {
    !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

struct Parser {
    toks: Vec<String>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// Elements until one of `stop` (not consumed) or the end.
    fn sequence(&mut self, stop: &[&str]) -> Result<Vec<Arg>, String> {
        let mut out = Vec::new();
        while let Some(t) = self.peek() {
            if stop.contains(&t) {
                break;
            }
            out.push(self.element()?);
        }
        Ok(out)
    }

    fn element(&mut self) -> Result<Arg, String> {
        let t = self.next().ok_or("unexpected end")?;
        let mut arg = if is_token_word(&t) {
            let starts_value =
                matches!(self.peek(), Some(n) if n == "(" || n.contains(':') || n.ends_with('='));
            if starts_value {
                // `VALUES v:double...`: the value repeats, the token does not.
                let mut inner = self.element()?;
                inner.token = Some(t);
                inner
            } else {
                pure(&t)
            }
        } else {
            self.at -= 1;
            self.element_without_repeat()?
        };
        if self.peek() == Some("...") {
            self.at += 1;
            arg.multiple = true;
            arg.multiple_token = arg.token.is_some();
        }
        Ok(arg)
    }

    fn element_without_repeat(&mut self) -> Result<Arg, String> {
        let t = self.next().ok_or("unexpected end")?;
        let (name, t) = match t.strip_suffix('=') {
            Some(n) => (
                Some(n.to_string()),
                self.next().ok_or("group expected after =")?,
            ),
            None => (None, t),
        };
        match t.as_str() {
            "[" => {
                let seq = self.sequence(&["]"])?;
                self.expect("]")?;
                let mut arg = group(name, seq, Kind::Block);
                arg.optional = true;
                Ok(arg)
            }
            "(" => {
                let mut alternatives = vec![self.sequence(&["|", ")"])?];
                while self.peek() == Some("|") {
                    self.at += 1;
                    alternatives.push(self.sequence(&["|", ")"])?);
                }
                self.expect(")")?;
                if alternatives.len() == 1 {
                    let seq = alternatives.pop().unwrap_or_default();
                    return Ok(block(name, seq));
                }
                let subargs = alternatives
                    .into_iter()
                    .map(|seq| group(None, seq, Kind::Block))
                    .collect();
                Ok(Arg {
                    name: name.unwrap_or_else(|| "choice".into()),
                    kind: Kind::OneOf,
                    token: None,
                    optional: false,
                    multiple: false,
                    multiple_token: false,
                    subargs,
                })
            }
            word => {
                let (n, ty) = word
                    .split_once(':')
                    .ok_or_else(|| format!("'{word}' is not name:type"))?;
                let kind = Kind::parse(ty).ok_or_else(|| format!("unknown type '{ty}'"))?;
                Ok(Arg {
                    name: n.to_string(),
                    kind,
                    token: None,
                    optional: false,
                    multiple: false,
                    multiple_token: false,
                    subargs: vec![],
                })
            }
        }
    }

    fn expect(&mut self, t: &str) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(format!("expected '{t}', got {other:?}")),
        }
    }
}

fn pure(token: &str) -> Arg {
    Arg {
        name: token.to_ascii_lowercase(),
        kind: Kind::PureToken,
        token: Some(token.to_string()),
        optional: false,
        multiple: false,
        multiple_token: false,
        subargs: vec![],
    }
}

/// A sequence as one node: itself when it has one element, else a block.
fn group(name: Option<String>, mut seq: Vec<Arg>, kind: Kind) -> Arg {
    if seq.len() == 1 && name.is_none() {
        return seq.pop().unwrap_or_else(|| pure("EMPTY"));
    }
    let name = name.unwrap_or_else(|| {
        seq.first()
            .and_then(|a| a.token.clone())
            .map_or_else(|| "block".into(), |t| t.to_ascii_lowercase())
    });
    Arg {
        name,
        kind,
        token: None,
        optional: false,
        multiple: false,
        multiple_token: false,
        subargs: seq,
    }
}

fn block(name: Option<String>, seq: Vec<Arg>) -> Arg {
    group(name, seq, Kind::Block)
}

/// Parses a command's grammar (see the module docs).
pub fn parse(grammar: &str) -> Result<Vec<Arg>, String> {
    let mut p = Parser {
        toks: tokenize(grammar),
        at: 0,
    };
    let seq = p.sequence(&[])?;
    if p.at < p.toks.len() {
        return Err(format!("unexpected '{}'", p.toks[p.at]));
    }
    Ok(seq)
}

/// The C argument tree of one command, alive as long as this value (Redis
/// copies it in RM_SetCommandInfo).
pub struct RawArgs {
    strings: Vec<CString>,
    arrays: Vec<Vec<raw::RedisModuleCommandArg>>,
}

impl RawArgs {
    /// Builds the tree; key arguments get key spec indexes in order.
    pub fn new(args: &[Arg]) -> Result<RawArgs, String> {
        let mut r = RawArgs {
            strings: vec![],
            arrays: vec![],
        };
        let mut next_key = 0;
        r.array(args, &mut next_key)?;
        Ok(r)
    }

    /// The top-level array (NULL-terminated) to put in the command info.
    pub fn as_ptr(&mut self) -> *mut raw::RedisModuleCommandArg {
        // The top level is built last.
        self.arrays
            .last_mut()
            .map_or(ptr::null_mut(), |a| a.as_mut_ptr())
    }

    fn cstr(&mut self, s: &str) -> Result<*const std::os::raw::c_char, String> {
        let c = CString::new(s).map_err(|e| e.to_string())?;
        let p = c.as_ptr();
        self.strings.push(c); // the heap buffer does not move
        Ok(p)
    }

    fn array(
        &mut self,
        args: &[Arg],
        next_key: &mut c_int,
    ) -> Result<*mut raw::RedisModuleCommandArg, String> {
        let mut out = Vec::with_capacity(args.len() + 1);
        for a in args {
            let subargs = if a.subargs.is_empty() {
                ptr::null_mut()
            } else {
                self.array(&a.subargs, next_key)?
            };
            let key_spec_index = if a.kind == Kind::Key {
                *next_key += 1;
                *next_key - 1
            } else {
                -1
            };
            let mut flags = 0;
            if a.optional {
                flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
            }
            if a.multiple {
                flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
            }
            if a.multiple_token {
                flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE_TOKEN;
            }
            out.push(raw::RedisModuleCommandArg {
                name: self.cstr(&a.name)?,
                type_: a.kind.raw(),
                key_spec_index,
                token: match &a.token {
                    Some(t) => self.cstr(t)?,
                    None => ptr::null(),
                },
                summary: ptr::null(),
                since: ptr::null(),
                flags: flags as c_int,
                deprecated_since: ptr::null(),
                subargs,
                display_text: ptr::null(),
            });
        }
        // SAFETY: an all-zero RedisModuleCommandArg (null pointers, zero
        // numbers) is the terminator Redis looks for.
        out.push(unsafe { std::mem::zeroed() });
        self.arrays.push(out);
        Ok(self
            .arrays
            .last_mut()
            .map_or(ptr::null_mut(), |a| a.as_mut_ptr()))
    }
}
