//! Dropping many cache entries without blocking the event loop: PGCACHE.FLUSH of a table,
//! and everything after the invalidation listener reconnects (notifications sent while it
//! was away are lost).
//!
//! A flush deletes its keys a slice at a time from a Redis timer, in every DB that holds
//! keys. From the moment it starts until it ends, hits under its key prefix are treated as
//! misses, so no entry cached before the flush is served while the deletion is under way.
//! No fill is stored under its prefix meanwhile (answered, not cached), so when it ends
//! no entry from before it is left, however many changes arrived while it ran.
//!
//! Both bypasses (a flush's prefix, and the whole cache while it is held) are `bypass`'s.

use crate::cache;
use crate::cache::bypass;
use crate::cache::emptied;
use crate::cache::fill;
use crate::config::current;
use crate::model::source::SourceId;
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
    /// Keys starting with this are dropped (`pg_cache:` for everything,
    /// `pg_cache:users:` for one table).
    prefix: Vec<u8>,
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

/// Starts dropping every key under `prefix`. Main thread only.
///
/// One flush runs per prefix, however many FLUSH commands and notifications ask for it: no
/// fill is stored under a prefix while it is flushed (`cache::admission`), so the scan under
/// way visits every entry present now, and goes on rather than starting over (steady changes
/// to a table would otherwise keep its flush, and its entries' bypass, from ever ending).
/// The list of flushes is bounded by the number of prefixes.
pub fn start(ctx: &Context, prefix: &str) {
    stats::of(SourceId::DEFAULT).flushes.inc();
    fill::invalidated_prefix(prefix);
    let dbs = cache::dbs_with_keys(ctx);
    // The query results over these entries' tables go at once, not when the scan reaches
    // their generation key.
    dropped::table_changed(ctx, prefix, &dbs);
    scan(ctx, prefix, dbs, false);
}

/// Starts dropping the entries of the table whose keys start with `prefix` (its rows, as
/// READ caches them), leaving its query results to whoever weighs the change against them
/// (a keyless table's new rows: `invalidation::apply`) and its generation keys in place.
/// Main thread only. A flush of the same table under way (either kind) covers it.
pub fn start_entries(ctx: &Context, prefix: &str) {
    stats::of(SourceId::DEFAULT).flushes.inc();
    fill::invalidated_prefix(prefix);
    scan(ctx, prefix, cache::dbs_with_keys(ctx), true);
}

/// Starts the scan that deletes the entries under `prefix` in `dbs` (and, unless
/// `entries_only`, the generation keys it meets), unless one is under way or the table is
/// known to hold none.
fn scan(ctx: &Context, prefix: &str, dbs: Vec<i32>, entries_only: bool) {
    if keeps_record(ctx, prefix) && emptied::is_empty(prefix.as_bytes()) {
        // Nothing to delete: the fills in flight (and the generations) are ended already.
        stats::of(SourceId::DEFAULT).flushes_without_scan.inc();
        return;
    }
    let mut active = ACTIVE.lock().unwrap();
    if active.iter().any(|f| f.prefix == prefix.as_bytes()) {
        return;
    }
    let cursor = ScanCursor::new();
    bypass::begin(prefix.as_bytes());
    active.push(Flush {
        prefix: prefix.as_bytes().to_vec(),
        dbs,
        cursor,
        deleted: 0,
        epoch: keeps_record(ctx, prefix).then(|| emptied::flush_began(prefix.as_bytes())),
        entries_only,
    });
    drop(active);
    RUNNING.fetch_add(1, Ordering::SeqCst);
    FLUSH.request();
}

/// Whether `prefix` is a table's on a server that knows every entry stored under it
/// (`emptied`): a primary outside a cluster. The whole cache's and the query results' hold
/// keys that are not entries (the position, the epoch) or are flushed for other reasons.
fn keeps_record(ctx: &Context, prefix: &str) -> bool {
    let cache_prefix = current::cache_prefix();
    writable(ctx)
        && !cluster::enabled()
        && prefix != cache_prefix
        && prefix.strip_prefix(cache_prefix.as_str()) != Some(RESULT_TAG)
}

/// Deletes for at most `SLICE`; whether flushes are left for the next turn.
fn flush_slice(context: &Context) -> bool {
    let deadline = Instant::now() + SLICE;
    let finished: Vec<Flush> = {
        let mut active = ACTIVE.lock().unwrap();
        for flush in active.iter_mut() {
            while Instant::now() < deadline && step(context, flush) {}
        }
        let (done, rest): (Vec<Flush>, Vec<Flush>) =
            active.drain(..).partition(|f| f.dbs.is_empty());
        *active = rest;
        done
    };
    for flush in finished {
        context.log_notice(&format!(
            "pgcache: flush of {} done, {} entries dropped",
            String::from_utf8_lossy(&flush.prefix),
            flush.deleted
        ));
        bypass::end(&flush.prefix);
        let prefix = String::from_utf8_lossy(&flush.prefix);
        if let Some(epoch) = flush.epoch {
            emptied::flush_ended(&flush.prefix, epoch, keeps_record(context, &prefix));
        }
        if !flush.entries_only {
            generations::flush_ended(context, &prefix, &cache::dbs_with_keys(context));
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
    let prefix = &flush.prefix;
    let more = flush.cursor.step(ctx, db, |name| {
        if name.starts_with(prefix)
            && !(flush.entries_only && generations::is_generation_key(prefix, name))
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
