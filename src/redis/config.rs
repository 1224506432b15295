//! Module parameters in CONFIG: registering string parameters (`pgcache.<name>`) whose
//! CONFIG GET and CONFIG SET Redis sends to a `Parameters` implementation, and applying
//! redis.conf's lines for them.
//!
//! Each parameter's private data is its index, so registering allocates nothing. Redis
//! copies what a get returns; the string is kept until the next get of the same parameter
//! (or `forget`, at unload) and freed then.

use redis_module::{Context, raw};
use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// What CONFIG GET and CONFIG SET of a registered parameter call, by its index.
pub trait Parameters: 'static {
    /// The value CONFIG GET shows.
    fn get(index: usize) -> String;
    /// Applies a CONFIG SET; the error is the whole message Redis shows.
    fn set(index: usize, value: &[u8]) -> Result<(), String>;
}

/// More parameters than any build of pgcache registers.
const MAX_PARAMETERS: usize = 64;

/// The string each parameter's last get returned, by index.
static SHOWN: [AtomicPtr<raw::RedisModuleString>; MAX_PARAMETERS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_PARAMETERS];

/// Registers the string parameter `name` (without the module's prefix) with its value at
/// load. At load.
pub fn register<P: Parameters>(
    ctx: &Context,
    name: &str,
    index: usize,
    current: &str,
) -> Result<(), String> {
    assert!(index < MAX_PARAMETERS, "raise MAX_PARAMETERS");
    let c_name = CString::new(name).map_err(|_| format!("{name:?} holds a NUL byte"))?;
    let current = CString::new(current.replace('\0', "")).expect("NUL bytes were removed");
    // SAFETY: OnLoad context; the strings outlive the call, the private data is an integer.
    let status = unsafe {
        raw::RedisModule_RegisterStringConfig.unwrap()(
            ctx.ctx,
            c_name.as_ptr(),
            current.as_ptr(),
            raw::REDISMODULE_CONFIG_DEFAULT,
            Some(get::<P>),
            Some(set::<P>),
            None,
            index as *mut c_void,
        )
    };
    if status == raw::REDISMODULE_OK as c_int {
        Ok(())
    } else {
        Err(format!("Redis refused to register the parameter {name}"))
    }
}

/// Applies the configuration's lines for the registered parameters; false when Redis
/// found one invalid. At load, after `register`.
/// CONFIG REWRITE, so what a command changed in the settings survives a restart; the reason
/// when Redis cannot (no configuration file).
pub fn rewrite(ctx: &Context) -> Result<(), String> {
    let options = redis_module::CallOptionsBuilder::new()
        .errors_as_replies()
        .build();
    let result: redis_module::CallResult = ctx.call_ext("CONFIG", &options, &["REWRITE"]);
    result
        .map(|_| ())
        .map_err(|e| e.to_utf8_string().unwrap_or_default())
}

pub fn load(ctx: &Context) -> bool {
    // SAFETY: OnLoad context.
    unsafe { raw::RedisModule_LoadConfigs.unwrap()(ctx.ctx) == raw::REDISMODULE_OK as c_int }
}

/// Frees the strings the last gets returned. At unload, once Redis can call no getter.
pub fn forget() {
    for slot in &SHOWN {
        free(slot.swap(ptr::null_mut(), Ordering::SeqCst));
    }
}

fn free(string: *mut raw::RedisModuleString) {
    if !string.is_null() {
        // SAFETY: created by `get` without a context, and no longer handed out.
        unsafe { raw::RedisModule_FreeString.unwrap()(ptr::null_mut(), string) };
    }
}

/// A string without a context: Redis frees the ones it takes, `free` the ones we keep.
fn detached_string(text: &str) -> *mut raw::RedisModuleString {
    // SAFETY: main thread; the bytes outlive the call, which copies them.
    unsafe {
        raw::RedisModule_CreateString.unwrap()(
            ptr::null_mut(),
            text.as_ptr().cast::<c_char>(),
            text.len(),
        )
    }
}

extern "C" fn get<P: Parameters>(
    _name: *const c_char,
    privdata: *mut c_void,
) -> *mut raw::RedisModuleString {
    let index = privdata as usize;
    let string = detached_string(&P::get(index));
    free(SHOWN[index].swap(string, Ordering::SeqCst));
    string
}

extern "C" fn set<P: Parameters>(
    _name: *const c_char,
    value: *mut raw::RedisModuleString,
    privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    // SAFETY: Redis passes a live string for the call.
    let value = unsafe { crate::redis::args::string_bytes(value) };
    match P::set(privdata as usize, value) {
        Ok(()) => raw::REDISMODULE_OK as c_int,
        Err(message) => {
            let message = message.replace('\0', "\\0");
            // SAFETY: Redis passes where to put the error string, and frees it.
            unsafe { *err = detached_string(&fitted(&message)) };
            raw::REDISMODULE_ERR as c_int
        }
    }
}

/// Redis copies a CONFIG SET error into a buffer of 256 bytes (CONFIG_ERR_SIZE), cutting a
/// longer one wherever the 256th byte falls, inside a UTF-8 character too, and the reply is
/// then not text a client can read. A longer message is cut here, at a character.
const CONFIG_ERROR_MAX: usize = 240;

fn fitted(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= CONFIG_ERROR_MAX {
        return message.into();
    }
    let mut end = CONFIG_ERROR_MAX - "...".len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_at_a_character_within_redis_buffer() {
        assert_eq!(fitted("short"), "short");
        for filler in ["x", "é", "日"] {
            let message = format!("got {:?}", filler.repeat(300));
            let fitted = fitted(&message);
            assert!(fitted.len() <= CONFIG_ERROR_MAX, "{}", fitted.len());
            assert!(fitted.ends_with("..."));
            assert!(message.starts_with(fitted.trim_end_matches("...")));
        }
    }
}
