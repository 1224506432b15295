//! The one error type pgcache's layers return and commands reply with, in the manner of
//! `tokio_postgres::Error`: a private kind decided where the failure happens (one
//! constructor per kind, predicates to ask), a sentence that says what was wrong and what to
//! do, and the error it came from. It is sent as `ERR pgcache: <message>`, except an answer
//! worded as Redis words its own (`MOVED`, `ASK`, `CROSSSLOT`, `NOPERM`), sent as it is.
//! Panics are contained in `panic`.

pub mod panic;

use std::fmt;
use std::sync::Arc;

/// What went wrong: its kind, the sentence for the client, and its source, if any (kept
/// for `source()`, never shown: a driver's message may hold connection details).
#[derive(Debug, Clone)]
pub struct Error(Box<Inner>);

/// Boxed, so that an error (and every `Reply`, which may hold one) stays one pointer wide:
/// replies are moved on the hit path.
#[derive(Debug, Clone)]
struct Inner {
    kind: Kind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// What failed, for the `errors_*` figures (counted when the error is replied, so a failure
/// retried and answered once counts once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Bad input, a refused setting: anything the caller can correct.
    Invalid,
    /// PostgreSQL refused a query or could not be reached.
    Postgres,
    /// The request waited longer than `request_timeout_ms`.
    Timeout,
    /// The work queue was full.
    QueueFull,
    /// A panic in pgcache's code, contained.
    Internal,
    /// Not pgcache's error but Redis's kind of answer (a cluster redirection, an ACL
    /// refusal), sent as its message alone and not counted.
    RedisReply,
}

impl Error {
    fn of(kind: Kind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            source: None,
        }))
    }

    /// Bad input or a refused setting: what the caller can correct.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::of(Kind::Invalid, message)
    }

    /// A setting's value refused: `setting <name>: <why>`.
    pub fn setting(name: &str, why: impl fmt::Display) -> Self {
        Error::invalid(format!("setting {name}: {why}"))
    }

    /// PostgreSQL refused a query or could not be reached.
    pub fn postgres(message: impl Into<String>) -> Self {
        Error::of(Kind::Postgres, message)
    }

    /// The request waited longer than it may.
    pub fn timeout(message: impl Into<String>) -> Self {
        Error::of(Kind::Timeout, message)
    }

    /// The work queue was full.
    pub fn queue_full(message: impl Into<String>) -> Self {
        Error::of(Kind::QueueFull, message)
    }

    /// A panic in pgcache's code, contained.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::of(Kind::Internal, message)
    }

    /// An answer worded as Redis words its own (`MOVED 3999 127.0.0.1:7002`, `NOPERM ...`):
    /// sent as it is, not counted as pgcache's error.
    pub fn redis_reply(line: impl Into<String>) -> Self {
        Error::of(Kind::RedisReply, line)
    }

    /// The same error, caused by `source`.
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.source = Some(Arc::new(source));
        self
    }

    /// The sentence the client gets (after `ERR pgcache: `, unless `is_redis_reply`).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn is_postgres(&self) -> bool {
        self.0.kind == Kind::Postgres
    }

    pub fn is_timeout(&self) -> bool {
        self.0.kind == Kind::Timeout
    }

    pub fn is_queue_full(&self) -> bool {
        self.0.kind == Kind::QueueFull
    }

    pub fn is_internal(&self) -> bool {
        self.0.kind == Kind::Internal
    }

    /// Whether it is Redis's kind of answer, sent as it is and not counted.
    pub fn is_redis_reply(&self) -> bool {
        self.0.kind == Kind::RedisReply
    }
}

/// Two errors are the same when they say the same thing (their sources are not compared).
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind == other.0.kind && self.0.message == other.0.message
    }
}

impl Eq for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The rules' errors (`pgcache_rules`), kind for kind.
impl From<pgcache_rules::Error> for Error {
    fn from(e: pgcache_rules::Error) -> Error {
        match e.kind() {
            pgcache_rules::error::Kind::Invalid => Error::invalid(e.message()),
            pgcache_rules::error::Kind::Internal => Error::internal(e.message()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_shows_its_message_and_keeps_its_source() {
        let cause = std::io::Error::other("connection to host=db password=secret refused");
        let e = Error::postgres("PostgreSQL unavailable").caused_by(cause);
        assert!(e.is_postgres());
        assert_eq!(
            e.to_string(),
            "PostgreSQL unavailable",
            "the source is never shown"
        );
        let source = std::error::Error::source(&e).expect("kept");
        assert!(source.to_string().contains("refused"));
        assert_eq!(e, Error::postgres("PostgreSQL unavailable"));
        assert_ne!(e, Error::invalid("PostgreSQL unavailable"), "kinds differ");
    }

    #[test]
    fn each_constructor_makes_its_kind() {
        assert!(Error::timeout("t").is_timeout());
        assert!(Error::queue_full("q").is_queue_full());
        assert!(Error::internal("i").is_internal());
        assert!(Error::redis_reply("MOVED 1 a:1").is_redis_reply());
        let setting = Error::setting("workers", "expected a number");
        assert_eq!(setting.message(), "setting workers: expected a number");
        assert!(!setting.is_postgres() && !setting.is_redis_reply());
    }
}
