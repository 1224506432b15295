//! The time as the server holds it for the command it runs: what the hit path compares the
//! freshness horizon with. Redis caches the clock per command (`RedisModule_CachedMicroseconds`,
//! Redis 7.2+ and Valkey); on Redis 7.0 pgcache keeps its own copy, read once per turn of the
//! event loop (the `EventLoop` server event, 7.0+). Either way a hit reads the time with a
//! load, not a system-clock read (~150 instructions on Redis 7.0, measured by `make profile`).
//! The copy lags the true time by at most what the current turn has taken so far.

use redis_module::{Context, raw};
use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The time of the current event-loop turn (Redis 7.0), in microseconds since the epoch.
static TURN_US: AtomicU64 = AtomicU64::new(0);
/// `TURN_US` is kept (the server sends the event loop's event).
static TURNS: AtomicBool = AtomicBool::new(false);

/// At load: on a server without a cached clock for modules, keeps one from the event loop's
/// turns. Without either, every read asks the system clock.
pub fn init(ctx: &Context) {
    // SAFETY: reading a function pointer Redis filled in at load.
    if unsafe { raw::RedisModule_CachedMicroseconds }.is_some() {
        return;
    }
    TURN_US.store(now_us(), Ordering::Relaxed);
    // SAFETY: OnLoad context; the callback lives as long as the module (Redis drops the
    // subscription at unload).
    let subscribed = unsafe {
        raw::RedisModule_SubscribeToServerEvent.unwrap()(
            ctx.ctx,
            raw::RedisModuleEvent {
                id: raw::REDISMODULE_EVENT_EVENTLOOP,
                dataver: 1,
            },
            Some(on_turn),
        )
    };
    TURNS.store(subscribed == raw::REDISMODULE_OK as i32, Ordering::Relaxed);
}

extern "C" fn on_turn(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_EVENTLOOP_AFTER_SLEEP {
        TURN_US.store(now_us(), Ordering::Relaxed);
    }
}

/// Microseconds since the Unix epoch, as the server cached them for the command under way.
/// Main thread.
#[inline]
pub fn cached_now_us() -> u64 {
    // SAFETY: reading a function pointer Redis filled in at load; the API takes no
    // argument and reads a field of the server's state, on the main thread.
    if let Some(cached) = unsafe { raw::RedisModule_CachedMicroseconds } {
        return unsafe { cached() as u64 };
    }
    if TURNS.load(Ordering::Relaxed) {
        TURN_US.load(Ordering::Relaxed)
    } else {
        now_us()
    }
}

/// Microseconds since the Unix epoch, from the system clock (any thread).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
