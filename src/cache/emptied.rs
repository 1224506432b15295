//! The tables whose key prefix this primary knows holds no entry, so a flush of one has
//! nothing to scan for.
//!
//! A table's flush deletes its entries by scanning the whole keyspace, a slice at a time.
//! A table pgcache cannot name rows of (no primary key) is flushed on every change, and one
//! that every transaction inserts into then keeps a scan of the whole keyspace running for
//! nothing when its rows are never READ (its queries' results live under their own prefix
//! and end with its generation). So a flush that ends records its table as empty (no fill
//! is stored under a prefix while it is flushed: none is left when it ends), any entry
//! stored under it since forgets that (`entries::write`, through which every entry goes),
//! and a flush of a table still recorded skips the scan.
//!
//! Only a primary outside a cluster keeps the record: a replica's entries come from its
//! primary, and a cluster node's from other nodes with their slots. Whatever else can put
//! entries in the keyspace behind pgcache's back (a load from disk, a promotion, a
//! demotion) forgets it all. Main thread only.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static EMPTY: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Whether `EMPTY` holds any prefix: every entry stored checks this, not the lock.
static ANY: AtomicBool = AtomicBool::new(false);

fn with_empty<R>(f: impl FnOnce(&mut Vec<Vec<u8>>) -> R) -> R {
    let mut empty = EMPTY.lock().unwrap_or_else(|p| p.into_inner());
    let result = f(&mut empty);
    ANY.store(!empty.is_empty(), Ordering::Relaxed);
    result
}

/// The flush of the table whose keys start with `prefix` ended: none of its entries is left.
pub fn recorded(prefix: &[u8]) {
    with_empty(|empty| {
        if !empty.iter().any(|p| p == prefix) {
            empty.push(prefix.to_vec());
        }
    });
}

/// Whether the table whose keys start with `prefix` is known to hold no entry.
pub fn is_empty(prefix: &[u8]) -> bool {
    ANY.load(Ordering::Relaxed) && with_empty(|empty| empty.iter().any(|p| p == prefix))
}

/// An entry was stored under `key`: its table may hold entries again.
pub fn stored(key: &[u8]) {
    if ANY.load(Ordering::Relaxed) {
        with_empty(|empty| empty.retain(|p| !key.starts_with(p)));
    }
}

/// Entries may have arrived that pgcache did not store: no table is known to be empty.
pub fn forget_all() {
    with_empty(Vec::clear);
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the record is process-wide.
    #[test]
    fn a_table_is_empty_from_its_flush_until_an_entry_is_stored_under_it() {
        forget_all();
        assert!(!is_empty(b"pg_cache:users:"));
        recorded(b"pg_cache:users:");
        recorded(b"pg_cache:users:");
        recorded(b"pg_cache:orders:");
        assert!(is_empty(b"pg_cache:users:"));
        assert!(!is_empty(b"pg_cache:user:"), "only the prefix recorded");
        stored(b"pg_cache:~q:abc");
        assert!(is_empty(b"pg_cache:users:"));
        stored(b"pg_cache:users:{\"id\":1}");
        assert!(!is_empty(b"pg_cache:users:"));
        assert!(is_empty(b"pg_cache:orders:"));
        forget_all();
        assert!(!is_empty(b"pg_cache:orders:"));
        assert!(!ANY.load(Ordering::Relaxed));
    }
}
