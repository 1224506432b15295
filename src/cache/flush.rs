//! Dropping many cache entries without blocking the event loop: PGCACHE.FLUSH of a table,
//! and everything after the invalidation listener reconnects (notifications sent while it
//! was away are lost).
//!
//! A flush deletes the keys of its scope (`Scope`: a table's prefix, the results', or a
//! source's whole cache, which for the default source spares the named sources' keys
//! nested under its prefix) a slice at a time from a Redis timer, in every DB that holds
//! keys. From the moment it starts until it ends, hits in its scope are treated as misses,
//! so no entry cached before the flush is served while the deletion is under way. No fill
//! is stored in its scope meanwhile (answered, not cached), so when it ends no entry from
//! before it is left, however many changes arrived while it ran.
//!
//! Both bypasses (a flush's prefix, and the whole cache while it is held) are `bypass`'s.

use crate::cache;
use crate::cache::bypass;
use crate::cache::emptied;
use crate::cache::fill;
use crate::config::current;
use crate::model::source::{Scope, SourceId};
use crate::model::tags;
use crate::pg::schema::TableSchema;
use crate::query::key::RESULT_TAG;
use crate::query::{dropped, generations};
use crate::redis::cluster;
use crate::redis::keyspace::ScanCursor;
use crate::redis::main_thread::Task;
use crate::redis::role::writable;
use crate::stats;
use redis_module::Context;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Main-thread time one timer tick may spend deleting.
const SLICE: Duration = Duration::from_millis(2);

struct Flush {
    /// Whose keys: its figures count the flush.
    source: SourceId,
    /// The keys dropped (`pg_cache:` not followed by `@` for the default source's whole
    /// cache, `pg_cache:users:` for one table).
    scope: Scope,
    dbs: Vec<i32>,
    cursor: ScanCursor,
    deleted: u64,
    /// What `emptied` gave a table's flush at its start, to record the table empty at its
    /// end (None: the whole cache's, the results', or on a server keeping no record).
    epoch: Option<u64>,
    /// Only the table's entries go (`start_entries`): its generation keys stay.
    entries_only: bool,
}

/// Flushes under way. Only touched on the main thread (no other thread takes Redis's lock:
/// the listener hands its work over through `wake`), so the mutex is never contended.
static ACTIVE: Mutex<Vec<Flush>> = Mutex::new(Vec::new());
/// How many flushes are under way.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Runs the flushes under way, a slice at a time.
static FLUSH: Task = Task::new("a flush step", flush_slice);

pub fn running() -> usize {
    RUNNING.load(Ordering::SeqCst)
}

/// The scope of a flush of `source`'s keys under `prefix`: its whole cache when `prefix` is
/// the source's key prefix, else the keys under it (a table's, the results').
pub fn scope_of(source: SourceId, prefix: &str) -> Scope {
    let whole = current::scope(source);
    if prefix == whole.prefix {
        whole
    } else {
        Scope::prefix(prefix)
    }
}

/// Starts dropping every key of `source` in `scope`. Main thread only.
///
/// One flush runs per scope, however many FLUSH commands and notifications ask for it: no
/// fill is stored in a scope while it is flushed (`cache::admission`), so the scan under
/// way visits every entry present now, and goes on rather than starting over (steady changes
/// to a table would otherwise keep its flush, and its entries' bypass, from ever ending).
/// The list of flushes is bounded by the number of scopes.
pub fn start(ctx: &Context, source: SourceId, scope: &Scope) {
    stats::of(source).flushes.inc();
    fill::invalidated_scope(scope);
    let dbs = cache::dbs_with_keys(ctx);
    // The query results over these entries' tables go at once, not when the scan reaches
    // their generation key.
    dropped::table_changed(ctx, source, scope, &dbs);
    scan(ctx, source, scope, dbs, false);
}

/// Starts dropping the entries of `schema`'s table (its rows, as READ caches them), leaving
/// its query results to whoever weighs the change against them (a keyless table's new
/// rows: `invalidation::apply`) and its generation keys in place. Main thread only. A flush
/// of the same table under way (either kind) covers it.
pub fn start_entries(ctx: &Context, schema: &TableSchema) {
    stats::of(schema.source).flushes.inc();
    let scope = Scope::prefix(&schema.key_prefix);
    fill::invalidated_scope(&scope);
    scan(ctx, schema.source, &scope, cache::dbs_with_keys(ctx), true);
}

/// Starts the scan that deletes the entries in `scope` in `dbs` (and, unless
/// `entries_only`, the generation keys it meets), unless one is under way or the table is
/// known to hold none.
fn scan(ctx: &Context, source: SourceId, scope: &Scope, dbs: Vec<i32>, entries_only: bool) {
    let record = keeps_record(ctx, source, scope);
    if record && emptied::is_empty(scope.prefix.as_bytes()) {
        // Nothing to delete: the fills in flight (and the generations) are ended already.
        stats::of(source).flushes_without_scan.inc();
        return;
    }
    let mut active = ACTIVE.lock().unwrap();
    if active.iter().any(|f| f.scope == *scope) {
        return;
    }
    let cursor = ScanCursor::new();
    bypass::begin(scope);
    active.push(Flush {
        source,
        scope: scope.clone(),
        dbs,
        cursor,
        deleted: 0,
        epoch: record.then(|| emptied::flush_began(scope.prefix.as_bytes())),
        entries_only,
    });
    drop(active);
    RUNNING.fetch_add(1, Ordering::SeqCst);
    FLUSH.request();
}

/// Whether `scope` is a table's on a server that knows every entry stored under it
/// (`emptied`): a primary outside a cluster. The source's whole cache and its query
/// results hold keys that are not entries (the position, the epoch) or are flushed for
/// other reasons.
fn keeps_record(ctx: &Context, source: SourceId, scope: &Scope) -> bool {
    let whole = current::scope(source);
    writable(ctx)
        && !cluster::enabled()
        && *scope != whole
        && scope.prefix.strip_prefix(whole.prefix.as_str()) != Some(RESULT_TAG)
}

/// Deletes for at most `SLICE`; whether flushes are left for the next turn.
fn flush_slice(context: &Context) -> bool {
    let deadline = Instant::now() + SLICE;
    let finished: Vec<Flush> = {
        let mut active = ACTIVE.lock().unwrap();
        // The flushes take turns a step each: a big flush (a whole source's, after its
        // listener reconnected) does not hold up another source's, whose table's reads
        // bypass the cache until it is done.
        let mut stepped = true;
        while stepped && Instant::now() < deadline {
            stepped = false;
            for flush in active.iter_mut() {
                if Instant::now() >= deadline {
                    break;
                }
                stepped |= step(context, flush);
            }
        }
        let (done, rest): (Vec<Flush>, Vec<Flush>) =
            active.drain(..).partition(|f| f.dbs.is_empty());
        *active = rest;
        done
    };
    for flush in finished {
        context.log_notice(&format!(
            "pgcache: flush of {} done, {} entries dropped",
            flush.scope.prefix, flush.deleted
        ));
        bypass::end(&flush.scope);
        if let Some(epoch) = flush.epoch {
            emptied::flush_ended(
                flush.scope.prefix.as_bytes(),
                epoch,
                keeps_record(context, flush.source, &flush.scope),
            );
        }
        if !flush.entries_only {
            generations::flush_ended(
                context,
                flush.source,
                &flush.scope,
                &cache::dbs_with_keys(context),
            );
        }
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
    RUNNING.load(Ordering::SeqCst) > 0
}

/// Scans one step of the current DB and deletes what matched; false when this flush is
/// out of DBs (done) or of time for this step.
fn step(ctx: &Context, flush: &mut Flush) -> bool {
    let Some(&db) = flush.dbs.first() else {
        return false;
    };
    let mut found: Vec<Vec<u8>> = Vec::new();
    let scope = &flush.scope;
    let more = flush.cursor.step(ctx, db, |name| {
        // Tag sets stay: a member whose entry goes is dead, harmless and swept, while a
        // set deleted after a WRITE during the flush added to it would lose that entry.
        if scope.covers(name)
            && !tags::is_set(scope.prefix.as_bytes(), name)
            && !(flush.entries_only
                && generations::is_generation_key(scope.prefix.as_bytes(), name))
        {
            found.push(name.to_vec());
        }
    });
    for key in &found {
        cache::delete(ctx, &String::from_utf8_lossy(key));
        flush.deleted += 1;
    }
    if !more {
        flush.dbs.remove(0);
        flush.cursor.restart();
    }
    true
}
