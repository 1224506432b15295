//! What one set of PostgreSQL's changes asks of the cache (keys to delete, tables to flush,
//! rows written, DDL, a position and a heartbeat reached), gathered by the listener or the
//! replication stream and queued for the main thread (`apply`). Below the feed: the feed's
//! mailbox holds them.

use crate::model::key::CanonicalPk;
use crate::model::lsn::Lsn;
use crate::pg::schema::TableSchema;
use crate::query::precision::Written;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// A table named by more keys than this in one batch of notifications is flushed instead:
/// one scan of the keyspace (in slices) is then cheaper than deleting key by key, and the
/// batch's keys need not be held in memory.
pub const BULK_KEYS: usize = 5_000;

/// What a set of notifications asks for.
#[derive(Default)]
pub struct Changes {
    pub(super) deletes: Vec<(Arc<TableSchema>, CanonicalPk)>,
    /// Per table whose rows changed, the rows written (None: unknown), for row-precise
    /// query results; taken when first applied. A keyless table's new rows come without
    /// deletions (they have no key): they alone say its rows changed.
    pub(super) written: Vec<(Arc<TableSchema>, Option<Vec<Written>>)>,
    /// The key prefixes of the tables (and views) whose entries all go.
    pub(super) flushes: Vec<String>,
    /// DDL arrived (`ddl`): the statements QUERY learned may no longer read what they did.
    pub(super) statements_outdated: bool,
    /// DDL changed something every QUERY result may depend on (a function, a type, a
    /// view): they all go.
    pub(super) results_outdated: bool,
    /// Nothing cached before now can be trusted: drop everything.
    pub(super) resync: bool,
    /// Why nothing cached can be trusted, when `resync` says so and the source knows.
    pub(super) why: Option<String>,
    /// Keys named by notifications and covered by a flush instead (for the statistics).
    pub(super) keys_flushed: u64,
    /// The position in PostgreSQL's log these changes bring the cache to (replication
    /// source): applied once they are.
    pub(super) position: Option<Lsn>,
    /// When the transaction that made them committed, for the apply lag.
    pub(super) committed: Option<SystemTime>,
    /// When the oldest of them reached pgcache (a notification read, a replicated
    /// transaction's commit read from the stream): pgcache's own part of the invalidation
    /// lag runs from there to their deletions applied.
    pub(super) arrived: Option<Instant>,
    /// The freshness prober's heartbeat that came with them (notify mode): once they are
    /// applied, so is every notification sent before it.
    pub(super) heartbeat: Option<u64>,
}

impl Changes {
    pub fn delete(&mut self, schema: Arc<TableSchema>, pk: CanonicalPk) {
        self.deletes.push((schema, pk));
    }

    pub fn flush(&mut self, schema: Arc<TableSchema>) {
        self.flush_prefix(&schema.key_prefix);
    }

    /// Every entry whose key starts with `prefix` (a table's or a view's) goes.
    pub fn flush_prefix(&mut self, prefix: &str) {
        if !self.flushes.iter().any(|p| p == prefix) {
            self.flushes.push(prefix.to_string());
        }
    }

    /// DDL arrived: QUERY's statements are learned again; with `results`, every QUERY
    /// result goes too.
    pub fn ddl(&mut self, results: bool) {
        self.statements_outdated = true;
        self.results_outdated |= results;
    }

    /// Rows of `schema` changed, and these were written (None: the source does not say).
    /// For a keyless table, rows inserted and nothing else: its entries (rows READ by other
    /// columns) go, its per-table query results go, and its row-precise ones that the rows
    /// may enter.
    pub fn rows_written(&mut self, schema: Arc<TableSchema>, rows: Option<Vec<Written>>) {
        match self.written.iter_mut().find(|(s, _)| s.name == schema.name) {
            Some((_, known)) => match (known.as_mut(), rows) {
                (Some(known), Some(rows)) => known.extend(rows),
                (_, _) => *known = None,
            },
            None => self.written.push((schema, rows)),
        }
    }

    /// Drops every entry (without blocking the event loop); none is served meanwhile.
    pub fn everything() -> Changes {
        Changes {
            resync: true,
            ..Changes::default()
        }
    }

    /// `keys` more keys were named and are covered by a flush.
    pub fn count_flushed(&mut self, keys: u64) {
        self.keys_flushed += keys;
    }

    /// Nothing cached before now can be trusted either.
    pub fn drop_everything(&mut self) {
        self.resync = true;
    }

    /// Turns the deletions of every table named by more than `BULK_KEYS` keys into a flush
    /// of that table. Runs on the listener thread, so the keys are freed there.
    pub fn collapse_bulk(&mut self) {
        let mut counts: Vec<(Arc<TableSchema>, usize)> = Vec::new();
        for (schema, _) in &self.deletes {
            match counts.iter_mut().find(|(s, _)| Arc::ptr_eq(s, schema)) {
                Some((_, n)) => *n += 1,
                None => counts.push((schema.clone(), 1)),
            }
        }
        for (schema, n) in counts.into_iter().filter(|(_, n)| *n > BULK_KEYS) {
            self.deletes.retain(|(s, _)| !Arc::ptr_eq(s, &schema));
            self.keys_flushed += n as u64;
            self.flush(schema);
        }
    }

    /// These changes bring the cache to `lsn` in PostgreSQL's log.
    pub fn reach(&mut self, lsn: Lsn) {
        self.position = self.position.max(Some(lsn));
    }

    /// The prober's heartbeat `number` came with these changes (after them).
    pub fn heartbeat(&mut self, number: u64) {
        self.heartbeat = self.heartbeat.max(Some(number));
    }

    /// The transaction these changes come from committed at `at`.
    pub fn committed_at(&mut self, at: SystemTime) {
        self.committed = Some(at);
    }

    /// These changes reached pgcache at `at`.
    pub fn arrived_at(&mut self, at: Instant) {
        self.arrived = Some(at);
    }

    /// Adds the changes of a later transaction: applied together, `later`'s position and
    /// commit time stand for both.
    pub fn absorb(&mut self, later: Changes) {
        self.deletes.extend(later.deletes);
        for (schema, rows) in later.written {
            self.rows_written(schema, rows);
        }
        for prefix in later.flushes {
            self.flush_prefix(&prefix);
        }
        self.statements_outdated |= later.statements_outdated;
        self.results_outdated |= later.results_outdated;
        self.resync |= later.resync;
        self.why = self.why.take().or(later.why);
        self.keys_flushed += later.keys_flushed;
        self.position = self.position.max(later.position);
        self.committed = later.committed.or(self.committed);
        self.arrived = self.arrived.or(later.arrived);
        self.heartbeat = self.heartbeat.max(later.heartbeat);
    }

    /// How many keys these changes delete one by one, and new rows of keyless tables they
    /// weigh against query results one by one (rows that come with no deletion).
    pub fn deletions(&self) -> usize {
        let keyless_rows = self
            .written
            .iter()
            .filter(|(schema, _)| schema.primary_key.is_empty())
            .map(|(_, rows)| rows.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        self.deletes.len() + keyless_rows
    }

    /// Only a position, nothing to delete.
    pub(super) fn only_position(&self) -> bool {
        self.deletes.is_empty()
            && self.written.is_empty()
            && self.flushes.is_empty()
            && !self.resync
            && !self.statements_outdated
    }

    pub(super) fn is_empty(&self) -> bool {
        self.only_position() && self.position.is_none() && self.heartbeat.is_none()
    }
}

/// One set of changes that flushes every table the given ones name.
pub(super) fn into_flushes(waiting: impl Iterator<Item = Changes>) -> Changes {
    let mut merged = Changes::default();
    for changes in waiting {
        merged.resync |= changes.resync;
        merged.why = merged.why.or(changes.why);
        merged.position = merged.position.max(changes.position);
        merged.arrived = merged.arrived.or(changes.arrived);
        merged.heartbeat = merged.heartbeat.max(changes.heartbeat);
        merged.keys_flushed += changes.keys_flushed + changes.deletes.len() as u64;
        merged.statements_outdated |= changes.statements_outdated;
        merged.results_outdated |= changes.results_outdated;
        for prefix in changes.flushes {
            merged.flush_prefix(&prefix);
        }
        for (schema, _) in changes.deletes {
            merged.flush(schema);
        }
        // A keyless table's new rows come with no deletion.
        for (schema, _) in changes.written {
            merged.flush(schema);
        }
    }
    merged
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::pg::schema::Column;
    use std::time::Duration;

    pub(in crate::invalidation) fn schema(name: &str) -> Arc<TableSchema> {
        Arc::new(TableSchema::for_tests(
            name,
            vec![Column {
                name: "id".into(),
                cast_type: "integer".into(),
                kind: crate::model::key::KeyKind::Integer {
                    min: 0,
                    max: i64::MAX.into(),
                },
                row_valued: false,
            }],
            vec!["id".into()],
        ))
    }

    pub(in crate::invalidation) fn pk(n: usize) -> CanonicalPk {
        CanonicalPk {
            json: format!("{{\"id\":{n}}}").into(),
            columns: smallvec::smallvec![("id".into(), n.to_string().into())],
            unconfirmed: false,
        }
    }

    pub(in crate::invalidation) fn deletions(n: usize) -> Changes {
        let t = schema("t");
        let mut changes = Changes::default();
        for i in 0..n {
            changes.delete(t.clone(), pk(i));
        }
        changes
    }

    #[test]
    fn bulk_changes_of_a_table_become_a_flush_and_keep_their_count() {
        let (big, small) = (schema("big"), schema("small"));
        let mut changes = Changes::default();
        for n in 0..=BULK_KEYS {
            changes.delete(big.clone(), pk(n));
        }
        changes.delete(small.clone(), pk(1));
        changes.collapse_bulk();
        assert_eq!(changes.deletes.len(), 1);
        assert!(Arc::ptr_eq(&changes.deletes[0].0, &small));
        assert_eq!(changes.flushes.len(), 1);
        assert_eq!(changes.keys_flushed, BULK_KEYS as u64 + 1);
    }

    #[test]
    fn absorbed_changes_keep_every_deletion_flush_and_the_later_position() {
        let (t, u) = (schema("t"), schema("u"));
        let mut first = Changes::default();
        first.delete(t.clone(), pk(1));
        first.reach(Lsn(10));
        first.committed_at(SystemTime::UNIX_EPOCH);
        let mut later = Changes::default();
        later.delete(t.clone(), pk(2));
        later.flush(u.clone());
        later.count_flushed(3);
        later.reach(Lsn(20));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        later.committed_at(at);
        first.absorb(later);
        assert_eq!(first.deletions(), 2);
        assert_eq!(first.flushes.len(), 1);
        assert_eq!(first.keys_flushed, 3);
        assert_eq!(first.position, Some(Lsn(20)));
        assert_eq!(first.committed, Some(at));
        assert!(!first.resync);
        first.absorb(Changes::everything());
        assert!(first.resync);
        assert_eq!(first.position, Some(Lsn(20)));
    }

    #[test]
    fn changes_under_the_bulk_limit_stay_deletions() {
        let t = schema("t");
        let mut changes = Changes::default();
        for n in 0..BULK_KEYS {
            changes.delete(t.clone(), pk(n));
        }
        changes.collapse_bulk();
        assert_eq!(changes.deletes.len(), BULK_KEYS);
        assert!(changes.flushes.is_empty());
    }
}
