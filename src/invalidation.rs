//! Applying PostgreSQL's invalidations on the Redis main thread. The listener thread hands
//! each set of changes over through a mailbox and wakes the event loop
//! (`RedisModule_EventLoopAddOneShot`, thread-safe); there a zero-delay timer applies them
//! with a regular module context, so the deletions are replicated like any cache write.
//! The listener never takes the Redis lock, so it neither waits for a busy main thread nor
//! can deadlock MODULE UNLOAD.

use crate::cache;
use crate::events::{self, EventKind};
use crate::flush;
use crate::key::CanonicalPk;
use crate::pg::schema::TableSchema;
use crate::stats;
use crate::tunables;
use redis_module::{Context, raw};
use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

/// What a set of notifications asks for.
#[derive(Default)]
pub struct Changes {
    deletes: Vec<(Arc<TableSchema>, CanonicalPk)>,
    flushes: Vec<Arc<TableSchema>>,
    /// Notifications may have been lost: drop everything.
    flush_all: bool,
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

    /// After the listener reconnects: nothing cached before now can be trusted, so every
    /// entry is dropped (without blocking the event loop) and none is served meanwhile.
    pub fn everything() -> Changes {
        Changes {
            flush_all: true,
            ..Changes::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.flushes.is_empty() && !self.flush_all
    }
}

/// A context tied to the module (timers made through it are pgcache's), used on the main
/// thread only. Made at load, freed at unload.
static MODULE_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());
static MAILBOX: Mutex<Vec<Changes>> = Mutex::new(Vec::new());
/// A wake-up of the main thread is under way (one-shot or timer not yet run).
static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// At load, with the load context.
pub fn init(ctx: &Context) {
    // SAFETY: OnLoad context; the result is freed by `deinit`.
    let detached = unsafe { raw::RedisModule_GetDetachedThreadSafeContext.unwrap()(ctx.ctx) };
    MODULE_CTX.store(detached, Ordering::SeqCst);
}

/// Whether changes are waiting for the main thread (unloading must wait for them).
pub fn pending() -> bool {
    SCHEDULED.load(Ordering::SeqCst)
}

/// At unload, after the listener has stopped and nothing is pending.
pub fn deinit() {
    let ctx = MODULE_CTX.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !ctx.is_null() {
        // SAFETY: made by `init`, no longer used by anyone.
        unsafe { raw::RedisModule_FreeThreadSafeContext.unwrap()(ctx) };
    }
}

/// Queues changes for the main thread. Called by the listener thread.
pub fn submit(changes: Changes) {
    if changes.is_empty() {
        return;
    }
    MAILBOX.lock().unwrap().push(changes);
    if !SCHEDULED.swap(true, Ordering::SeqCst) {
        // SAFETY: thread-safe by contract; the callback takes no data.
        unsafe {
            raw::RedisModule_EventLoopAddOneShot.unwrap()(
                Some(on_event_loop),
                std::ptr::null_mut(),
            );
        }
    }
}

/// On the main thread (lock held): hand over to a timer, whose context replicates.
extern "C" fn on_event_loop(_data: *mut c_void) {
    let ctx = MODULE_CTX.load(Ordering::SeqCst);
    // SAFETY: main thread with the lock; the module context lives until unload, which
    // waits for `pending()` to clear.
    unsafe {
        raw::RedisModule_CreateTimer.unwrap()(ctx, 0, Some(on_timer), std::ptr::null_mut());
    }
}

extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    crate::error::guard("applying invalidations", || apply_mailbox(ctx));
}

fn apply_mailbox(ctx: *mut raw::RedisModuleCtx) {
    let context = Context::new(ctx);
    // Cleared before draining: changes queued from now on schedule a new wake-up.
    SCHEDULED.store(false, Ordering::SeqCst);
    let batches = std::mem::take(&mut *MAILBOX.lock().unwrap());
    for changes in batches {
        apply(&context, &changes);
    }
}

fn apply(ctx: &Context, changes: &Changes) {
    if changes.flush_all {
        ctx.log_warning(
            "pgcache: invalidations may have been missed while the listener was disconnected; \
             dropping every cached row",
        );
        flush::start(ctx, &tunables::cache_prefix());
    }
    for db in cache::filled_dbs() {
        // SAFETY: main thread; the timer's context is ours for this call.
        unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db) };
        for (schema, pk) in &changes.deletes {
            cache::delete(ctx, &schema.cache_key(&pk.json));
        }
    }
    stats::INVALIDATIONS_BY_POSTGRES.add(changes.deletes.len() as u64);
    for (schema, pk) in &changes.deletes {
        events::publish(ctx, EventKind::Invalidate, &schema.display, &pk.json);
    }
    for schema in &changes.flushes {
        flush::start(ctx, &schema.key_prefix);
    }
}
