//! Query results: PGCACHE.QUERY caches the answer of a parameterised SELECT and drops it
//! when a table it reads changes.
//!
//! - `placeholders`: `?` and `$n` in a statement's text, outside literals and comments.
//! - `statement`: the grammar's verdict (pg_query): one plain SELECT, spelled one way.
//! - `catalog`: the catalog's (once per statement, on a worker): parameter types, the tables
//!   read, whether anything but their rows decides the result (refused then), and the facts
//!   row precision needs of the tables (`precision_facts`: collations, foreign keys).
//! - `reads`: what a statement reads and calls, through views, partitions, row-level
//!   security policies, argument defaults, domains and SQL function bodies.
//! - `node_tree`: PostgreSQL's stored query trees, read for what they use (pure).
//! - `clock`: the date/time inputs PostgreSQL reads as the clock (pure).
//! - The rules live in their own crate, `pgcache-rules` (`rules/`: neither Redis nor
//!   PostgreSQL, tested alone): `predicate` (a WHERE over one table weighed on a changed
//!   row's new values) and `shape` (whether a statement's results can be dropped row by row,
//!   from the grammar) are re-exported here, and its `precision` decides how precisely.
//! - `precision`: the rules' decision applied on a worker: the catalog asked what they need,
//!   their verdict, the columns it matches on watched; `Precision`, `RowMatch` and `SideMatch`
//!   over pgcache's tables.
//! - `watched`: the columns whose new values the change feed carries, by table.
//! - `columns`: a result's columns and their types.
//! - `membership`: the index of row-precise results (main thread): a change finds the results
//!   it can affect by the rules' lookups.
//! - `statements`: the bounded table from a statement's text to what was learned of it, so
//!   a hit never parses SQL.
//! - `key`: a result's cache key, from the statement, its canonical parameters and the
//!   generations of its tables.
//! - `generations`: one key per table whose value changes whenever the table does; results
//!   are stored under keys built from it, so a change leaves every older result unreachable.
//! - `dropped`: what a table's change does to query results: ends its generation, counts
//!   and announces the results it dropped.

pub mod catalog;
pub mod clock;
pub mod columns;
pub mod dropped;
pub mod generations;
mod hex;
pub mod key;
pub mod membership;
pub mod node_tree;
pub mod placeholders;
pub mod precision;
pub mod reads;
pub mod statement;
pub mod statements;
pub mod watched;

pub use pgcache_rules::{predicate, shape};

use crate::model::ident::QualifiedName;
use crate::model::source::SourceId;
use crate::pg::prepared::Parsing;
use crate::pg::schema::TableSchema;
use crate::pg::undo::Effects;
use crate::stats::{Counter, TableStats};
use catalog::ParamType;
use precision::Precision;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What is known of one statement: enough to build a result's key on the hit path and to
/// run it on a miss.
pub struct Statement {
    /// The source whose database it was learned from (its tables are that source's).
    pub source: SourceId,
    /// The statement as the parser spells it.
    pub canonical: String,
    /// The statement as PGCACHE.QUERIES, the slowlog and events show it to anyone allowed
    /// those: its constants replaced by `$n`, as `pg_stat_statements` shows statements (a
    /// constant may be a secret another user's statement holds).
    pub shown: String,
    /// What every result key starts with: `<source's key prefix>~q:{` and the first 128 bits of
    /// SHA-256 of `canonical`, which name the statement (`key`).
    pub key_head: String,
    /// The generation keys its results' keys are built from, one per table it reads (a
    /// row-precise statement's: its table's row generation, `generations`).
    pub generation_keys: Vec<String>,
    /// How precisely its results are dropped.
    pub precision: Precision,
    /// `query_precision` as it was when it was learned: a statement learned under another
    /// value is learned again.
    pub row_wanted: bool,
    pub params: Vec<ParamType>,
    /// Why its results are never cached, if they are not: it reads what DDL could change
    /// unseen (a view, a function of the database's, partitions, children or policies) and
    /// DDL is not followed. Its calls are answered by PostgreSQL.
    pub uncached: Option<String>,
    /// Its result's columns and their types (EXPLAIN's `columns`).
    pub columns: Vec<columns::ResultColumn>,
    /// The tables whose changes drop its results, ordered by key prefix.
    pub tables: Vec<Arc<TableSchema>>,
    /// Those it reads as data (`listed`), whose read permission a client needs.
    pub data_tables: Vec<Arc<TableSchema>>,
    /// The keys whose read permission a client needs to read its results: the generation
    /// keys of the tables it reads as data (`~pg_cache:users:*` covers them as it covers
    /// the rows), partitions, children and the tables policies read aside.
    pub readable_as: Arc<[String]>,
    /// The relations the `tables` allowlist must admit for it to be answered.
    pub listed: Vec<QualifiedName>,
    /// The allowlist version (`current::Values::tables_version`) that last admitted every one of
    /// them: a call under the same version checks nothing again.
    pub admitted_at: AtomicU64,
    /// What a miss runs (`catalog::run_sql`).
    pub run_sql: String,
    /// What misses queued together run (`catalog::batch_sql`), if PostgreSQL accepts it for
    /// this statement (not where a parameter sits in LIMIT, say).
    pub batch_sql: Option<String>,
    /// The statement's result alone, without its members (`run_sql` of no members), for a
    /// statement whose `run_sql` reads members: where PostgreSQL refuses the run with
    /// members but answers the statement (the members' own read of a subquery's rows met a
    /// value its cast refuses, which the statement's plan never evaluated), the statement
    /// is answered, and not cached, as PostgreSQL would answer it.
    pub plain_sql: Option<String>,
    /// What its runs must undo of their session: it calls functions of the database's own,
    /// which may change it (`pg::undo`).
    pub effects: Effects,
    /// Its figures (its calls' slowlog entries and latency, hits and misses, whether its
    /// misses pass through).
    pub stats: Arc<TableStats>,
    /// What PGCACHE.QUERIES shows beside them.
    pub figures: Figures,
}

/// A statement's figures besides its calls, hits, misses and miss latency.
#[derive(Default)]
pub struct Figures {
    /// Results written to the cache.
    pub fills: Counter,
    /// Results answered but not cached: over `query_max_rows` or `query_max_bytes`.
    pub too_big: Counter,
    /// Results dropped by changes to the tables they read.
    pub dropped: Counter,
    /// Bytes of the results its misses fetched.
    pub result_bytes: Counter,
    /// Results filled since a table it reads last changed: what the next change drops.
    pub live: AtomicU64,
    /// Bytes of the last result its misses fetched.
    pub last_result_bytes: AtomicU64,
    /// A row of one of its results was too long for the event loop to read (past
    /// `pg::wire::conn`'s cap): its misses are read by the workers from then on, whatever
    /// its later results' sizes (a statement's results may be huge for one parameter only).
    pub too_large_for_loop: AtomicBool,
    /// Microseconds its runs took in PostgreSQL, a moving average (a round trip shared by
    /// several statements is shared out evenly among them); 0 before the first.
    pub run_us: AtomicU64,
}

/// A statement whose last result was larger than this goes to the workers, not the event
/// loop (one read callback's budget, `onloop`).
const LOOP_MOST_BYTES: u64 = 256 << 10;

/// A statement whose runs take longer than this on average is sent alone: in a pipeline it
/// would hold up the statements sent behind it.
const PIPELINE_MOST_US: u64 = 2_000;

/// Every statement pipelines, whatever its runs took (`PGCACHE.DEBUG PIPELINE ALWAYS`, for
/// tests: on a loaded machine a one-row lookup's run is timed at milliseconds, and its
/// statement would be sent alone).
static PIPELINE_ALWAYS: AtomicBool = AtomicBool::new(false);

/// `PGCACHE.DEBUG PIPELINE`: with `always`, every statement's runs may share a round trip;
/// without, as their measured time decides.
pub fn pipeline_always(always: bool) {
    PIPELINE_ALWAYS.store(always, Ordering::Relaxed);
}

impl Figures {
    /// A result was written to the cache; `whole_table`: any change to its tables drops it
    /// (row-precise results are counted by the index that drops them, `membership`).
    pub fn filled(&self, whole_table: bool) {
        self.fills.inc();
        if whole_table {
            self.live.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes how long a run of it took on a worker.
    pub fn ran_for(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let before = self.run_us.load(Ordering::Relaxed);
        let average = if before == 0 {
            us.max(1)
        } else {
            (before * 7 + us) / 8
        };
        self.run_us.store(average, Ordering::Relaxed);
    }

    /// Why its misses go to the workers instead of out from the event loop (`cache::onloop`),
    /// or None: a large result is read, decoded and copied on a worker, off the event loop,
    /// and a slow run would hold up the misses pipelined behind it on a loop connection.
    /// PGCACHE.QUERIES shows the reason.
    pub fn kept_off_the_loop(&self) -> Option<&'static str> {
        if self.too_large_for_loop.load(Ordering::Relaxed) {
            Some("a row of one of its results was longer than the event loop reads (64 MiB)")
        } else if self.last_result_bytes.load(Ordering::Relaxed) > LOOP_MOST_BYTES {
            Some("its last result was over 256 KiB")
        } else if !self.pipelines() {
            Some("its runs take over 2 ms on average")
        } else {
            None
        }
    }

    /// Whether its runs may share a round trip with other statements' (`worker::pipeline`).
    pub fn pipelines(&self) -> bool {
        self.run_us.load(Ordering::Relaxed) <= PIPELINE_MOST_US
            || PIPELINE_ALWAYS.load(Ordering::Relaxed)
    }

    /// Whether results were filled since a table it reads last changed.
    pub fn has_live(&self) -> bool {
        self.live.load(Ordering::Relaxed) > 0
    }

    /// A table it reads changed: its live results are dropped. How many.
    pub fn drop_live(&self) -> u64 {
        let live = self.live.swap(0, Ordering::Relaxed);
        self.dropped.add(live);
        live
    }

    pub fn reset(&self) {
        for counter in [
            &self.fills,
            &self.too_big,
            &self.dropped,
            &self.result_bytes,
        ] {
            counter.reset();
        }
    }
}

impl Statement {
    /// Its parameters' types (oids), as it was learned: what its runs are prepared with.
    pub fn param_oids(&self) -> Vec<u32> {
        self.params.iter().map(|p| p.oid).collect()
    }

    /// How connections parse its runs: afresh each time for a statement answered by
    /// PostgreSQL because DDL it depends on is not followed (`uncached`), whose meaning a
    /// new table or function may change without pgcache hearing of it.
    pub fn parsing(&self) -> Parsing {
        match self.uncached {
            Some(_) => Parsing::EachRun,
            None => Parsing::Kept,
        }
    }

    /// Whether its source's `tables` allowlist admits every relation it reads, or which it
    /// does not.
    pub fn admitted(&self) -> crate::error::Result<()> {
        let values = crate::config::current::of(self.source);
        let version = values.tables_version();
        if self.admitted_at.load(Ordering::Acquire) == version {
            return Ok(());
        }
        if let Some(name) = self.listed.iter().find(|name| !values.table_allowed(name)) {
            return Err(crate::error::Error::invalid(format!(
                "the statement reads {}, which is not in the pgcache.tables allowlist",
                name.display()
            )));
        }
        self.admitted_at.store(version, Ordering::Release);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: SourceId,
        key_prefix: &str,
        canonical: String,
        params: Vec<ParamType>,
        columns: Vec<columns::ResultColumn>,
        tables: Vec<Arc<TableSchema>>,
        listed: Vec<QualifiedName>,
        precision: Precision,
        row_wanted: bool,
        uncached: Option<String>,
        run_sql: String,
        batch_sql: Option<String>,
        plain_sql: Option<String>,
        effects: Effects,
    ) -> Statement {
        let mut key_head = format!("{key_prefix}{}{{", key::RESULT_TAG);
        hex::push(
            &mut key_head,
            &openssl::sha::sha256(canonical.as_bytes())[..16],
        );
        let generation_keys = match &precision {
            Precision::Row(m) => m
                .tables()
                .iter()
                .map(|t| generations::row_key_name(&t.key_prefix))
                .collect(),
            Precision::Table(_) => tables
                .iter()
                .map(|t| generations::key_name(&t.key_prefix))
                .collect(),
        };
        let stats = Arc::new(TableStats::named(crate::requests::tracked::QUERY_TABLE));
        // The tables it reads as data: not the partitions and children of those (a user
        // who may read a parent reads it whole) nor the tables their policies read.
        let data_tables: Vec<Arc<TableSchema>> = tables
            .iter()
            .filter(|t| listed.contains(&t.name))
            .cloned()
            .collect();
        let readable_as = data_tables
            .iter()
            .map(|t| generations::key_name(&t.key_prefix))
            .collect();
        let shown = pg_query::normalize(&canonical).unwrap_or_else(|_| canonical.clone());
        Statement {
            source,
            shown,
            canonical,
            key_head,
            generation_keys,
            precision,
            row_wanted,
            uncached,
            params,
            columns,
            tables,
            data_tables,
            readable_as,
            listed,
            admitted_at: AtomicU64::new(0),
            run_sql,
            batch_sql,
            plain_sql,
            effects,
            stats,
            figures: Figures::default(),
        }
    }
}
