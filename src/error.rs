//! The one error type commands reply with: a sentence that says what was wrong and what to
//! do. It is sent as `ERR pgcache: <message>`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String, pub ErrorKind);

/// What failed, for the `errors_*` figures (counted when the error is replied, so a failure
/// retried and answered once counts once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorKind {
    #[default]
    Other,
    /// PostgreSQL refused a query or could not be reached.
    Postgres,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into(), ErrorKind::Other)
    }

    pub fn postgres(message: impl Into<String>) -> Self {
        Error(message.into(), ErrorKind::Postgres)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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

/// Runs `f` for a callback Redis made into pgcache (a timer, a notification, INFO): a panic
/// must not unwind into Redis, which would abort the server. The panic hook has logged it.
/// Its duration feeds `longest_callback_us`, the stall probe of STATS.
pub fn guard<R: Default>(what: &'static str, f: impl FnOnce() -> R) -> R {
    let started = std::time::Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        redis_module::logging::log_warning(format!(
            "pgcache: internal error in {what}; it was abandoned, Redis is unaffected; please report it"
        ));
        R::default()
    });
    crate::stall::callback_took(what, started.elapsed());
    result
}
