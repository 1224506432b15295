//! The keyspace through the module API: key names as Redis holds them, string values read in
//! place, a string stored with an absolute expiry, and the DBs a context may switch between.
//! Main thread only: every function takes the command's (or callback's) context, whose
//! client decides the selected DB.

use crate::redis::args::Arg;
use redis_module::{Context, raw};
use std::marker::PhantomData;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicI32, Ordering};

/// A key's name as Redis holds it, live while this is.
#[derive(Clone, Copy)]
pub struct Key<'a>(*mut raw::RedisModuleString, PhantomData<&'a ()>);

impl<'a> Key<'a> {
    /// A command's argument, opened as it is (no copy of its name).
    #[inline]
    pub fn from_arg(arg: Arg<'a>) -> Key<'a> {
        Key(arg.as_ptr(), PhantomData)
    }

    #[inline]
    pub fn from_string(name: &'a redis_module::RedisString) -> Key<'a> {
        Key(name.inner, PhantomData)
    }

    pub(super) fn as_ptr(self) -> *mut raw::RedisModuleString {
        self.0
    }
}

/// A key name made here and owned by whoever holds it: a miss keeps the name it probed
/// the cache with, to store the fetched row under it. Freed when dropped, from any thread:
/// the string has no context and is never shared, so freeing it only returns memory to
/// Redis's (thread-safe) allocator.
pub struct Name(*mut raw::RedisModuleString);
// SAFETY: used only on the main thread; see the type's doc for dropping elsewhere.
unsafe impl Send for Name {}

impl Name {
    #[inline]
    pub fn new(bytes: &[u8]) -> Name {
        // SAFETY: a string without a context; freed on drop.
        Name(unsafe {
            raw::RedisModule_CreateString.unwrap()(
                std::ptr::null_mut(),
                bytes.as_ptr().cast(),
                bytes.len(),
            )
        })
    }

    #[inline]
    pub fn key(&self) -> Key<'_> {
        Key(self.0, PhantomData)
    }
}

impl Drop for Name {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: made in `new`, owned by this value alone.
        unsafe { raw::RedisModule_FreeString.unwrap()(std::ptr::null_mut(), self.0) };
    }
}

/// Runs `f` with `bytes` as a Redis key name, freed when `f` returns.
#[inline(always)]
pub fn with_name<R>(ctx: &Context, bytes: &[u8], f: impl FnOnce(Key<'_>) -> R) -> R {
    // SAFETY: main thread; the string is freed below, after its last use through `Key`.
    let name = unsafe {
        raw::RedisModule_CreateString.unwrap()(ctx.ctx, bytes.as_ptr().cast(), bytes.len())
    };
    let answer = f(Key(name, PhantomData));
    // SAFETY: created above; no `Key` of it outlives `f`.
    unsafe { raw::RedisModule_FreeString.unwrap()(ctx.ctx, name) };
    answer
}

/// Opens `key` and hands its string value, read in place, to `f`; None when no string is
/// stored there. The key handle is closed before return, and the value is only read while
/// it is open.
#[inline(always)]
pub fn read_string<R>(ctx: &Context, key: Key, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    // SAFETY: main thread; `key` is live; the handle is closed before returning.
    unsafe {
        let handle =
            raw::RedisModule_OpenKey.unwrap()(ctx.ctx, key.0, raw::REDISMODULE_READ as i32);
        if handle.is_null() {
            return None;
        }
        let mut answer = None;
        if raw::RedisModule_KeyType.unwrap()(handle) == raw::REDISMODULE_KEYTYPE_STRING as i32 {
            let mut len = 0usize;
            let ptr =
                raw::RedisModule_StringDMA.unwrap()(handle, &mut len, raw::REDISMODULE_READ as i32);
            if !ptr.is_null() {
                answer = Some(f(std::slice::from_raw_parts(ptr.cast::<u8>(), len)));
            }
        }
        raw::RedisModule_CloseKey.unwrap()(handle);
        answer
    }
}

/// Tells Redis that `key` changed (in the context's DB) without writing it: clients
/// tracking it (CLIENT TRACKING, WATCH) learn of the change.
pub fn signal_modified(ctx: &Context, key: Key) {
    // SAFETY: main thread; `key` is live for the call.
    unsafe {
        raw::RedisModule_SignalModifiedKey.unwrap()(ctx.ctx, key.0);
    }
}

/// Whether anything is stored at `key` in the context's DB.
pub fn exists(ctx: &Context, key: Key) -> bool {
    // SAFETY: main thread; `key` is live; the handle is closed before returning.
    unsafe {
        let handle =
            raw::RedisModule_OpenKey.unwrap()(ctx.ctx, key.0, raw::REDISMODULE_READ as i32);
        if handle.is_null() {
            return false;
        }
        let present =
            raw::RedisModule_KeyType.unwrap()(handle) != raw::REDISMODULE_KEYTYPE_EMPTY as i32;
        raw::RedisModule_CloseKey.unwrap()(handle);
        present
    }
}

/// Stores `value` at `key` until `expires_at_ms` (Unix time) and does what SET does itself:
/// replicates as `SET key value PXAT ms` (so replicas and the AOF agree on when it ends) and
/// raises the `set` and `expire` keyspace events.
pub fn set_until(ctx: &Context, key: Key, value: &str, expires_at_ms: i64) {
    // SAFETY: main thread with the caller's context; every handle is closed or freed here,
    // and the buffers outlive the calls that read them.
    unsafe {
        let handle =
            raw::RedisModule_OpenKey.unwrap()(ctx.ctx, key.0, raw::REDISMODULE_WRITE as i32);
        let data =
            raw::RedisModule_CreateString.unwrap()(ctx.ctx, value.as_ptr().cast(), value.len());
        raw::RedisModule_StringSet.unwrap()(handle, data);
        raw::RedisModule_SetAbsExpire.unwrap()(handle, expires_at_ms);
        raw::RedisModule_CloseKey.unwrap()(handle);
        // The time goes as text ('b'), not as a number ('l'): Redis would turn the number
        // into text itself, in two allocations instead of one.
        let mut digits = itoa::Buffer::new();
        let expires_at = digits.format(expires_at_ms);
        raw::RedisModule_Replicate.unwrap()(
            ctx.ctx,
            c"SET".as_ptr(),
            c"sssb".as_ptr(),
            key.0,
            data,
            pxat(),
            expires_at.as_ptr(),
            expires_at.len(),
        );
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, data);
        raw::RedisModule_NotifyKeyspaceEvent.unwrap()(
            ctx.ctx,
            raw::REDISMODULE_NOTIFY_STRING,
            c"set".as_ptr(),
            key.0,
        );
        raw::RedisModule_NotifyKeyspaceEvent.unwrap()(
            ctx.ctx,
            raw::REDISMODULE_NOTIFY_GENERIC,
            c"expire".as_ptr(),
            key.0,
        );
    }
}

/// The word `PXAT`, made once (each fill replicates it) and kept for the life of the
/// process: Redis only takes references to it.
fn pxat() -> *mut raw::RedisModuleString {
    struct Word(*mut raw::RedisModuleString);
    // SAFETY: created once, never freed or changed; Redis only reads it on the main thread.
    unsafe impl Send for Word {}
    unsafe impl Sync for Word {}
    static PXAT: std::sync::OnceLock<Word> = std::sync::OnceLock::new();
    PXAT.get_or_init(|| {
        // SAFETY: a string without a context, never freed.
        Word(unsafe {
            raw::RedisModule_CreateString.unwrap()(std::ptr::null_mut(), c"PXAT".as_ptr(), 4)
        })
    })
    .0
}

/// How many DBs the server has (its `databases` setting, fixed for its lifetime), found
/// once by probing `SelectDb`, which refuses an id out of range.
static DB_COUNT: AtomicI32 = AtomicI32::new(0);

pub fn db_count(ctx: &Context) -> i32 {
    let known = DB_COUNT.load(Ordering::Relaxed);
    if known > 0 {
        return known;
    }
    // SAFETY: main thread with a live context; its selected DB is restored below.
    let count = unsafe {
        let select = raw::RedisModule_SelectDb.unwrap();
        let original = raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx);
        let mut n = 1;
        while n < i32::MAX && select(ctx.ctx, n) == raw::REDISMODULE_OK as c_int {
            n = n.saturating_mul(2);
        }
        // The count lies in [n/2, n]: the highest id SelectDb accepts, plus one.
        let (mut low, mut high) = (n / 2, n);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if select(ctx.ctx, mid) == raw::REDISMODULE_OK as c_int {
                low = mid;
            } else {
                high = mid;
            }
        }
        select(ctx.ctx, original);
        high
    };
    DB_COUNT.store(count, Ordering::Relaxed);
    count
}

/// The DB the context has selected (a command's: its client's).
pub fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: main thread with a live context.
    unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) }
}

/// Runs `f` with `ctx` switched to each DB of `dbs` in turn, then switches back: in a
/// command's context the selected DB is the client's own.
pub fn in_each_db(ctx: &Context, dbs: impl IntoIterator<Item = i32>, mut f: impl FnMut(i32)) {
    // SAFETY: main thread with a live context; an id out of range is refused by Redis.
    unsafe {
        let original = raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx);
        for db in dbs {
            raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db);
            f(db);
        }
        raw::RedisModule_SelectDb.unwrap()(ctx.ctx, original);
    }
}

/// How many keys the context's DB holds.
pub fn db_size(ctx: &Context) -> u64 {
    // SAFETY: main thread with a live context.
    unsafe { raw::RedisModule_DbSize.unwrap()(ctx.ctx) }
}

/// A scan of a DB's keys that resumes where it left off, a step at a time.
pub struct ScanCursor(*mut raw::RedisModuleScanCursor);
// SAFETY: the cursor is only used on the main thread; other threads only move it.
unsafe impl Send for ScanCursor {}

impl ScanCursor {
    pub fn new() -> ScanCursor {
        // SAFETY: no context needed; freed on drop.
        ScanCursor(unsafe { raw::RedisModule_ScanCursorCreate.unwrap()() })
    }

    /// Starts the scan over. Main thread.
    pub fn restart(&mut self) {
        // SAFETY: our own live cursor.
        unsafe { raw::RedisModule_ScanCursorRestart.unwrap()(self.0) };
    }

    /// Switches `ctx` to `db` and scans one step of it, handing each key name to `f`;
    /// false once the scan of the DB is complete. Main thread.
    pub fn step(&mut self, ctx: &Context, db: i32, mut f: impl FnMut(&[u8])) -> bool {
        let mut visit: &mut dyn FnMut(&[u8]) = &mut f;
        // SAFETY: main thread; the callback's private data is `visit`, alive for the call.
        unsafe {
            raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db);
            raw::RedisModule_Scan.unwrap()(
                ctx.ctx,
                self.0,
                Some(visit_key),
                (&mut visit as *mut &mut dyn FnMut(&[u8])).cast(),
            ) != 0
        }
    }
}

impl Drop for ScanCursor {
    fn drop(&mut self) {
        // SAFETY: created in `new`, used by no one after this.
        unsafe { raw::RedisModule_ScanCursorDestroy.unwrap()(self.0) };
    }
}

extern "C" fn visit_key(
    _ctx: *mut raw::RedisModuleCtx,
    name: *mut raw::RedisModuleString,
    _key: *mut raw::RedisModuleKey,
    privdata: *mut std::os::raw::c_void,
) {
    // SAFETY: privdata is the visitor `ScanCursor::step` passed, alive during the scan.
    let visit = unsafe { &mut *(privdata as *mut &mut dyn FnMut(&[u8])) };
    // SAFETY: Redis passes a live key name for the call.
    visit(unsafe { crate::redis::args::string_bytes(name) });
}
