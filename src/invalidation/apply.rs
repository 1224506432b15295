//! Applying PostgreSQL's invalidations on the Redis main thread, and deciding when cached
//! entries can be trusted at all.
//!
//! The listener thread hands each set of changes over through a mailbox and asks for the
//! main thread (`main_thread`), whose timer applies them with a regular module context, so the
//! deletions are replicated like any cache write. Deletions are applied a slice of time at a
//! time (a bulk UPDATE names hundreds of thousands of keys), and a table named by more keys
//! than `changes::BULK_KEYS` in one batch is flushed instead. The listener never takes the Redis lock.
//!
//! Trust: an entry is only as fresh as the listener's coverage of the time since it was
//! filled. Entries that arrived while nothing listened (loaded from an RDB or AOF, present
//! when the module was loaded, filled by a primary this server replaced, or cached before a
//! listener reconnect) are never served: the cache is held (`bypass::hold`) until the
//! listener listens, and then they are flushed.

use super::changes::Changes;
use super::feed::Feed;
use super::feed::apply::{Apply, BACKLOG_MAX_KEYS, Coverage};
use crate::cache;
use crate::cache::bypass;
use crate::cache::fill;
use crate::cache::flush;
use crate::cache::freshness::{self, Mark};
use crate::config::current;
use crate::events;
use crate::model::event::EventKind;
use crate::model::source::{Scope, SourceId};
use crate::pg::prepared;
use crate::query::{self, dropped, generations, statements};
use crate::redis::main_thread::Task;
use crate::redis::role::writable;
use crate::stats;
use compact_str::CompactString;
use redis_module::Context;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Main-thread time one timer tick may spend deleting.
const SLICE: Duration = Duration::from_millis(2);

/// Applies every installed feed's mailbox on the main thread, a slice at a time.
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

/// How many deletions wait in every feed's mailbox (`PGCACHE.DEBUG INVALIDATIONS PENDING`,
/// so a test knows a change was handed over while held).
pub fn pending_keys() -> usize {
    let mut keys = 0;
    super::each(|feed| keys += feed.apply.mailbox.lock().unwrap().keys());
    keys
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
        bypass::of(source)
            .hold("pgcache has just loaded, and its change feed does not vouch for the cache yet");
    }
}

/// At unload, after the feed of `source` has stopped: drops what is still queued.
pub fn deinit(source: SourceId) {
    super::of(source).apply.mailbox.lock().unwrap().clear();
    bypass::of(source).release();
}

impl Apply {
    /// PostgreSQL before now may be cached (its change may have gone unnoticed), and
    /// entries it did not cover are flushed before any is served again.
    pub fn listener_connected(&self) {
        let mut coverage = self.coverage.lock().unwrap();
        coverage.connected = true;
        fill::invalidated_scope(&current::scope(self.source));
        if coverage.connected_before || coverage.untrusted_entries {
            coverage.untrusted_entries = false;
            self.submit(Changes::everything());
        } else {
            bypass::of(self.source).release();
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
        fill::invalidated_scope(&current::scope(self.source));
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
            bypass::of(self.source).release();
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
            bypass::of(self.source).release();
        }
    }

    /// A replica in replication mode: its primary's replicated position has vouched for
    /// the cache (`horizon`), so the entries its primary keeps fresh may be served. Not
    /// while the entries wait for a source of this server's own (a promotion under way, or
    /// entries no primary covered). Called on the prober's thread.
    pub fn vouched_by_primary(&self) {
        let coverage = self.coverage.lock().unwrap();
        if coverage.listening && !coverage.untrusted_entries && !coverage.catching_up {
            bypass::of(self.source).release();
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
            flush::start(ctx, self.source, &current::scope(self.source));
        } else {
            coverage.untrusted_entries = true;
            bypass::of(self.source).hold(
                "the cache holds entries no change feed covered (loaded from disk, or kept from \
                 a former primary): they are dropped, and hits served, once the feed listens",
            );
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
        bypass::of(self.source).hold(
            "the entries loaded from disk (or kept through a promotion) are served once the \
             replication stream has caught up with PostgreSQL from the position they hold",
        );
        true
    }

    /// Queues changes for the main thread. Called by the feed's threads.
    pub fn submit(&self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        let overflowed = self.mailbox.lock().unwrap().push(changes);
        if overflowed {
            stats::of(self.source).invalidation_backlog_flushes.inc();
            redis_module::logging::log_warning(format!(
                "pgcache: more than {BACKLOG_MAX_KEYS} invalidated keys were waiting for the \
                 main thread; flushing their tables instead"
            ));
        }
        APPLY.request_from_thread();
    }
}

/// Applies queued changes for at most `SLICE`, the feeds taking turns a change set each
/// (so that one flooded feed does not hold up another's for a whole slice); true when some
/// are left for another tick. Then writes the position each feed reached into the keyspace
/// (replication source).
fn apply_slice(context: &Context) -> bool {
    let more = apply_for_a_slice(context);
    if writable(context) {
        super::each(|feed| feed.position.store(context));
    }
    more
}

fn apply_for_a_slice(context: &Context) -> bool {
    if HELD.load(Ordering::SeqCst) {
        // Not asked again until RELEASE, which asks.
        return false;
    }
    let deadline = Instant::now() + SLICE;
    let mut dbs: Option<Vec<i32>> = None;
    loop {
        let (mut applied, mut out_of_time) = (false, false);
        each_from_first_turn(|at, feed| {
            if out_of_time {
                return;
            }
            match apply_one(context, feed, deadline, &mut dbs) {
                Applied::Nothing => {}
                Applied::Whole => applied = true,
                Applied::Part => out_of_time = true,
            }
            if out_of_time || Instant::now() >= deadline {
                // The next slice starts with the feed after this one: a change set longer
                // than a slice would otherwise keep the feeds after it waiting till its end.
                FIRST_TURN.store(at + 1, Ordering::Relaxed);
                out_of_time = true;
            }
        });
        if out_of_time {
            let mut more = false;
            super::each(|feed| more |= !feed.apply.mailbox.lock().unwrap().is_empty());
            return more;
        }
        if !applied {
            return false;
        }
    }
}

/// Which feed, in `super::each`'s order, takes the first turn of the next slice.
static FIRST_TURN: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` on every feed with its place in `super::each`'s order, starting with the one
/// whose turn is first (`FIRST_TURN`, wrapping around).
fn each_from_first_turn(mut f: impl FnMut(usize, &Feed)) {
    let mut feeds = 0;
    super::each(|_| feeds += 1);
    let first = FIRST_TURN.load(Ordering::Relaxed) % feeds.max(1);
    for wanted in [first..feeds, 0..first] {
        let mut at = 0;
        super::each(|feed| {
            if wanted.contains(&at) {
                f(at, feed);
            }
            at += 1;
        });
    }
}

/// What `apply_one` did with a feed's next change set.
enum Applied {
    /// Its mailbox was empty.
    Nothing,
    Whole,
    /// The slice ended in its deletions: the rest waits at the front of its mailbox.
    Part,
}

/// Applies the next change set of `feed`, its deletions up to `deadline`.
fn apply_one(
    context: &Context,
    feed: &Feed,
    deadline: Instant,
    dbs: &mut Option<Vec<i32>>,
) -> Applied {
    let Some(mut changes) = feed.apply.mailbox.lock().unwrap().pop() else {
        return Applied::Nothing;
    };
    let source = feed.source;
    // Before the first slice: a miss whose ticket is taken between two slices needs a read
    // of at least this position (a standby's, `cache::applied`).
    if let Some(lsn) = changes.position
        && (!changes.only_position() || changes.results_outdated)
    {
        cache::applied::of(source).begin(lsn);
    }
    start_flushes(context, feed, &mut changes);
    let dbs = dbs.get_or_insert_with(|| cache::dbs_with_keys(context));
    end_generations(context, &changes, dbs);
    drop_row_results(context, &mut changes);
    forget_outdated_statements(source, &mut changes);
    while let Some((schema, pk)) = changes.deletes.pop() {
        cache::delete_in(context, &pk.cache_key(&schema.key_prefix), dbs);
        stats::of(source).invalidations_by_postgres.inc();
        events::publish(
            context,
            EventKind::Invalidate,
            source,
            &schema.display,
            &pk.json,
        );
        if Instant::now() >= deadline {
            break;
        }
    }
    if !changes.deletes.is_empty() {
        feed.apply.mailbox.lock().unwrap().push_front(changes);
        return Applied::Part;
    }
    if let Some(lsn) = changes.position {
        feed.position.applied_up_to(lsn);
        freshness::of(source).applied(Mark::Lsn(lsn));
    }
    if let Some(number) = changes.heartbeat {
        freshness::of(source).applied(Mark::Heartbeat(number));
    }
    if let Some(committed) = changes.committed {
        feed.position
            .record_lag(committed.elapsed().unwrap_or_default());
    }
    if let Some(arrived) = changes.arrived {
        stats::of(source)
            .invalidation_apply
            .record(arrived.elapsed().as_micros() as u64);
    }
    Applied::Whole
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
        flush::start(ctx, feed.source, &current::scope(feed.source));
        bypass::of(feed.source).release();
    }
    stats::of(feed.source)
        .invalidations_by_postgres
        .add(std::mem::take(&mut changes.keys_flushed));
    if std::mem::take(&mut changes.results_outdated) {
        drop_every_result(ctx, feed.source);
    }
    for prefix in std::mem::take(&mut changes.flushes) {
        flush::start(ctx, feed.source, &flush::scope_of(feed.source, &prefix));
    }
}

/// DDL changed something any QUERY result of `source` may have been computed with (a view,
/// a function, a type): every result of its goes (another source's database saw no DDL).
/// The generations of every table a remembered statement reads end, and the row
/// generations' epoch with the index (so no result is built again from them, on the
/// replicas either, without waiting for the scan), and a flush deletes the results, which
/// none is served from meanwhile.
fn drop_every_result(ctx: &Context, source: SourceId) {
    let dbs = cache::dbs_with_keys(ctx);
    let mut prefixes: Vec<String> = statements::of(source)
        .all()
        .iter()
        .flat_map(|s| s.tables.iter().map(|t| t.key_prefix.clone()))
        .collect();
    prefixes.sort();
    prefixes.dedup();
    for prefix in prefixes {
        generations::end_per_table(ctx, &prefix, &dbs);
    }
    dropped::index_lost_of(ctx, source, &dbs);
    let prefix = format!("{}{}", current::key_prefix(source), query::key::RESULT_TAG);
    flush::start(ctx, source, &Scope::prefix(&prefix));
}

/// DDL arrived: what the statements read is learned again (after the changes that came
/// with it were counted against them); results stored under the generations of tables a
/// statement no longer reads are never looked up. Every connection prepares its statements
/// again: PostgreSQL would not re-parse one a new table came to shadow (`pg::prepared`).
fn forget_outdated_statements(source: SourceId, changes: &mut Changes) {
    if std::mem::take(&mut changes.statements_outdated) {
        statements::of(source).forget_all();
        prepared::catalog_changed();
    }
}
