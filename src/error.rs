//! The error type of the core: a kind (what went wrong, in terms a caller can
//! act on) and a message that says what was wrong and what is expected.
//!
//! The Redis module maps each kind to a reply prefix in one place
//! (`redis-module/src/reply.rs`); nothing else looks at message text.

use std::fmt;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: an argument, a payload, a request that breaks a rule.
    Invalid,
    /// A key holds a value of another type.
    WrongType,
    /// The caller may not touch a key or run a command.
    NoPermission,
    /// Something that should not happen (a caught panic, a lost worker).
    Internal,
    /// Not now, but soon: a cluster copy that is catching up (clients
    /// retry, as for Redis Cluster's own TRYAGAIN).
    TryAgain,
}

/// A failure with its kind and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// Bad input (the usual `-ERR`).
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, message)
    }

    /// A key of the wrong type.
    pub fn wrong_type(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::WrongType, message)
    }

    /// A key or command the caller may not use.
    pub fn no_permission(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NoPermission, message)
    }

    /// Retry shortly (a catalog copy catching up).
    pub fn try_again(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::TryAgain, message)
    }

    /// An internal failure.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// The same error with `context: ` in front of its message.
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Plain messages are bad input: lower layers that only describe what was
/// wrong convert with `?`.
impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::invalid(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error::invalid(message)
    }
}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.message
    }
}
