//! The benchmark's ceiling for a module command's hit path: `BARE.GET <key>` opens the key
//! and replies its string value (nil otherwise), and does nothing else. `make bench` loads it
//! next to pgcache, so the hit section can show how far a READ hit is from the cheapest
//! reply a module command can give, measured in the same run as GET.
//!
//! Built by `cargo build --release --example bare_get` (scripts/bench.sh does).

use redis_module::raw;
use std::os::raw::c_int;

/// Opens argv[1] read-only and replies its value straight from Redis's memory.
unsafe extern "C" fn bare_get(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: called by Redis on the main thread with its own context and arguments; the key
    // handle is closed before return and the value is only read while it is open.
    unsafe {
        if argc != 2 {
            return raw::RedisModule_WrongArity.unwrap()(ctx);
        }
        let key =
            raw::RedisModule_OpenKey.unwrap()(ctx, *argv.add(1), raw::REDISMODULE_READ as c_int);
        let mut len = 0usize;
        let value = if key.is_null()
            || raw::RedisModule_KeyType.unwrap()(key) != raw::REDISMODULE_KEYTYPE_STRING as c_int
        {
            std::ptr::null()
        } else {
            raw::RedisModule_StringDMA.unwrap()(key, &mut len, raw::REDISMODULE_READ as c_int)
        };
        if value.is_null() {
            raw::RedisModule_ReplyWithNull.unwrap()(ctx);
        } else {
            raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, value, len);
        }
        if !key.is_null() {
            raw::RedisModule_CloseKey.unwrap()(key);
        }
        raw::REDISMODULE_OK as c_int
    }
}

/// Registers the module and its one command, with PGCACHE.READ's flags.
///
/// # Safety
/// Called by Redis when the module is loaded.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    // SAFETY: Redis's load-time context.
    unsafe {
        if raw::Export_RedisModule_Init(
            ctx,
            c"bare".as_ptr(),
            1,
            raw::REDISMODULE_APIVER_1 as c_int,
        ) == raw::Status::Err as c_int
        {
            return raw::REDISMODULE_ERR as c_int;
        }
        raw::RedisModule_CreateCommand.unwrap()(
            ctx,
            c"bare.get".as_ptr(),
            Some(bare_get),
            c"readonly".as_ptr(),
            1,
            1,
            1,
        )
    }
}
