//! The one error type pgcache's layers return and commands reply with: a kind, a sentence
//! that says what was wrong and what to do, and its source. It is sent as
//! `ERR pgcache: <message>`.

use std::fmt;
use std::sync::Arc;

/// What went wrong, in the manner of `tokio_postgres::Error`: a kind (decided where the failure
/// happens, and counted by kind when it is replied), a sentence for the client, and the
/// error it came from, if any (kept for `source()`, never shown: a driver's message may
/// hold connection details).
#[derive(Debug, Clone)]
pub struct Error(Box<Inner>);

/// Boxed, so that an error (and every `Reply`, which may hold one) stays one pointer wide:
/// replies are moved on the hit path.
#[derive(Debug, Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// What failed, for the `errors_*` figures (counted when the error is replied, so a failure
/// retried and answered once counts once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorKind {
    /// Bad input, a refused setting, anything the caller can correct.
    #[default]
    Other,
    /// PostgreSQL refused a query or could not be reached.
    Postgres,
    /// The request waited longer than `request_timeout_ms`.
    Timeout,
    /// The work queue was full.
    QueueFull,
    /// A panic in pgcache's code, contained.
    Internal,
    /// Not an error of pgcache's: a cluster redirection (`MOVED`, `ASK`, ...), sent as its
    /// message alone, as Redis sends it, and not counted.
    Redirect,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error::of(ErrorKind::Other, message)
    }

    pub fn postgres(message: impl Into<String>) -> Self {
        Error::of(ErrorKind::Postgres, message)
    }

    pub fn of(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            source: None,
        }))
    }

    /// The same error, caused by `source`.
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.source = Some(Arc::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The sentence the client gets (after `ERR pgcache: `).
    pub fn message(&self) -> &str {
        &self.0.message
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

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::new(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error::new(s)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Runs `f` for a callback Redis made into pgcache (a timer, a notification, a blocked
/// client's reply, INFO): a panic must not unwind into Redis, which would abort the server.
/// The panic hook has logged it. Its duration feeds `longest_callback_us`, the stall probe
/// of STATS.
pub fn guard<R: Default>(what: &'static str, f: impl FnOnce() -> R) -> R {
    guard_since(std::time::Instant::now(), what, f)
}

/// `guard` for a callback that read the clock as it started (and uses the reading itself).
pub fn guard_since<R: Default>(
    started: std::time::Instant,
    what: &'static str,
    f: impl FnOnce() -> R,
) -> R {
    let result = contain(what, f);
    crate::stall::callback_took(what, started.elapsed());
    result
}

/// Like `guard`, for a part of a callback or command that must not take the rest down with
/// it (an event delivery after the reply went out); not timed, since what encloses it is.
pub fn contain<R: Default>(what: &'static str, f: impl FnOnce() -> R) -> R {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        redis_module::logging::log_warning(format!(
            "pgcache: internal error in {what}; it was abandoned, Redis is unaffected; please report it"
        ));
        R::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_shows_its_message_and_keeps_its_source() {
        let cause = std::io::Error::other("connection to host=db password=secret refused");
        let e = Error::postgres("PostgreSQL unavailable").caused_by(cause);
        assert_eq!(e.kind(), ErrorKind::Postgres);
        assert_eq!(
            e.to_string(),
            "PostgreSQL unavailable",
            "the source is never shown"
        );
        let source = std::error::Error::source(&e).expect("kept");
        assert!(source.to_string().contains("refused"));
        assert_eq!(e, Error::postgres("PostgreSQL unavailable"));
        assert_ne!(e, Error::new("PostgreSQL unavailable"), "kinds differ");
    }
}
