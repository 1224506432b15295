//! Redis's own events that pgcache follows: expirations and evictions of its entries (counted,
//! and raised as `expire` / `evict` events), replicas coming online (sent the hooks), and the
//! end of a load from disk or a promotion to primary (entries no listener covered: see
//! `invalidation::apply`).

use crate::cache;
use crate::config::current;
use crate::error;
use crate::events;
use crate::events::hooks;
use crate::invalidation;
use crate::model::event;
use crate::stats;
use redis_module::{Context, raw};
use std::os::raw::c_void;

/// Subscribes to the events. At load.
pub fn subscribe(ctx: &Context) {
    // SAFETY: OnLoad context; the callbacks live as long as the module.
    unsafe {
        raw::RedisModule_SubscribeToKeyspaceEvents.unwrap()(
            ctx.ctx,
            raw::REDISMODULE_NOTIFY_EXPIRED | raw::REDISMODULE_NOTIFY_EVICTED,
            Some(on_keyspace_event),
        );
        let subscribe = raw::RedisModule_SubscribeToServerEvent.unwrap();
        for (id, callback) in [
            (
                raw::REDISMODULE_EVENT_REPLICA_CHANGE,
                on_replica_change as ServerEventCallback,
            ),
            (raw::REDISMODULE_EVENT_LOADING, on_loading),
            (
                raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
                on_role_changed,
            ),
        ] {
            subscribe(
                ctx.ctx,
                raw::RedisModuleEvent { id, dataver: 1 },
                Some(callback),
            );
        }
    }
}

type ServerEventCallback =
    unsafe extern "C" fn(*mut raw::RedisModuleCtx, raw::RedisModuleEvent, u64, *mut c_void);

unsafe extern "C" fn on_loading(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
        error::panic::guard("the end of a load", || {
            invalidation::apply::data_loaded(&Context::new(ctx))
        });
    }
}

unsafe extern "C" fn on_role_changed(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER {
        error::panic::guard("a promotion to primary", || {
            invalidation::apply::promoted(&Context::new(ctx))
        });
    }
}

/// Counts expirations and evictions of pgcache's entries, from Redis's own keyspace events,
/// and raises the `expire` and `evict` events.
unsafe extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    event_type: std::os::raw::c_int,
    _event: *const std::os::raw::c_char,
    key: *mut raw::RedisModuleString,
) -> std::os::raw::c_int {
    error::panic::guard("a keyspace event", || keyspace_event(ctx, event_type, key));
    raw::REDISMODULE_OK as std::os::raw::c_int
}

fn keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    event_type: std::os::raw::c_int,
    key: *mut raw::RedisModuleString,
) {
    let mut len = 0usize;
    // SAFETY: Redis passes a live key name.
    let name = unsafe {
        let ptr = raw::RedisModule_StringPtrLen.unwrap()(key, &mut len);
        std::slice::from_raw_parts(ptr.cast::<u8>(), len)
    };
    let prefix = current::cache_prefix();
    let Some(entry) = name.strip_prefix(prefix.as_bytes()) else {
        return;
    };
    let kind = if event_type & raw::REDISMODULE_NOTIFY_EVICTED != 0 {
        stats::EVICTIONS.inc();
        event::EventKind::Evict
    } else {
        stats::EXPIRATIONS.inc();
        event::EventKind::Expire
    };
    if events::wanted(kind) {
        let entry = String::from_utf8_lossy(entry);
        let (table, key) = cache::split_entry_name(&entry);
        let context = Context::new(ctx);
        hooks::in_notification(|| events::publish(&context, kind, table, key));
    }
}

/// Sends the hooks to replicas when one comes online.
unsafe extern "C" fn on_replica_change(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_REPLICA_CHANGE_ONLINE {
        error::panic::guard("a replica coming online", || {
            hooks::on_replica_online(&Context::new(ctx))
        });
    }
}
