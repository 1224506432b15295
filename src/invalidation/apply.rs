//! Applying PostgreSQL's invalidations on the Redis main thread, and deciding when cached
//! entries can be trusted at all.
//!
//! The listener thread hands each set of changes over through a mailbox and asks for the
//! main thread (`main_thread`), whose timer applies them with a regular module context, so the
//! deletions are replicated like any cache write. Deletions are applied a slice of time at a
//! time (a bulk UPDATE names hundreds of thousands of keys), and a table named by more keys
//! than `BULK_KEYS` in one batch is flushed instead. The listener never takes the Redis lock.
//!
//! Trust: an entry is only as fresh as the listener's coverage of the time since it was
//! filled. Entries that arrived while nothing listened (loaded from an RDB or AOF, present
//! when the module was loaded, filled by a primary this server replaced, or cached before a
//! listener reconnect) are never served: the cache is held (`bypass::hold`) until the
//! listener listens, and then they are flushed.

use super::feed::Feed;
use crate::cache;
use crate::cache::bypass;
use crate::cache::fill;
use crate::cache::flush;
use crate::cache::freshness::{self, Mark};
use crate::config::current;
use crate::events;
use crate::model::event::EventKind;
use crate::model::key::CanonicalPk;
use crate::model::lsn::Lsn;
use crate::model::source::{Scope, SourceId};
use crate::pg::prepared;
use crate::pg::schema::TableSchema;
use crate::query::precision::Written;
use crate::query::{self, dropped, generations, statements};
use crate::redis::main_thread::Task;
use crate::redis::role::writable;
use crate::stats;
use compact_str::CompactString;
use redis_module::Context;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A table named by more keys than this in one batch of notifications is flushed instead:
/// one scan of the keyspace (in slices) is then cheaper than deleting key by key, and the
/// batch's keys need not be held in memory.
pub const BULK_KEYS: usize = 5_000;

/// Deletions that may wait in the mailbox. Past this (the main thread fell behind a flood of
/// notifications, or was blocked by a long script), the waiting changes become flushes of
/// their tables: the memory they hold stays bounded, and a flush drops more entries than
/// needed, never too few.
pub const BACKLOG_MAX_KEYS: usize = 100_000;

/// Main-thread time one timer tick may spend deleting.
const SLICE: Duration = Duration::from_millis(2);

/// What a set of notifications asks for.
#[derive(Default)]
pub struct Changes {
    deletes: Vec<(Arc<TableSchema>, CanonicalPk)>,
    /// Per table whose rows changed, the rows written (None: unknown), for row-precise
    /// query results; taken when first applied. A keyless table's new rows come without
    /// deletions (they have no key): they alone say its rows changed.
    written: Vec<(Arc<TableSchema>, Option<Vec<Written>>)>,
    /// The key prefixes of the tables (and views) whose entries all go.
    flushes: Vec<String>,
    /// DDL arrived (`ddl`): the statements QUERY learned may no longer read what they did.
    statements_outdated: bool,
    /// DDL changed something every QUERY result may depend on (a function, a type, a
    /// view): they all go.
    results_outdated: bool,
    /// Nothing cached before now can be trusted: drop everything.
    resync: bool,
    /// Why nothing cached can be trusted, when `resync` says so and the source knows.
    why: Option<String>,
    /// Keys named by notifications and covered by a flush instead (for the statistics).
    keys_flushed: u64,
    /// The position in PostgreSQL's log these changes bring the cache to (replication
    /// source): applied once they are.
    position: Option<Lsn>,
    /// When the transaction that made them committed, for the apply lag.
    committed: Option<SystemTime>,
    /// When the oldest of them reached pgcache (a notification read, a replicated
    /// transaction's commit read from the stream): pgcache's own part of the invalidation
    /// lag runs from there to their deletions applied.
    arrived: Option<Instant>,
    /// The freshness prober's heartbeat that came with them (notify mode): once they are
    /// applied, so is every notification sent before it.
    heartbeat: Option<u64>,
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
    fn only_position(&self) -> bool {
        self.deletes.is_empty()
            && self.written.is_empty()
            && self.flushes.is_empty()
            && !self.resync
            && !self.statements_outdated
    }

    fn is_empty(&self) -> bool {
        self.only_position() && self.position.is_none() && self.heartbeat.is_none()
    }
}

/// Changes handed over by the listener, oldest first, and how many deletions they hold: one
/// owner for both, so the count is always the queue's (the changes being applied have left
/// it, and a partly applied remainder that goes back is counted again).
struct Mailbox {
    queue: VecDeque<Changes>,
    keys: usize,
}

impl Mailbox {
    const fn new() -> Mailbox {
        Mailbox {
            queue: VecDeque::new(),
            keys: 0,
        }
    }

    /// Queues `changes`; past `BACKLOG_MAX_KEYS` deletions, everything waiting becomes
    /// flushes of its tables. Whether that happened.
    fn push(&mut self, changes: Changes) -> bool {
        // A position alone joins a position alone waiting last: a quiet stream's keepalives
        // queue one item, not one each.
        if changes.only_position()
            && let Some(last) = self.queue.back_mut()
            && last.only_position()
        {
            last.position = last.position.max(changes.position);
            last.heartbeat = last.heartbeat.max(changes.heartbeat);
            return false;
        }
        self.keys += changes.deletions();
        self.queue.push_back(changes);
        if self.keys <= BACKLOG_MAX_KEYS {
            return false;
        }
        let merged = into_flushes(self.queue.drain(..));
        self.queue.push_back(merged);
        self.keys = 0;
        true
    }

    /// The oldest changes, out of the queue and its count.
    fn pop(&mut self) -> Option<Changes> {
        let changes = self.queue.pop_front()?;
        self.keys -= changes.deletions();
        Some(changes)
    }

    /// Puts a partly applied remainder back in front.
    fn push_front(&mut self, changes: Changes) {
        self.keys += changes.deletions();
        self.queue.push_front(changes);
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.keys = 0;
    }
}

/// Applies the default source's mailbox on the main thread, a slice at a time: the only
/// feed there is so far (design/53 step 6 lists the installed feeds).
static APPLY: Task = Task::new("applying invalidations", apply_slice);

/// `PGCACHE.DEBUG INVALIDATIONS HOLD`: the main thread applies nothing, and what the source
/// hands over waits in the mailbox as behind a main thread that fell behind, until RELEASE.
static HELD: AtomicBool = AtomicBool::new(false);

/// Holds (or, with `false`, releases) the main thread's applying of invalidations
/// (`PGCACHE.DEBUG INVALIDATIONS`, for tests). Main thread.
pub fn hold(held: bool) {
    HELD.store(held, Ordering::SeqCst);
    if !held {
        APPLY.request();
    }
}

/// What the listener has covered, shared by the listener thread and the main thread.
struct Coverage {
    /// Whether invalidation runs at all (the `listen` setting).
    listening: bool,
    /// The listener is connected and LISTENing now.
    connected: bool,
    /// It has been connected at least once since load.
    connected_before: bool,
    /// Entries exist that the listener never covered: flush them when it connects.
    untrusted_entries: bool,
    /// The replication source resumed for entries loaded with their position: they are
    /// served once it has caught up.
    catching_up: bool,
}

/// One feed's changes waiting for the main thread, and what its listener or stream has
/// covered.
pub struct Apply {
    mailbox: Mutex<Mailbox>,
    coverage: Mutex<Coverage>,
}

/// At load, with the load context: the feed of `source`. With `listening`, the cache is
/// held until the listener listens; entries already in the keyspace are flushed then.
pub fn init(ctx: &Context, source: SourceId, listening: bool) {
    *super::of(source).apply.coverage.lock().unwrap() = Coverage {
        listening,
        connected: false,
        connected_before: false,
        untrusted_entries: listening && !cache::dbs_with_keys(ctx).is_empty(),
        catching_up: false,
    };
    if listening {
        bypass::of(source).hold();
    }
}

/// At unload, after the feed of `source` has stopped: drops what is still queued.
pub fn deinit(source: SourceId) {
    super::of(source).apply.mailbox.lock().unwrap().clear();
    bypass::of(source).release();
}

impl Apply {
    /// Nothing queued, nothing covered (const, so a `static` holds the default source's).
    pub const fn new() -> Apply {
        Apply {
            mailbox: Mutex::new(Mailbox::new()),
            coverage: Mutex::new(Coverage {
                listening: false,
                connected: false,
                connected_before: false,
                untrusted_entries: false,
                catching_up: false,
            }),
        }
    }

    /// The listener is LISTENing. Called on the listener thread. Nothing read from
    /// PostgreSQL before now may be cached (its change may have gone unnoticed), and
    /// entries it did not cover are flushed before any is served again.
    pub fn listener_connected(&self) {
        let mut coverage = self.coverage.lock().unwrap();
        coverage.connected = true;
        fill::invalidated_scope(&current::scope(SourceId::DEFAULT));
        if coverage.connected_before || coverage.untrusted_entries {
            coverage.untrusted_entries = false;
            self.submit(Changes::everything());
        } else {
            bypass::of(SourceId::DEFAULT).release();
        }
        coverage.connected_before = true;
    }

    /// The listener lost its connection. Called on the listener thread. Entries stay served
    /// (PostgreSQL may be down; the cache is then what still answers) and are flushed when
    /// it listens again.
    pub fn listener_disconnected(&self) {
        self.coverage.lock().unwrap().connected = false;
    }

    /// The replication source starts over: the cache's entries cannot be vouched for from
    /// the log (no position recorded, a new slot, a slot that lost changes), so they are
    /// dropped, fills in flight are not stored, and the cache is served again once the
    /// flush started. Called on the source's thread.
    pub fn source_reset(&self, why: String) {
        let mut coverage = self.coverage.lock().unwrap();
        coverage.connected = true;
        coverage.connected_before = true;
        coverage.untrusted_entries = false;
        fill::invalidated_scope(&current::scope(SourceId::DEFAULT));
        let mut changes = Changes::everything();
        changes.why = Some(why);
        self.submit(changes);
    }

    /// The replication source resumed from the position the keyspace holds: the entries
    /// reflect every change before it and the stream brings every change after it, so
    /// nothing is dropped. A cache held (entries loaded from disk or a promotion) is served
    /// again once the source has caught up with PostgreSQL (`caught_up`). Called on the
    /// source's thread.
    pub fn source_resumed(&self) {
        let mut coverage = self.coverage.lock().unwrap();
        coverage.connected = true;
        coverage.connected_before = true;
        coverage.catching_up = std::mem::take(&mut coverage.untrusted_entries);
        if !coverage.catching_up {
            // No entry waits for the stream to catch up: fills from now on are covered.
            bypass::of(SourceId::DEFAULT).release();
        }
    }

    /// Whether the keyspace holds entries no source covered (present at load, loaded from
    /// disk or kept from a former primary) and nothing vouched for yet.
    pub fn untrusted_entries(&self) -> bool {
        self.coverage.lock().unwrap().untrusted_entries
    }

    /// The replication source applied everything PostgreSQL had committed when it
    /// connected: entries are as fresh as the stream keeps them. Called on the source's
    /// thread.
    pub fn caught_up(&self) {
        let mut coverage = self.coverage.lock().unwrap();
        if std::mem::take(&mut coverage.catching_up) && !coverage.untrusted_entries {
            bypass::of(SourceId::DEFAULT).release();
        }
    }

    /// A replica in replication mode: its primary's replicated position has vouched for
    /// the cache (`horizon`), so the entries its primary keeps fresh may be served. Not
    /// while the entries wait for a source of this server's own (a promotion under way, or
    /// entries no primary covered). Called on the prober's thread.
    pub fn vouched_by_primary(&self) {
        let coverage = self.coverage.lock().unwrap();
        if coverage.listening && !coverage.untrusted_entries && !coverage.catching_up {
            bypass::of(SourceId::DEFAULT).release();
        }
    }

    /// The keyspace now holds entries no listener covered (a load from disk, a promotion):
    /// flush them now if the listener listens, else hold the cache until it does. Main
    /// thread.
    pub fn distrust(&self, ctx: &Context, why: &str) {
        let mut coverage = self.coverage.lock().unwrap();
        if !coverage.listening {
            return;
        }
        ctx.log_notice(&format!(
            "pgcache: {why}: cached rows may have missed invalidations; dropping them"
        ));
        if coverage.connected {
            flush::start(ctx, SourceId::DEFAULT, &current::scope(SourceId::DEFAULT));
        } else {
            coverage.untrusted_entries = true;
            bypass::of(SourceId::DEFAULT).hold();
        }
    }

    /// Like `distrust`, for the replication source: the entries came with the position they
    /// reflect, so the cache is held while the source resumes from it (`source_resumed`,
    /// `caught_up`) instead of being flushed. Whether the cache is held. Main thread.
    pub fn hold_until_resumed(&self, ctx: &Context, why: &str) -> bool {
        let mut coverage = self.coverage.lock().unwrap();
        if !coverage.listening {
            return false;
        }
        ctx.log_notice(&format!(
            "pgcache: {why}: resuming invalidations from the position it holds"
        ));
        coverage.untrusted_entries = !cache::dbs_with_keys(ctx).is_empty();
        bypass::of(SourceId::DEFAULT).hold();
        true
    }

    /// Queues changes for the main thread. Called by the feed's threads.
    pub fn submit(&self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        let overflowed = self.mailbox.lock().unwrap().push(changes);
        if overflowed {
            stats::of(SourceId::DEFAULT)
                .invalidation_backlog_flushes
                .inc();
            redis_module::logging::log_warning(format!(
                "pgcache: more than {BACKLOG_MAX_KEYS} invalidated keys were waiting for the \
                 main thread; flushing their tables instead"
            ));
        }
        APPLY.request_from_thread();
    }
}

/// One set of changes that flushes every table the given ones name.
fn into_flushes(waiting: impl Iterator<Item = Changes>) -> Changes {
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

/// Applies queued changes for at most `SLICE`; true when some are left for another tick.
/// Then writes the position reached into the keyspace (replication source).
fn apply_slice(context: &Context) -> bool {
    let feed = super::of(SourceId::DEFAULT);
    let more = apply_for_a_slice(context, &feed);
    if writable(context) {
        feed.position.store(context);
    }
    more
}

fn apply_for_a_slice(context: &Context, feed: &Feed) -> bool {
    if HELD.load(Ordering::SeqCst) {
        // Not asked again until RELEASE, which asks.
        return false;
    }
    let deadline = Instant::now() + SLICE;
    let mut dbs: Option<Vec<i32>> = None;
    loop {
        let Some(mut changes) = feed.apply.mailbox.lock().unwrap().pop() else {
            return false;
        };
        start_flushes(context, feed, &mut changes);
        let dbs = dbs.get_or_insert_with(|| cache::dbs_with_keys(context));
        end_generations(context, &changes, dbs);
        drop_row_results(context, &mut changes);
        forget_outdated_statements(&mut changes);
        while let Some((schema, pk)) = changes.deletes.pop() {
            cache::delete_in(context, &pk.cache_key(&schema.key_prefix), dbs);
            stats::of(SourceId::DEFAULT).invalidations_by_postgres.inc();
            events::publish(context, EventKind::Invalidate, &schema.display, &pk.json);
            if Instant::now() >= deadline {
                break;
            }
        }
        if !changes.deletes.is_empty() {
            feed.apply.mailbox.lock().unwrap().push_front(changes);
            return true;
        }
        if let Some(lsn) = changes.position {
            feed.position.applied_up_to(lsn);
            freshness::of(SourceId::DEFAULT).applied(Mark::Lsn(lsn));
        }
        if let Some(number) = changes.heartbeat {
            freshness::of(SourceId::DEFAULT).applied(Mark::Heartbeat(number));
        }
        if let Some(committed) = changes.committed {
            feed.position
                .record_lag(committed.elapsed().unwrap_or_default());
        }
        if let Some(arrived) = changes.arrived {
            stats::of(SourceId::DEFAULT)
                .invalidation_apply
                .record(arrived.elapsed().as_micros() as u64);
        }
        if Instant::now() >= deadline {
            return !feed.apply.mailbox.lock().unwrap().queue.is_empty();
        }
    }
}

/// Every table `changes` deletes or writes rows of changed for the query results too: their
/// per-table results are not served again (`query::dropped`). Once per table; a remainder
/// applied in a later slice does it again, which drops nothing more.
fn end_generations(ctx: &Context, changes: &Changes, dbs: &[i32]) {
    let mut ended: Vec<&str> = Vec::new();
    let written = changes.written.iter().map(|(schema, _)| schema);
    for schema in changes
        .deletes
        .iter()
        .map(|(schema, _)| schema)
        .chain(written)
    {
        if !ended.contains(&schema.key_prefix.as_str()) {
            ended.push(&schema.key_prefix);
            dropped::table_rows_changed(ctx, schema, dbs);
        }
    }
}

/// Drops the row-precise query results the changed rows can affect (`query::dropped`),
/// and lets no such result filled across the change be stored. Once per set of changes:
/// the written rows are taken, and a remainder applied in a later slice does nothing here.
/// A keyless table's entries (rows READ by any columns, which a new row may match) go, and
/// none filled across the change is stored, its query results left to the index.
fn drop_row_results(ctx: &Context, changes: &mut Changes) {
    for (schema, written) in std::mem::take(&mut changes.written) {
        if schema.primary_key.is_empty() {
            flush::start_entries(ctx, &schema);
        }
        // A fill in flight was built before this change was applied, from rows whose
        // membership it does not know yet: it is not stored.
        for generation in generations::mine_for(&schema.key_prefix) {
            let generation = std::str::from_utf8(&generation).unwrap_or_default();
            fill::invalidated_containing(&format!(":{generation}"));
        }
        let members: Vec<CompactString> = changes
            .deletes
            .iter()
            .filter(|(s, _)| Arc::ptr_eq(s, &schema) || s.name == schema.name)
            .map(|(_, pk)| pk.json.clone())
            .collect();
        dropped::rows_changed(ctx, &schema, &members, written.as_deref());
    }
}

/// Starts what `changes` asks to flush (once; the deletions may take several ticks).
fn start_flushes(ctx: &Context, feed: &Feed, changes: &mut Changes) {
    if std::mem::take(&mut changes.resync) {
        let reconnect = feed.apply.coverage.lock().unwrap().connected_before;
        let why = changes.why.take().unwrap_or_else(|| {
            if reconnect {
                "while the listener was disconnected".into()
            } else {
                "before the listener first connected".into()
            }
        });
        ctx.log_warning(&format!(
            "pgcache: invalidations may have been missed {why}; dropping every cached row"
        ));
        flush::start(ctx, SourceId::DEFAULT, &current::scope(SourceId::DEFAULT));
        bypass::of(SourceId::DEFAULT).release();
    }
    stats::of(SourceId::DEFAULT)
        .invalidations_by_postgres
        .add(std::mem::take(&mut changes.keys_flushed));
    if std::mem::take(&mut changes.results_outdated) {
        drop_every_result(ctx);
    }
    for prefix in std::mem::take(&mut changes.flushes) {
        flush::start(
            ctx,
            SourceId::DEFAULT,
            &flush::scope_of(SourceId::DEFAULT, &prefix),
        );
    }
}

/// DDL changed something any QUERY result may have been computed with (a view, a
/// function, a type): every result goes. The generations of every table a remembered
/// statement reads end, and the row generations' epoch with the index (so no result is
/// built again from them, on the replicas either, without waiting for the scan), and a
/// flush deletes the results, which none is served from meanwhile.
fn drop_every_result(ctx: &Context) {
    let dbs = cache::dbs_with_keys(ctx);
    let mut prefixes: Vec<String> = statements::of(SourceId::DEFAULT)
        .all()
        .iter()
        .flat_map(|s| s.tables.iter().map(|t| t.key_prefix.clone()))
        .collect();
    prefixes.sort();
    prefixes.dedup();
    for prefix in prefixes {
        generations::end_per_table(ctx, &prefix, &dbs);
    }
    dropped::index_lost(ctx, &dbs);
    let prefix = format!(
        "{}{}",
        current::key_prefix(SourceId::DEFAULT),
        query::key::RESULT_TAG
    );
    flush::start(ctx, SourceId::DEFAULT, &Scope::prefix(&prefix));
}

/// DDL arrived: what the statements read is learned again (after the changes that came
/// with it were counted against them); results stored under the generations of tables a
/// statement no longer reads are never looked up. Every connection prepares its statements
/// again: PostgreSQL would not re-parse one a new table came to shadow (`pg::prepared`).
fn forget_outdated_statements(changes: &mut Changes) {
    if std::mem::take(&mut changes.statements_outdated) {
        statements::of(SourceId::DEFAULT).forget_all();
        prepared::catalog_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::schema::Column;

    fn schema(name: &str) -> Arc<TableSchema> {
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

    fn pk(n: usize) -> CanonicalPk {
        CanonicalPk {
            json: format!("{{\"id\":{n}}}").into(),
            columns: smallvec::smallvec![("id".into(), n.to_string().into())],
            unconfirmed: false,
        }
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

    fn deletions(n: usize) -> Changes {
        let t = schema("t");
        let mut changes = Changes::default();
        for i in 0..n {
            changes.delete(t.clone(), pk(i));
        }
        changes
    }

    #[test]
    fn the_backlog_count_is_the_queue_s_whatever_is_being_applied() {
        let mut mailbox = Mailbox::new();
        assert!(!mailbox.push(deletions(60_000)));
        // The main thread takes the oldest changes and applies part of them...
        let mut taken = mailbox.pop().unwrap();
        assert_eq!(mailbox.keys, 0);
        // ...while the listener overflows the mailbox, which turns into flushes.
        assert!(!mailbox.push(deletions(60_000)));
        assert!(mailbox.push(deletions(50_000)));
        assert_eq!(mailbox.keys, 0);
        // The remainder goes back and is counted again; the count never went below zero
        // (it used to be decremented for keys the overflow had already forgotten).
        taken.deletes.truncate(10);
        mailbox.push_front(taken);
        assert_eq!(mailbox.keys, 10);
        while mailbox.pop().is_some() {}
        assert_eq!(mailbox.keys, 0);
        assert!(
            !mailbox.push(deletions(BACKLOG_MAX_KEYS)),
            "no spurious flush after"
        );
    }

    #[test]
    fn a_keyless_table_s_new_rows_are_changes_of_their_own() {
        // No key, no deletion: the rows written alone say the table changed.
        let history = Arc::new(TableSchema::for_tests("history", Vec::new(), Vec::new()));
        let row = Written {
            values: Vec::new(),
            new_key: true,
        };
        let mut changes = Changes::default();
        changes.rows_written(history.clone(), Some(vec![row.clone(); 3]));
        assert!(!changes.only_position() && !changes.is_empty());
        assert_eq!(changes.deletions(), 3, "weighed one by one, counted so");
        let mut mailbox = Mailbox::new();
        assert!(!mailbox.push(changes));
        // A position that follows does not take their place.
        let mut position = Changes::default();
        position.reach(Lsn(10));
        assert!(!mailbox.push(position));
        assert_eq!((mailbox.queue.len(), mailbox.keys), (2, 3));
        // Past the backlog they become a flush of their table, not nothing.
        let mut many = Changes::default();
        many.rows_written(history.clone(), Some(vec![row; BACKLOG_MAX_KEYS]));
        assert!(mailbox.push(many));
        let merged = mailbox.pop().unwrap();
        assert_eq!(merged.flushes, std::slice::from_ref(&history.key_prefix));
        assert_eq!(merged.position, Some(Lsn(10)));
        assert_eq!(mailbox.keys, 0);
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
