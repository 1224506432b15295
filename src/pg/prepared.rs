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

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a connection runs a statement it prepared before preparing it again.
pub const PLANS_KEPT_FOR: Duration = Duration::from_secs(10);

/// Statements kept per connection; past this the cache starts over (views queried by many
/// different column sets could otherwise grow it without bound).
const MOST_KEPT: usize = 256;

pub struct Prepared<T> {
    by_text: HashMap<String, (T, Instant)>,
}

impl<T: Clone> Prepared<T> {
    pub fn new() -> Prepared<T> {
        Prepared {
            by_text: HashMap::new(),
        }
    }

    /// The statement prepared for `sql` less than `PLANS_KEPT_FOR` before `now`.
    pub fn fresh(&self, sql: &str, now: Instant) -> Option<T> {
        self.by_text
            .get(sql)
            .filter(|(_, prepared)| now.saturating_duration_since(*prepared) < PLANS_KEPT_FOR)
            .map(|(statement, _)| statement.clone())
    }

    /// Keeps `statement`, prepared for `sql` at `now`.
    pub fn keep(&mut self, sql: &str, statement: T, now: Instant) {
        if self.by_text.len() >= MOST_KEPT && !self.by_text.contains_key(sql) {
            self.by_text.clear();
        }
        self.by_text.insert(sql.to_string(), (statement, now));
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
        assert_eq!(prepared.fresh("SELECT 1", start), None);
        prepared.keep("SELECT 1", 1, start);
        assert_eq!(prepared.fresh("SELECT 1", start), Some(1));
        let later = start + PLANS_KEPT_FOR - Duration::from_millis(1);
        assert_eq!(prepared.fresh("SELECT 1", later), Some(1));
        assert_eq!(prepared.fresh("SELECT 1", start + PLANS_KEPT_FOR), None);
        prepared.keep("SELECT 1", 2, start + PLANS_KEPT_FOR);
        assert_eq!(prepared.fresh("SELECT 1", start + PLANS_KEPT_FOR), Some(2));
        prepared.forget("SELECT 1");
        assert_eq!(prepared.fresh("SELECT 1", start + PLANS_KEPT_FOR), None);
    }

    #[test]
    fn past_the_most_kept_the_cache_starts_over() {
        let now = Instant::now();
        let mut prepared = Prepared::new();
        for n in 0..MOST_KEPT {
            prepared.keep(&format!("SELECT {n}"), n, now);
        }
        prepared.keep("SELECT 0", 0, now);
        assert_eq!(
            prepared.fresh("SELECT 1", now),
            Some(1),
            "same text: no reset"
        );
        prepared.keep("SELECT -1", 0, now);
        assert_eq!(prepared.fresh("SELECT 1", now), None);
        assert_eq!(prepared.fresh("SELECT -1", now), Some(0));
    }
}
