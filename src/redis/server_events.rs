//! Redis's own events a module can follow: keys expired or evicted, keys about to be removed
//! (with their value still readable), the end of a load from
//! disk, a promotion to primary or a demotion to replica, a replica coming online, the
//! server's cron. Redis
//! calls the `ServerEvents` functions on the main thread, often inside a command (REPLICAOF,
//! FLUSHDB, an expiring read), so they run with pgcache's writes waiting for a task
//! (`main_thread::writes_waiting`).

use crate::redis::main_thread::writes_waiting;
use redis_module::{Context, raw};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

/// Reads a removed key, if it is a set, while it can: `(DB, members)`, the members None
/// when there are more than the number asked.
pub type SetRead<'a> = dyn Fn(usize) -> Option<(i32, Option<Vec<Vec<u8>>>)> + 'a;

/// Whether this server tells `key_unlinking` (Redis 7.2 and Valkey on).
static UNLINKS_FOLLOWED: AtomicBool = AtomicBool::new(false);

/// Whether `key_unlinking` is called: a removed key's value can be read as it goes.
pub fn unlinks_followed() -> bool {
    UNLINKS_FOLLOWED.load(Ordering::Relaxed)
}

/// What happens on each event. A panic must not unwind into Redis: each function contains
/// its own.
pub trait ServerEvents: 'static {
    /// `key` expired, or was evicted (`evicted`).
    fn key_removed(ctx: &Context, key: &[u8], evicted: bool);
    /// Key `name` is about to be removed (deleted, expired, evicted, overwritten, moved):
    /// `set(n)` reads its DB and members while it still can, if it is a set (the members
    /// None: more than `n`). Called for every key removed, so it returns at once for keys
    /// that are none of its business.
    fn key_unlinking(ctx: &Context, name: &[u8], set: &SetRead<'_>);
    /// A load from an RDB or AOF file ended.
    fn loading_ended(ctx: &Context);
    /// This server became a primary.
    fn promoted(ctx: &Context);
    /// This server became a replica.
    fn demoted(ctx: &Context);
    /// A replica came online (after a full or partial sync).
    fn replica_online(ctx: &Context);
    /// A DB was flushed (FLUSHDB, FLUSHALL) or two were swapped (SWAPDB).
    fn dbs_changed(ctx: &Context);
    /// The server's cron ran (`hz` times a second), whatever the clients do.
    fn cron(ctx: &Context);
}

/// Subscribes `E` to the events. At load.
pub fn subscribe<E: ServerEvents>(ctx: &Context) {
    type Callback =
        unsafe extern "C" fn(*mut raw::RedisModuleCtx, raw::RedisModuleEvent, u64, *mut c_void);
    // SAFETY: OnLoad context; the callbacks live as long as the module.
    unsafe {
        raw::RedisModule_SubscribeToKeyspaceEvents.unwrap()(
            ctx.ctx,
            raw::REDISMODULE_NOTIFY_EXPIRED | raw::REDISMODULE_NOTIFY_EVICTED,
            Some(on_keyspace_event::<E>),
        );
        let subscribe = raw::RedisModule_SubscribeToServerEvent.unwrap();
        for (id, callback) in [
            (
                raw::REDISMODULE_EVENT_REPLICA_CHANGE,
                on_replica_change::<E> as Callback,
            ),
            (raw::REDISMODULE_EVENT_LOADING, on_loading::<E>),
            (
                raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
                on_role_changed::<E>,
            ),
            (raw::REDISMODULE_EVENT_FLUSHDB, on_flush::<E>),
            (raw::REDISMODULE_EVENT_SWAPDB, on_swap::<E>),
            (raw::REDISMODULE_EVENT_CRON_LOOP, on_cron::<E>),
            // Redis 7.2 and Valkey on; refused (and so not followed) before.
            (raw::REDISMODULE_EVENT_KEY, on_key::<E>),
        ] {
            let subscribed = subscribe(
                ctx.ctx,
                raw::RedisModuleEvent { id, dataver: 1 },
                Some(callback),
            );
            if id == raw::REDISMODULE_EVENT_KEY {
                let followed = subscribed == raw::REDISMODULE_OK as c_int;
                UNLINKS_FOLLOWED.store(followed, Ordering::Relaxed);
            }
        }
    }
}

extern "C" fn on_keyspace_event<E: ServerEvents>(
    ctx: *mut raw::RedisModuleCtx,
    event_type: c_int,
    _event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let evicted = event_type & raw::REDISMODULE_NOTIFY_EVICTED as c_int != 0;
    // SAFETY: Redis passes a live key name for the call.
    let key = unsafe { crate::redis::args::string_bytes(key) };
    writes_waiting(|| E::key_removed(&Context::new(ctx), key, evicted));
    raw::REDISMODULE_OK as c_int
}

extern "C" fn on_key<E: ServerEvents>(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    data: *mut c_void,
) {
    // SAFETY: Redis passes the key being removed, opened on its value, for the call.
    let key = unsafe { (*data.cast::<raw::RedisModuleKeyInfo>()).key };
    // SAFETY: as above; the name lives as long as the key.
    let name = unsafe {
        crate::redis::args::string_bytes(raw::RedisModule_GetKeyNameFromModuleKey.unwrap()(key))
    };
    let set = |at_most: usize| {
        // SAFETY: as above.
        unsafe {
            (raw::RedisModule_KeyType.unwrap()(key) == raw::REDISMODULE_KEYTYPE_SET as c_int).then(
                || {
                    (
                        raw::RedisModule_GetDbIdFromModuleKey.unwrap()(key),
                        members(key, at_most),
                    )
                },
            )
        }
    };
    writes_waiting(|| E::key_unlinking(&Context::new(ctx), name, &set));
}

/// The members of set `key`; None when it holds more than `at_most` (read a batch at a
/// time, so the work stops soon after).
///
/// # Safety
/// `key` is an open key holding a set.
unsafe fn members(key: *mut raw::RedisModuleKey, at_most: usize) -> Option<Vec<Vec<u8>>> {
    unsafe extern "C" fn each(
        _key: *mut raw::RedisModuleKey,
        member: *mut raw::RedisModuleString,
        _value: *mut raw::RedisModuleString,
        data: *mut c_void,
    ) {
        // SAFETY: `data` is the vector below; Redis passes a live member for the call.
        unsafe {
            let members = &mut *data.cast::<Vec<Vec<u8>>>();
            members.push(crate::redis::args::string_bytes(member).to_vec());
        }
    }
    let mut members: Vec<Vec<u8>> = Vec::new();
    // SAFETY: per the contract; the cursor is destroyed here.
    unsafe {
        let cursor = raw::RedisModule_ScanCursorCreate.unwrap()();
        let data = (&mut members as *mut Vec<Vec<u8>>).cast::<c_void>();
        while raw::RedisModule_ScanKey.unwrap()(key, cursor, Some(each), data) != 0
            && members.len() <= at_most
        {}
        raw::RedisModule_ScanCursorDestroy.unwrap()(cursor);
    }
    (members.len() <= at_most).then_some(members)
}

extern "C" fn on_loading<E: ServerEvents>(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
        writes_waiting(|| E::loading_ended(&Context::new(ctx)));
    }
}

extern "C" fn on_role_changed<E: ServerEvents>(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER {
        writes_waiting(|| E::promoted(&Context::new(ctx)));
    } else {
        writes_waiting(|| E::demoted(&Context::new(ctx)));
    }
}

extern "C" fn on_flush<E: ServerEvents>(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_END {
        writes_waiting(|| E::dbs_changed(&Context::new(ctx)));
    }
}

extern "C" fn on_swap<E: ServerEvents>(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    writes_waiting(|| E::dbs_changed(&Context::new(ctx)));
}

extern "C" fn on_cron<E: ServerEvents>(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    writes_waiting(|| E::cron(&Context::new(ctx)));
}

extern "C" fn on_replica_change<E: ServerEvents>(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_REPLICA_CHANGE_ONLINE {
        writes_waiting(|| E::replica_online(&Context::new(ctx)));
    }
}
