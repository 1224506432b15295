//! Generations: one key per table (`<table's key prefix>~gen`, beside its rows' entries),
//! holding a random 64-bit value. Every result key is built from the generations of the
//! tables its statement reads (`key`), taken on the main thread before the statement runs.
//! When the change feed applies a change to a table, or a flush of the table starts, its
//! generation ends (its key is deleted); the next read creates a new random one. A flush of
//! the whole cache forgets every generation this process knows when it starts, serves no
//! result until its scan has deleted every entry present then, and forgets them again when
//! it ends (the scan deleted their keys). Results built under an ended value are never
//! looked up again (they expire with their TTL): no result can be served after a change to a
//! table it read was applied, and a fill whose statement ran across a change lands under a
//! key nobody builds any more. The keys are ordinary keys, so the RDB, the AOF and the
//! replicas carry them with the results they vouch for.
//!
//! Row-precise statements (`precision`) build their keys from their table's row generation
//! (`~rgen`) instead, which changes only when the table changes as a whole (a flush, a
//! TRUNCATE): their results are dropped one by one through the index (`membership`). That
//! index lives in this process's memory, so a row generation is valid only on the primary
//! that made it: it starts with the process's random epoch, and a primary takes a row
//! generation it finds in the keyspace only if it bears its epoch (after a restart, a load
//! from disk or a promotion it makes a new one, and every result no index of its covers
//! becomes unreachable); a replica takes its primary's, when it bears the epoch its primary
//! published last (`<source's key prefix>~epoch`), so a primary that restarted or a replica
//! promoted disowns, on every replica too, what the old index covered. An epoch taken in a
//! server event (a promotion, a load, FLUSHDB, SWAPDB) is published by a task on the next
//! turn of the event loop (`main_thread::writes_waiting`), in the same timer callback as any
//! invalidation applied then, or before it (replicas get one callback's writes together); a
//! command that makes a row generation before then publishes the epoch itself.
//!
//! A primary also keeps the generations it read or made in memory (`KNOWN`), so a hit reads
//! no generation key: only this process ends them (`end`), and whatever else can make the
//! keys untrue (a flush of everything, its end, the end of a table's flush, FLUSHDB, SWAPDB, a
//! load, a role change, MODULE UNLOAD) forgets them. A key deleted or evicted behind its back leaves the primary's generation standing,
//! which its own index and feed still cover; its replicas then find no generation and serve
//! no result of it.
//!
//! On a cluster node the generations live in the process only (`KNOWN`, no keys): a key
//! would have to sit in a slot the node serves, and resharding moves slots, with their keys,
//! between nodes whose feeds have applied different changes. A node builds keys only from
//! generations it made itself, so a result that arrives with a slot (or comes back with one)
//! is never built again, and a restart or a promotion starts without cached results, and a
//! replica holds none.
//!
//! Each source has its own epoch (`Epoch`), published under its own key prefix: its index
//! is its own, and forgetting one source's (a DDL in its database) leaves another's true.
//! `KNOWN` is one map for every source: generation key names carry their source's prefix.

use crate::config::MAX_TTL_SECONDS;
use crate::config::current;
use crate::model::source::{Parts, Scope, SourceId};
use crate::pg::schema::TableSchema;
use crate::query::hex;
use crate::redis::main_thread::{self, Task};
use crate::redis::role::writable;
use crate::redis::{cluster, keyspace};
use redis_module::{CallOptionsBuilder, CallResult, Context};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A generation's value as its key holds it: 16 lowercase hex digits (64 random bits: no
/// client chooses them, and a table would need billions of changes before one came back),
/// copied into result keys as they are.
pub type Generation = [u8; 16];

/// What follows a table's (or the cache's) key prefix in its generation key's name.
const SUFFIX: &str = "~gen";
/// The same, for its row generation.
const ROW_SUFFIX: &str = "~rgen";

/// The generation key of the table whose keys start with `prefix`.
pub fn key_name(prefix: &str) -> String {
    format!("{prefix}{SUFFIX}")
}

/// The row generation key of the table whose keys start with `prefix`.
pub fn row_key_name(prefix: &str) -> String {
    format!("{prefix}{ROW_SUFFIX}")
}

/// Whether `key` is the generation key or the row generation key of the table whose keys
/// start with `prefix`.
pub fn is_generation_key(prefix: &[u8], key: &[u8]) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest == SUFFIX.as_bytes() || rest == ROW_SUFFIX.as_bytes())
}

/// Generation key name → the generation read or made under it in each DB.
type Made = HashMap<String, Vec<(i32, Generation)>>;

/// The row generations this process made for the table whose keys start with `prefix`,
/// one per DB: a fill whose key holds one was built under the index's cover. (A row
/// generation `KNOWN` holds bears this process's epoch, which changes whenever `KNOWN` is
/// forgotten: this process made it.)
pub fn mine_for(prefix: &str) -> Vec<Generation> {
    let name = row_key_name(prefix);
    with_known(|known| {
        known
            .get(&name)
            .map(|all| all.iter().map(|(_, g)| *g).collect())
            .unwrap_or_default()
    })
}

/// Forgets every generation of `source` this process knows, and takes a new epoch for
/// it: its index is gone (every cached result was dropped, this server became a replica,
/// loaded data, was promoted, a DB was flushed or swapped, the module unloads). The keys
/// may no longer say what was known of them (and a cluster node's flush of everything has
/// no keys to scan): generations are read or made afresh. A primary publishes its new epoch
/// in each of `dbs`.
pub fn forget_all(ctx: &Context, source: SourceId, dbs: &[i32]) {
    let scope = current::scope(source);
    with_known(|known| known.retain(|name, _| !scope.covers(name.as_bytes())));
    EPOCHS.of(source).renew();
    publish_epoch(ctx, source, dbs);
}

/// Forgets every generation of `source` this process knows, writing nothing: its index is
/// being dropped with its number (a named source removed, or unloaded), and a source served
/// again under its name starts a new index with a new epoch, so it must read or make its
/// generations afresh. (Kept, they would lead it to results the old index covered, which no
/// change would reach any more.)
pub fn forget_known(source: SourceId) {
    let scope = current::scope(source);
    with_known(|known| known.retain(|name, _| !scope.covers(name.as_bytes())));
}

/// A flush of the keys in `scope` (a table's, or a source's whole cache) ended: its scan
/// deleted the generation keys it met, some made while it ran. What this process knows of
/// them is forgotten, so they are made again and reach the replicas; the epoch, deleted by a
/// flush of everything, is published again in each of `dbs`.
pub fn flush_ended(ctx: &Context, source: SourceId, scope: &Scope, dbs: &[i32]) {
    with_known(|known| known.retain(|name, _| !scope.covers(name.as_bytes())));
    if *scope == current::scope(source) {
        publish_epoch(ctx, source, dbs);
    }
}

/// Whether `key` (a row-precise result's, of `tables`) was built under row generations
/// this process made and has not ended: a fill under an ended one lands where nobody
/// looks.
pub fn current_row_key(tables: &[&Arc<TableSchema>], key: &str) -> bool {
    // A row-precise key ends with `:<generation>` of each table, in order.
    let Some(tail) = key
        .len()
        .checked_sub(17 * tables.len())
        .and_then(|at| key.get(at..))
    else {
        return false;
    };
    tables.iter().enumerate().all(|(n, table)| {
        let generation = &tail.as_bytes()[17 * n + 1..17 * (n + 1)];
        mine_for(&table.key_prefix).iter().any(|g| g == generation)
    })
}

/// Appends `:` and the current generation under each of `names` (generation keys) to
/// `key`, in that order. A missing one is created when this server may write (a primary);
/// false when one is missing and cannot be (a replica whose primary has not created it:
/// nothing cached can match).
pub fn append_current(ctx: &Context, source: SourceId, names: &[String], key: &mut String) -> bool {
    for name in names {
        let Some(generation) = current(ctx, source, name) else {
            return false;
        };
        key.push(':');
        key.push_str(std::str::from_utf8(&generation).unwrap_or_default());
    }
    true
}

/// The generation under `name` (a key of `source`) in the context's DB. A hit finds it in
/// `KNOWN` (on a primary); otherwise a table generation found in the keyspace is taken on
/// any server, and a row generation of the source's epoch too (a demotion changes the
/// epoch).
fn current(ctx: &Context, source: SourceId, name: &str) -> Option<Generation> {
    let db = keyspace::selected_db(ctx);
    if let Some(known) = known(name, db) {
        return Some(known);
    }
    let found = if cluster::enabled() {
        None
    } else {
        keyspace::with_name(ctx, name.as_bytes(), |key| {
            keyspace::read_string(ctx, key, parse)
        })
        .flatten()
    };
    let writable = writable(ctx);
    if !name.ends_with(ROW_SUFFIX) {
        if !writable {
            return found;
        }
        let generation = match found {
            Some(found) => found,
            None => create(ctx, name, None)?,
        };
        remember(name, db, generation);
        return Some(generation);
    }
    if !writable {
        // A replica takes a row generation of its primary's current epoch only: one its
        // primary's index covers.
        return found.filter(|g| published_epoch(ctx, source).is_some_and(|e| g[..8] == e));
    }
    let epoch = EPOCHS.of(source).hex();
    let generation = match found {
        Some(found) if found[..8] == epoch => found,
        _ => {
            if published_epoch(ctx, source) != Some(epoch) {
                publish_epoch(ctx, source, &[db]);
            }
            create(ctx, name, Some(epoch))?
        }
    };
    remember(name, db, generation);
    Some(generation)
}

/// Every source's row-generation epoch; the default source's inline.
static EPOCHS: Parts<Epoch> = Parts::new(Epoch::new());

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    EPOCHS.install(id, Epoch::new());
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    EPOCHS.forget_named(id);
}

/// A source's row-generation epoch: the first half of every row generation this process
/// makes for it, so the hit path tells its own from others' by comparing 8 bytes. Random,
/// made anew when the source's index is forgotten (a demotion, a flush of everything).
pub struct Epoch {
    /// The epoch (32 random bits), 0 before the first is chosen.
    value: AtomicU64,
    /// The DBs whose epoch key waits for `PUBLISH_EPOCH` (`publish_epoch` where writes wait).
    waits_in: Mutex<Vec<i32>>,
}

impl Epoch {
    /// None chosen yet (const, so a `static` holds the default source's).
    pub const fn new() -> Epoch {
        Epoch {
            value: AtomicU64::new(0),
            waits_in: Mutex::new(Vec::new()),
        }
    }

    /// The epoch as 8 hex digits, chosen now if none was.
    fn hex(&self) -> [u8; 8] {
        let mut current = self.value.load(Relaxed);
        if current == 0 {
            current = self.renew();
        }
        hex::encode(&(current as u32).to_be_bytes())
    }

    /// Chooses a new epoch (never 0, never the one before).
    fn renew(&self) -> u64 {
        let before = self.value.load(Relaxed);
        loop {
            let mut random = [0u8; 4];
            let _ = openssl::rand::rand_bytes(&mut random);
            let epoch = u64::from(u32::from_be_bytes(random));
            if epoch != 0 && epoch != before {
                self.value.store(epoch, Relaxed);
                return epoch;
            }
        }
    }
}

/// The key holding the epoch of the primary's row generations of `source`, for its
/// replicas (in each DB that has row generations).
fn epoch_key(source: SourceId) -> String {
    format!("{}~epoch", current::key_prefix(source))
}

/// The epoch of `source` the keyspace holds (the primary's), in the context's DB.
fn published_epoch(ctx: &Context, source: SourceId) -> Option<[u8; 8]> {
    keyspace::with_name(ctx, epoch_key(source).as_bytes(), |key| {
        keyspace::read_string(ctx, key, |value| <[u8; 8]>::try_from(value).ok())
    })
    .flatten()
}

/// Writes this process's epoch of `source` to the keyspace of each of `dbs` (a primary
/// only; replicated): its replicas take row generations of this epoch only.
pub fn publish_epoch(ctx: &Context, source: SourceId, dbs: &[i32]) {
    // A cluster node's replicas take no generation (it keeps no keys of them).
    if cluster::enabled() || !writable(ctx) {
        return;
    }
    let part = EPOCHS.of(source);
    if main_thread::writes_wait() {
        part.waits_in.lock().unwrap().extend_from_slice(dbs);
        PUBLISH_EPOCH.request();
        return;
    }
    let epoch = part.hex();
    let text = std::str::from_utf8(&epoch).unwrap_or_default();
    let expires_at = (crate::model::event::now_ms() + u128::from(MAX_TTL_SECONDS) * 1000) as i64;
    let name = epoch_key(source);
    keyspace::in_each_db(ctx, dbs.iter().copied(), |_| {
        keyspace::with_name(ctx, name.as_bytes(), |key| {
            keyspace::set_until(ctx, key, text, expires_at)
        });
    });
}

/// Publishes the epochs waiting, every source's (a source with none waiting has nothing to
/// write).
static PUBLISH_EPOCH: Task = Task::new("publishing the index epoch", |ctx| {
    EPOCHS.each(|source, epoch| {
        let mut dbs = std::mem::take(&mut *epoch.waits_in.lock().unwrap());
        if dbs.is_empty() {
            return;
        }
        dbs.sort_unstable();
        dbs.dedup();
        publish_epoch(ctx, source, &dbs);
    });
    false
});

/// A new random generation under `name`, replicated; a row generation starts with
/// `epoch`.
fn create(ctx: &Context, name: &str, epoch: Option<[u8; 8]>) -> Option<Generation> {
    let mut random = [0u8; 8];
    openssl::rand::rand_bytes(&mut random).ok()?;
    let mut generation = hex::encode(&random);
    if let Some(epoch) = epoch {
        generation[..8].copy_from_slice(&epoch);
    }
    if cluster::enabled() {
        return Some(generation);
    }
    let expires_at = (crate::model::event::now_ms() + u128::from(MAX_TTL_SECONDS) * 1000) as i64;
    let text = std::str::from_utf8(&generation).ok()?;
    keyspace::with_name(ctx, name.as_bytes(), |key| {
        keyspace::set_until(ctx, key, text, expires_at)
    });
    Some(generation)
}

/// The generations a primary (or cluster node) read or made, by generation key name and
/// DB, true until this process ends them or forgets them all. Main thread.
static KNOWN: Mutex<Option<Made>> = Mutex::new(None);

fn with_known<R>(f: impl FnOnce(&mut Made) -> R) -> R {
    let mut guard = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

fn known(name: &str, db: i32) -> Option<Generation> {
    with_known(|known| {
        known
            .get(name)?
            .iter()
            .find(|(d, _)| *d == db)
            .map(|(_, g)| *g)
    })
}

fn remember(name: &str, db: i32, generation: Generation) {
    with_known(|known| {
        let all = known.entry(name.to_string()).or_default();
        all.retain(|(d, _)| *d != db);
        all.push((db, generation));
    });
}

/// A generation key's value, if it is one (anything else, written by hand, is none).
fn parse(value: &[u8]) -> Option<Generation> {
    let generation: Generation = value.try_into().ok()?;
    generation
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        .then_some(generation)
}

/// Ends the generation and the row generation of the table whose keys start with `prefix`, in each of `dbs`: every result that read it becomes unreachable.
/// Replicated, as DEL.
pub fn end(ctx: &Context, prefix: &str, dbs: &[i32]) {
    if !writable(ctx) {
        return;
    }
    end_one(ctx, &key_name(prefix), dbs);
    end_one(ctx, &row_key_name(prefix), dbs);
}

/// Ends the generation of the table whose keys start with `prefix` (not its row
/// generation: rows of it changed, and the index drops the row-precise results they
/// affect), in each of `dbs`.
pub fn end_per_table(ctx: &Context, prefix: &str, dbs: &[i32]) {
    if writable(ctx) {
        end_one(ctx, &key_name(prefix), dbs);
    }
}

/// Ends the generation under `name`: its key goes, or on a cluster node its entry.
fn end_one(ctx: &Context, name: &str, dbs: &[i32]) {
    // In every DB: a DB without keys now may still have a fill in flight under it.
    let known = with_known(|known| known.remove(name)).is_some();
    if !cluster::enabled() {
        if known {
            // Its key may be gone (evicted, deleted by hand) while hits still used the
            // generation: the change is signalled all the same, so that a client keeping
            // results itself (CLIENT TRACKING on the generation key) drops them. Where the
            // key is there, its DEL signals it.
            signal_ended(ctx, name, dbs);
        }
        delete(ctx, name, dbs);
    }
}

/// Signals a change to the generation key `name` in each of `dbs` where it is gone.
fn signal_ended(ctx: &Context, name: &str, dbs: &[i32]) {
    keyspace::in_each_db(ctx, dbs.iter().copied(), |_| {
        keyspace::with_name(ctx, name.as_bytes(), |key| {
            if !keyspace::exists(ctx, key) {
                keyspace::signal_modified(ctx, key);
            }
        });
    });
}

/// Deletes the key `name` in each of `dbs` where it exists. Replicated, as DEL.
pub fn delete(ctx: &Context, name: &str, dbs: &[i32]) {
    let options = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    keyspace::in_each_db(ctx, dbs.iter().copied(), |_| {
        if keyspace::with_name(ctx, name.as_bytes(), |key| keyspace::exists(ctx, key)) {
            let deleted: CallResult = ctx.call_ext("DEL", &options, &[name]);
            if let Err(e) = deleted {
                ctx.log_warning(&format!(
                    "pgcache: DEL of {name} failed: {}",
                    e.to_utf8_string().unwrap_or_default()
                ));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_reads_back_as_written() {
        let generation = hex::encode(&[0xab, 1, 2, 3, 4, 5, 6, 0xff]);
        assert_eq!(parse(&generation), Some(generation));
        assert_eq!(parse(b"not a generation"), None);
        assert_eq!(parse(b"0123456789ABCDEF"), None);
        assert_eq!(key_name("pg_cache:users:"), "pg_cache:users:~gen");
        let prefix = b"pg_cache:users:";
        assert!(is_generation_key(prefix, b"pg_cache:users:~gen"));
        assert!(is_generation_key(prefix, b"pg_cache:users:~rgen"));
        assert!(!is_generation_key(prefix, b"pg_cache:users:{\"id\":1}"));
        assert!(!is_generation_key(prefix, b"pg_cache:users:~genx"));
        assert!(!is_generation_key(prefix, b"pg_cache:other:~gen"));
    }
}
