//! Which cache entries must not be served right now, the hit path's one check: every entry
//! while the cache is *held* (nothing vouches for it yet: pgcache just loaded, data came from
//! disk, or the invalidation listener is not listening), and the entries under the prefix of
//! a flush under way (`flush`), so nothing cached before a flush is served while it deletes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// No entry may be served or filled (see `hold`).
static HELD: AtomicBool = AtomicBool::new(false);
/// The prefixes of the flushes under way; touched on the main thread only, so the mutex
/// is never contended.
static PREFIXES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// How many prefixes there are: the hit path's one check when there are none.
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Stops serving and filling every entry until `release`: the entries present may have
/// missed invalidations, and none can be checked until the listener listens again.
pub fn hold() {
    HELD.store(true, Ordering::SeqCst);
}

/// Serves and fills entries again (a flush of the untrusted ones, if any, has started).
pub fn release() {
    HELD.store(false, Ordering::SeqCst);
}

#[inline]
pub fn holding() -> bool {
    HELD.load(Ordering::Relaxed)
}

/// Entries under `prefix` are not served until `end(prefix)`. Main thread only.
pub fn begin(prefix: &[u8]) {
    PREFIXES.lock().unwrap().push(prefix.to_vec());
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Ends one `begin(prefix)`. Main thread only.
pub fn end(prefix: &[u8]) {
    let mut prefixes = PREFIXES.lock().unwrap();
    if let Some(at) = prefixes.iter().position(|p| p == prefix) {
        prefixes.swap_remove(at);
        COUNT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a cache key must not be served: the cache is held, or a flush covering the key
/// is under way. Main thread only.
#[inline(always)]
pub fn bypassed(key: &[u8]) -> bool {
    holding() || COUNT.load(Ordering::Relaxed) > 0 && under_a_flush(key)
}

#[cold]
fn under_a_flush(key: &[u8]) -> bool {
    PREFIXES.lock().unwrap().iter().any(|p| key.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_bypasses_its_keys_until_it_ends() {
        begin(b"pg_cache:users:");
        begin(b"pg_cache:users:");
        assert!(bypassed(b"pg_cache:users:{\"id\":1}"));
        assert!(!bypassed(b"pg_cache:orders:{\"id\":1}"));
        end(b"pg_cache:users:");
        assert!(
            bypassed(b"pg_cache:users:{\"id\":1}"),
            "one flush still runs"
        );
        end(b"pg_cache:users:");
        assert!(!bypassed(b"pg_cache:users:{\"id\":1}"));
    }
}
