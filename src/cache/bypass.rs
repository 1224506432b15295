//! Which cache entries must not be served right now, the hit path's one check: every entry
//! of a source while its cache is *held* (nothing vouches for it yet: pgcache just loaded,
//! data came from disk, or the invalidation listener is not listening), and the entries in
//! the scope of a flush under way (`flush`), so nothing cached before a flush is served
//! while it deletes.
//!
//! Holding is per source (`of`): a source whose feed is away must not turn another's hits
//! into misses. The flushes' scopes are one list for every source: each scope covers its
//! own source's keys only.

use crate::model::source::{PartRef, Parts, Scope, SourceId};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Every source's hold; the default source's inline, so a hit reads it as it read the
/// static before.
static HOLDS: Parts<Hold> = Parts::new(Hold::new());

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    HOLDS.install(id, Hold::new());
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    HOLDS.forget_named(id);
}

/// Whether source `id`'s entries are held.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, Hold> {
    HOLDS.of(id)
}

/// Whether one source's entries may be served or filled.
pub struct Hold {
    /// No entry of the source may be served or filled (see `hold`).
    held: AtomicBool,
    /// Why, for HEALTH (`cache::serving`).
    why: Mutex<&'static str>,
}

impl Hold {
    /// Not held (const, so a `static` holds the default source's).
    pub const fn new() -> Hold {
        Hold {
            held: AtomicBool::new(false),
            why: Mutex::new(""),
        }
    }

    /// Stops serving and filling the source's entries until `release`: those present may
    /// have missed invalidations, and none can be checked until the listener listens again.
    /// `why` says so to an operator (HEALTH).
    pub fn hold(&self, why: &'static str) {
        *self.why.lock().unwrap_or_else(|e| e.into_inner()) = why;
        self.held.store(true, Ordering::SeqCst);
    }

    /// Why the source's entries are held, if they are.
    pub fn held_because(&self) -> Option<&'static str> {
        self.holding()
            .then(|| *self.why.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Serves and fills entries again (a flush of the untrusted ones, if any, has started).
    pub fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
    }

    #[inline]
    pub fn holding(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }
}

/// The scopes of the flushes under way; touched on the main thread only, so the mutex is
/// never contended.
static SCOPES: Mutex<Vec<Scope>> = Mutex::new(Vec::new());
/// How many scopes there are: the hit path's one check when there are none.
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Entries in `scope` are not served until `end(scope)`. Main thread only.
pub fn begin(scope: &Scope) {
    SCOPES.lock().unwrap().push(scope.clone());
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Ends one `begin(scope)`. Main thread only.
pub fn end(scope: &Scope) {
    let mut scopes = SCOPES.lock().unwrap();
    if let Some(at) = scopes.iter().position(|s| s == scope) {
        scopes.swap_remove(at);
        COUNT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a cache key of `source` must not be served: its cache is held, or a flush
/// covering the key is under way. Main thread only.
#[inline(always)]
pub fn bypassed(source: SourceId, key: &[u8]) -> bool {
    of(source).holding() || COUNT.load(Ordering::Relaxed) > 0 && under_a_flush(key)
}

#[cold]
fn under_a_flush(key: &[u8]) -> bool {
    SCOPES.lock().unwrap().iter().any(|s| s.covers(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the scopes under way are the process's, shared by parallel tests.
    #[test]
    fn flush_scope_of_default_spares_named_keys() {
        let users = Scope::prefix("pg_cache:users:");
        begin(&users);
        begin(&users);
        assert!(bypassed(SourceId::DEFAULT, b"pg_cache:users:{\"id\":1}"));
        assert!(!bypassed(SourceId::DEFAULT, b"pg_cache:orders:{\"id\":1}"));
        end(&users);
        assert!(
            bypassed(SourceId::DEFAULT, b"pg_cache:users:{\"id\":1}"),
            "one flush still runs"
        );
        end(&users);
        assert!(!bypassed(SourceId::DEFAULT, b"pg_cache:users:{\"id\":1}"));
        // A flush of the default source's whole cache bypasses its keys, not a named
        // source's.
        let everything = Scope::source("pg_cache:", None);
        begin(&everything);
        assert!(bypassed(SourceId::DEFAULT, b"pg_cache:users:{\"id\":1}"));
        assert!(bypassed(SourceId::DEFAULT, b"pg_cache:~epoch"));
        assert!(!bypassed(
            SourceId::DEFAULT,
            b"pg_cache:@analytics:users:{\"id\":1}"
        ));
        end(&everything);
        assert!(!bypassed(SourceId::DEFAULT, b"pg_cache:users:{\"id\":1}"));
    }

    #[test]
    fn holds_are_per_source() {
        let (a, b) = (Hold::new(), Hold::new());
        a.hold("a test");
        assert!(a.holding() && !b.holding());
        assert_eq!((a.held_because(), b.held_because()), (Some("a test"), None));
        a.release();
        assert!(!a.holding());
    }
}
