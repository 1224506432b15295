//! Query results: PGCACHE.QUERY caches the answer of a parameterised SELECT and drops it
//! when a table it reads changes.
//!
//! - `placeholders`: `?` and `$n` in a statement's text, outside literals and comments.
//! - `statement`: the grammar's verdict (pg_query): one plain SELECT, spelled one way.
//! - `catalog`: the catalog's (once per statement, on a worker): parameter types, the tables
//!   read through views, IMMUTABLE functions only.
//! - `statements`: the bounded table from a statement's text to what was learned of it, so
//!   a hit never parses SQL.
//! - `key`: a result's cache key, from the statement, its canonical parameters and the
//!   generations of its tables.
//! - `generations`: one key per table whose value changes whenever the table does; results
//!   are stored under keys built from it, so a change leaves every older result unreachable.

pub mod catalog;
pub mod generations;
pub mod key;
pub mod placeholders;
pub mod statement;
pub mod statements;

use crate::pg::schema::TableSchema;
use crate::stats::{Counter, Histogram, TableStats};
use catalog::ParamType;
use std::sync::Arc;

/// What is known of one statement: enough to build a result's key on the hit path and to
/// run it on a miss.
pub struct Statement {
    /// The statement as the parser spells it.
    pub canonical: String,
    /// SHA-256 of `canonical`: the part of every result key that names the statement.
    pub digest: [u8; 32],
    pub params: Vec<ParamType>,
    /// The tables whose changes drop its results, ordered by key prefix.
    pub tables: Vec<Arc<TableSchema>>,
    /// What a miss runs (`catalog::run_sql`).
    pub run_sql: String,
    /// Its figures (its calls' slowlog entries and latency, hits and misses).
    pub stats: Arc<TableStats>,
}

impl Statement {
    pub fn new(
        canonical: String,
        params: Vec<ParamType>,
        tables: Vec<Arc<TableSchema>>,
        run_sql: String,
    ) -> Statement {
        let digest = openssl::sha::sha256(canonical.as_bytes());
        let stats = Arc::new(TableStats {
            name: crate::requests::tracked::QUERY_TABLE.into(),
            calls: Counter::new(),
            hits: Counter::new(),
            misses: Counter::new(),
            latency: Histogram::new(),
        });
        Statement {
            canonical,
            digest,
            params,
            tables,
            run_sql,
            stats,
        }
    }
}
