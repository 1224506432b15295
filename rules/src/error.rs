//! The rules' one error: a kind and a sentence. pgcache maps it to its own error at the
//! boundary (`From` in pgcache's `error`), kind for kind.

use std::fmt;

/// What went wrong, and the sentence that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
    message: String,
}

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad input: a value the caller can correct.
    Invalid,
    /// The rules failed at what should not fail (the parser refusing its own spelling).
    Internal,
}

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error {
            kind: Kind::Invalid,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Error {
        Error {
            kind: Kind::Internal,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
