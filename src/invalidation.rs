//! Applying PostgreSQL's invalidations: the listener thread takes the Redis lock, deletes
//! the named entries in every DB pgcache has filled (replicated, like any cache write) and
//! publishes `cache_invalidate` events.

use crate::cache;
use crate::events::{self, EventKind};
use crate::flush;
use crate::key::CanonicalPk;
use crate::pg::schema::TableSchema;
use crate::tunables;
use redis_module::{Context, raw};
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

/// The listener's context: detached from any client but tied to the module (timers created
/// through it belong to pgcache). Made at load, freed at unload after the listener stopped.
static LISTENER_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// Makes the listener's context. At load, with the load context.
pub fn init(ctx: &Context) {
    // SAFETY: OnLoad context; the result is freed by `deinit`.
    let detached = unsafe { raw::RedisModule_GetDetachedThreadSafeContext.unwrap()(ctx.ctx) };
    LISTENER_CTX.store(detached, Ordering::SeqCst);
}

/// Frees the listener's context. At unload, after the listener thread has ended.
pub fn deinit() {
    let ctx = LISTENER_CTX.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !ctx.is_null() {
        // SAFETY: made by `init`, no longer used by anyone.
        unsafe { raw::RedisModule_FreeThreadSafeContext.unwrap()(ctx) };
    }
}

/// Runs `f` with the Redis lock held, from the listener thread. Never blocks on the lock:
/// it retries, giving up if `stopping` says so (MODULE UNLOAD holds the lock while it waits
/// for this thread to end).
fn with_lock(stopping: fn() -> bool, f: impl FnOnce(&Context)) -> bool {
    let ctx = LISTENER_CTX.load(Ordering::SeqCst);
    if ctx.is_null() {
        return false;
    }
    // SAFETY: the listener's own context, locked before use and unlocked after.
    unsafe {
        while raw::RedisModule_ThreadSafeContextTryLock.unwrap()(ctx) != raw::REDISMODULE_OK as i32
        {
            if stopping() {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        f(&Context::new(ctx));
        raw::RedisModule_ThreadSafeContextUnlock.unwrap()(ctx);
    }
    true
}

/// What a set of notifications asks for.
#[derive(Default)]
pub struct Changes {
    deletes: Vec<(Arc<TableSchema>, CanonicalPk)>,
    flushes: Vec<Arc<TableSchema>>,
}

impl Changes {
    pub fn delete(&mut self, schema: Arc<TableSchema>, pk: CanonicalPk) {
        self.deletes.push((schema, pk));
    }

    pub fn flush(&mut self, schema: Arc<TableSchema>) {
        if !self.flushes.iter().any(|s| s.name == schema.name) {
            self.flushes.push(schema);
        }
    }
}

/// Applies the changes under the Redis lock. Called by the listener thread.
pub fn apply_from_thread(changes: Changes, stopping: fn() -> bool) {
    if changes.deletes.is_empty() && changes.flushes.is_empty() {
        return;
    }
    with_lock(stopping, |ctx| {
        for db in cache::filled_dbs() {
            // SAFETY: the lock is held; the context is ours.
            unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db) };
            for (schema, pk) in &changes.deletes {
                cache::delete(ctx, &schema.cache_key(&pk.json));
            }
        }
        for (schema, pk) in &changes.deletes {
            events::publish(ctx, EventKind::Invalidate, &schema.display, &pk.json);
        }
        for schema in &changes.flushes {
            flush::start(ctx, &schema.key_prefix);
        }
    });
}

/// After the listener reconnects: nothing cached before now can be trusted, so every entry
/// is dropped (without blocking the event loop) and none is served meanwhile.
pub fn distrust_everything(stopping: fn() -> bool) {
    with_lock(stopping, |ctx| {
        ctx.log_warning(
            "pgcache: invalidations may have been missed while the listener was disconnected; \
             dropping every cached row",
        );
        flush::start(ctx, &tunables::cache_prefix());
    });
}
