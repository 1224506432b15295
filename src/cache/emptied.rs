//! The tables whose key prefix this primary knows holds no entry, so a flush of one has
//! nothing to scan for.
//!
//! A table's flush deletes its entries by scanning the whole keyspace, a slice at a time.
//! A table pgcache cannot name rows of (no primary key) has its entries flushed on every
//! change (`flush::start_entries` for an insert), and one that every transaction inserts
//! into then keeps a scan of the whole keyspace running for nothing when its rows are never
//! READ (its queries' results live under their own prefix and end with its generation or
//! leave the index). So a flush that ends records its table as empty (no fill
//! is stored under a prefix while it is flushed; PGCACHE.WRITE may store behind the scan,
//! and then the flush records nothing), any entry stored under it since forgets that
//! (`entries::write`, through which every entry goes; the table's generation keys are
//! deleted when its generations end, not by the scan), and a flush of a table still
//! recorded skips the scan. Keys written under pgcache's prefix by other commands (SET,
//! RESTORE, COPY, MOVE) are not pgcache's entries, and a skipped flush leaves them.
//!
//! Only a primary outside a cluster keeps the record: a replica's entries come from its
//! primary, and a cluster node's from other nodes with their slots. Whatever else can put
//! entries in the keyspace behind pgcache's back, or move them where a flush under way has
//! scanned already (a load from disk, a promotion, a demotion, SWAPDB), and an unload
//! forget it all. Main thread only.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Default)]
struct Record {
    /// Prefixes known to hold no entry.
    empty: Vec<Vec<u8>>,
    /// The prefixes of flushes under way, each with whether an entry was stored under it
    /// since the flush began (PGCACHE.WRITE stores during a flush, behind its scan: that
    /// flush ends with an entry left).
    flushing: Vec<(Vec<u8>, bool)>,
}

static RECORD: Mutex<Record> = Mutex::new(Record {
    empty: Vec::new(),
    flushing: Vec::new(),
});
/// Whether `RECORD` holds any prefix: every entry stored checks this, not the lock.
static ANY: AtomicBool = AtomicBool::new(false);
/// Bumped whenever the record is forgotten: a flush that ran across that records nothing.
static EPOCH: AtomicU64 = AtomicU64::new(0);

fn with_record<R>(f: impl FnOnce(&mut Record) -> R) -> R {
    let mut record = RECORD.lock().unwrap_or_else(|p| p.into_inner());
    let result = f(&mut record);
    ANY.store(
        !record.empty.is_empty() || !record.flushing.is_empty(),
        Ordering::Relaxed,
    );
    result
}

/// A flush of the table whose keys start with `prefix` began: what it can record when it
/// ends (`flush_ended`).
pub fn flush_began(prefix: &[u8]) -> u64 {
    with_record(|r| {
        r.empty.retain(|p| p != prefix);
        r.flushing.push((prefix.to_vec(), false));
    });
    EPOCH.load(Ordering::Relaxed)
}

/// The flush of `prefix` that began at `epoch` ended, having deleted every entry it met:
/// the table holds none (recorded when `keep`: this server still keeps the record),
/// unless one was stored under it meanwhile or the record was forgotten since.
pub fn flush_ended(prefix: &[u8], epoch: u64, keep: bool) {
    with_record(|r| {
        let Some(at) = r.flushing.iter().position(|(p, _)| p == prefix) else {
            return;
        };
        let (_, stored_meanwhile) = r.flushing.swap_remove(at);
        if keep
            && !stored_meanwhile
            && EPOCH.load(Ordering::Relaxed) == epoch
            && !r.empty.iter().any(|p| p == prefix)
        {
            r.empty.push(prefix.to_vec());
        }
    });
}

/// Whether the table whose keys start with `prefix` is known to hold no entry.
pub fn is_empty(prefix: &[u8]) -> bool {
    ANY.load(Ordering::Relaxed) && with_record(|r| r.empty.iter().any(|p| p == prefix))
}

/// An entry was stored under `key`: its table may hold entries again.
pub fn stored(key: &[u8]) {
    if ANY.load(Ordering::Relaxed) {
        with_record(|r| {
            r.empty.retain(|p| !key.starts_with(p));
            for (prefix, stored_meanwhile) in &mut r.flushing {
                *stored_meanwhile |= key.starts_with(prefix);
            }
        });
    }
}

/// Entries may have arrived that pgcache did not store (a load, a promotion, a demotion, a
/// swap of DBs, an unload): no table is known to be empty, and no flush under way may
/// record one.
pub fn forget_all() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
    with_record(|r| r.empty.clear());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flushed(prefix: &[u8]) {
        let epoch = flush_began(prefix);
        flush_ended(prefix, epoch, true);
    }

    // One test: the record is process-wide.
    #[test]
    fn a_table_is_empty_from_its_flush_until_an_entry_is_stored_under_it() {
        forget_all();
        assert!(!is_empty(b"pg_cache:users:"));
        flushed(b"pg_cache:users:");
        flushed(b"pg_cache:users:");
        flushed(b"pg_cache:orders:");
        assert!(is_empty(b"pg_cache:users:"));
        assert!(!is_empty(b"pg_cache:user:"), "only the prefix recorded");
        stored(b"pg_cache:~q:abc");
        assert!(is_empty(b"pg_cache:users:"));
        stored(b"pg_cache:users:{\"id\":1}");
        assert!(!is_empty(b"pg_cache:users:"));
        assert!(is_empty(b"pg_cache:orders:"));

        // An entry stored while a flush runs (behind its scan) is left when it ends.
        let epoch = flush_began(b"pg_cache:users:");
        stored(b"pg_cache:users:{\"id\":2}");
        flush_ended(b"pg_cache:users:", epoch, true);
        assert!(!is_empty(b"pg_cache:users:"));
        // A flush across a forgetting (a load, SWAPDB) records nothing.
        let epoch = flush_began(b"pg_cache:users:");
        forget_all();
        assert!(!is_empty(b"pg_cache:orders:"));
        flush_ended(b"pg_cache:users:", epoch, true);
        assert!(!is_empty(b"pg_cache:users:"));
        // A flush that begins forgets the table's record until it ends.
        flushed(b"pg_cache:users:");
        let epoch = flush_began(b"pg_cache:users:");
        assert!(!is_empty(b"pg_cache:users:"));
        flush_ended(b"pg_cache:users:", epoch, true);
        assert!(is_empty(b"pg_cache:users:"));
        // A server that stopped keeping the record (demoted) records nothing.
        let epoch = flush_began(b"pg_cache:orders:");
        flush_ended(b"pg_cache:orders:", epoch, false);
        assert!(!is_empty(b"pg_cache:orders:"));
        forget_all();
        assert!(!ANY.load(Ordering::Relaxed), "no flush is left under way");
    }
}
