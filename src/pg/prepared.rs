//! The statements one connection prepared, by their text, each kept for a while.
//!
//! PostgreSQL keeps a prepared statement's generic plan, chosen against its first
//! executions, until the statistics of its tables change. A table that started small and
//! grew (every transaction inserts into it) keeps the sequential scan chosen then until
//! autovacuum next analyzes it: in `make bench`'s OLTP section such a read cost 0.35 ms in
//! PostgreSQL instead of 0.012 ms with its index, and read through pgcache at 0.38x the
//! rate of reading PostgreSQL directly instead of 0.60x. A statement prepared more than
//! `PLANS_KEPT_FOR` ago is prepared again, so PostgreSQL plans it afresh for its tables as
//! they are now: one more round trip per statement and connection that often.
//!
//! A statement prepared before DDL pgcache applied is prepared again too (`catalog_changed`),
//! on the workers' connections and the event loop's. PostgreSQL re-parses a prepared
//! statement when an object it uses changes or the search_path's value does, but not when a
//! new table comes to shadow a name it reads (created in a schema already on the path, the
//! role's `"$user"` schema say: PREPARE's reference page names this case). Such a
//! statement would go on reading the shadowed table, the statement table learned anew
//! would not.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether a connection keeps a statement prepared between its runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsing {
    /// Prepared once per connection and run again (until DDL is applied: `catalog`).
    Kept,
    /// Parsed for each run. For a statement answered by PostgreSQL because DDL pgcache does
    /// not follow could change what it reads: only a fresh parse sees a new table or
    /// function that shadows one it names, as the application's own unprepared call would.
    EachRun,
}

/// Counts the DDL applied (`catalog_changed`): a statement prepared under an earlier count
/// is not used again.
static CATALOG: AtomicU64 = AtomicU64::new(0);

/// DDL was applied: every connection prepares each statement again before running it.
pub fn catalog_changed() {
    CATALOG.fetch_add(1, Ordering::SeqCst);
}

/// The DDL applied so far, as `catalog_changed` counted it: what a connection notes with
/// the statements it prepares.
pub fn catalog() -> u64 {
    CATALOG.load(Ordering::SeqCst)
}

/// How long a connection runs a statement it prepared before preparing it again.
pub const PLANS_KEPT_FOR: Duration = Duration::from_secs(10);

/// Statements kept per connection; past this the cache starts over (views queried by many
/// different column sets could otherwise grow it without bound).
const MOST_KEPT: usize = 256;

pub struct Prepared<T> {
    /// Each statement, when it was prepared, and under which `catalog()`.
    by_text: HashMap<String, (T, Instant, u64)>,
}

impl<T: Clone> Prepared<T> {
    pub fn new() -> Prepared<T> {
        Prepared {
            by_text: HashMap::new(),
        }
    }

    /// The statement prepared for `sql` less than `PLANS_KEPT_FOR` before `now`, under the
    /// `catalog` (no DDL applied since).
    pub fn fresh(&self, sql: &str, now: Instant, catalog: u64) -> Option<T> {
        self.by_text
            .get(sql)
            .filter(|(_, prepared, under)| {
                *under == catalog && now.saturating_duration_since(*prepared) < PLANS_KEPT_FOR
            })
            .map(|(statement, _, _)| statement.clone())
    }

    /// Keeps `statement`, prepared for `sql` at `now` under `catalog`.
    pub fn keep(&mut self, sql: &str, statement: T, now: Instant, catalog: u64) {
        if self.by_text.len() >= MOST_KEPT && !self.by_text.contains_key(sql) {
            self.by_text.clear();
        }
        self.by_text
            .insert(sql.to_string(), (statement, now, catalog));
    }

    /// Forgets the statement prepared for `sql` (its tables may have changed under it).
    pub fn forget(&mut self, sql: &str) {
        self.by_text.remove(sql);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_reused_until_it_is_old_enough_to_be_planned_again() {
        let start = Instant::now();
        let mut prepared = Prepared::new();
        assert_eq!(prepared.fresh("SELECT 1", start, 0), None);
        prepared.keep("SELECT 1", 1, start, 0);
        assert_eq!(prepared.fresh("SELECT 1", start, 0), Some(1));
        let later = start + PLANS_KEPT_FOR - Duration::from_millis(1);
        assert_eq!(prepared.fresh("SELECT 1", later, 0), Some(1));
        assert_eq!(prepared.fresh("SELECT 1", start + PLANS_KEPT_FOR, 0), None);
        prepared.keep("SELECT 1", 2, start + PLANS_KEPT_FOR, 0);
        assert_eq!(
            prepared.fresh("SELECT 1", start + PLANS_KEPT_FOR, 0),
            Some(2)
        );
        prepared.forget("SELECT 1");
        assert_eq!(prepared.fresh("SELECT 1", start + PLANS_KEPT_FOR, 0), None);
    }

    #[test]
    fn past_the_most_kept_the_cache_starts_over() {
        let now = Instant::now();
        let mut prepared = Prepared::new();
        for n in 0..MOST_KEPT {
            prepared.keep(&format!("SELECT {n}"), n, now, 0);
        }
        prepared.keep("SELECT 0", 0, now, 0);
        assert_eq!(
            prepared.fresh("SELECT 1", now, 0),
            Some(1),
            "same text: no reset"
        );
        prepared.keep("SELECT -1", 0, now, 0);
        assert_eq!(prepared.fresh("SELECT 1", now, 0), None);
        assert_eq!(prepared.fresh("SELECT -1", now, 0), Some(0));
    }

    #[test]
    fn a_statement_prepared_before_ddl_is_prepared_again() {
        let now = Instant::now();
        let mut prepared = Prepared::new();
        prepared.keep("SELECT 1", 1, now, 4);
        assert_eq!(prepared.fresh("SELECT 1", now, 4), Some(1));
        assert_eq!(prepared.fresh("SELECT 1", now, 5), None);
        prepared.keep("SELECT 1", 2, now, 5);
        assert_eq!(prepared.fresh("SELECT 1", now, 5), Some(2));
    }
}
