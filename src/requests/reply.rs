//! Replies as values, so workers can build them off the main thread and the main thread
//! sends them. `Sent` marks a reply already written (the zero-copy hit path) and `Blocked`
//! a client handed to a worker that will answer later.

use crate::error::Error;
use crate::model::source::SourceId;
use crate::redis;
use crate::stats::{self, TableStats};
use redis_module::Context;
use std::ffi::CString;
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok,
    Int(i64),
    Double(f64),
    /// A map in RESP3, a flat array of name, value pairs in RESP2.
    Map(Vec<(String, Reply)>),
    Nil,
    Bulk(String),
    Array(Vec<Reply>),
    Error(Error),
    WrongArity,
    Sent,
    Blocked,
    /// A reply carrying what its call worked on, for the call's accounting
    /// (`requests::finished`); sent as the inner reply.
    /// One box for both: a cold READ's reply is built and dropped once per call.
    Described(Box<(Reply, Detail)>),
}

/// What a call worked on: its table's figures, the key as the slowlog shows it, and how
/// many rows PostgreSQL returned for it.
#[derive(Clone)]
pub struct Detail {
    pub table: Arc<TableStats>,
    pub key: String,
    pub rows: u64,
}

impl fmt::Debug for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({} rows)", self.table.name, self.key, self.rows)
    }
}

impl PartialEq for Detail {
    fn eq(&self, other: &Self) -> bool {
        self.table.name == other.table.name && self.key == other.key && self.rows == other.rows
    }
}

impl Reply {
    /// Whether this is an error of pgcache's (not a cluster redirection).
    pub fn is_failure(&self) -> bool {
        matches!(self.inner(), Reply::Error(e) if !e.is_redis_reply())
    }

    /// This reply, saying which table and key the call worked on and how many rows
    /// PostgreSQL returned for it.
    pub fn described(self, table: &Arc<TableStats>, key: impl Into<String>, rows: u64) -> Reply {
        let detail = Detail {
            table: table.clone(),
            key: key.into(),
            rows,
        };
        Reply::Described(Box::new((self, detail)))
    }

    /// The reply itself, under any description.
    pub fn inner(&self) -> &Reply {
        match self {
            Reply::Described(described) => described.0.inner(),
            reply => reply,
        }
    }

    /// What the call worked on, if it said (the outermost word wins).
    pub fn detail(&self) -> Option<&Detail> {
        match self {
            Reply::Described(described) => Some(&described.1),
            _ => None,
        }
    }
}

impl From<Error> for Reply {
    fn from(e: Error) -> Self {
        Reply::Error(e)
    }
}

impl From<Option<String>> for Reply {
    fn from(v: Option<String>) -> Self {
        v.map_or(Reply::Nil, Reply::Bulk)
    }
}

/// The wire text of an error: RESP errors are one line, so line breaks become spaces.
pub fn error_line(e: &Error) -> CString {
    let line = if e.is_redis_reply() {
        e.message().to_string()
    } else {
        format!("ERR pgcache: {}", e.message())
    };
    let line: String = line
        .chars()
        .map(|c| {
            if c == '\r' || c == '\n' || c == '\0' {
                ' '
            } else {
                c
            }
        })
        .collect();
    CString::new(line).expect("NULs were replaced")
}

/// Writes `reply` to the client of `ctx`. Main thread only.
pub fn send(ctx: &Context, reply: &Reply) {
    match reply {
        Reply::Ok => redis::reply::ok(ctx),
        Reply::Nil => redis::reply::null(ctx),
        Reply::Bulk(s) => redis::reply::bulk(ctx, s.as_bytes()),
        Reply::Array(items) => {
            redis::reply::array(ctx, items.len());
            for item in items {
                send(ctx, item);
            }
        }
        Reply::Int(n) => redis::reply::int(ctx, *n),
        Reply::Double(d) => redis::reply::double(ctx, *d),
        Reply::Map(entries) => {
            redis::reply::map(ctx, entries.len());
            for (name, value) in entries {
                redis::reply::bulk(ctx, name.as_bytes());
                send(ctx, value);
            }
        }
        Reply::Error(e) => {
            count_error(e);
            redis::reply::error(ctx, &error_line(e));
        }
        Reply::WrongArity => redis::reply::wrong_arity(ctx),
        Reply::Sent | Reply::Blocked => {}
        Reply::Described(described) => send(ctx, &described.0),
    }
}

/// Counts an error reply, and its kind.
fn count_error(e: &Error) {
    if e.is_redis_reply() {
        return;
    }
    let stats = stats::of(SourceId::DEFAULT);
    stats.errors.inc();
    if e.is_postgres() {
        stats.errors_postgres.inc();
    } else if e.is_timeout() {
        stats.errors_timeout.inc();
    } else if e.is_queue_full() {
        stats.errors_queue_full.inc();
    } else if e.is_internal() {
        stats.errors_internal.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_with_the_prefix() {
        let line = error_line(&Error::invalid("bad\r\nthing"));
        assert_eq!(line.to_str().unwrap(), "ERR pgcache: bad  thing");
    }
}
