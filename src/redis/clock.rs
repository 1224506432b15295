//! The time as the server holds it for the command it runs: what the hit path compares the
//! freshness horizon with. Redis caches the clock once per command (and per event-loop
//! turn), so reading it is a function call and a load, where a clock read of our own would
//! cost the hit path a system-clock read.

use redis_module::raw;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, as Redis cached them for the command under way (the
/// system clock on a server without the API, or off the main thread).
#[inline]
pub fn cached_now_us() -> u64 {
    // SAFETY: the API takes no argument and reads a field of the server's state; it is
    // only called on the main thread, where the server keeps it.
    match unsafe { raw::RedisModule_CachedMicroseconds } {
        Some(cached) => unsafe { cached() as u64 },
        None => now_us(),
    }
}

/// Microseconds since the Unix epoch, from the system clock (any thread).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
