//! The `pgcache.*` CONFIG parameters: Redis calls these callbacks directly for CONFIG GET and
//! CONFIG SET. Each parameter's private data is its entry in the static settings table, so
//! registering allocates nothing (the crate's helper boxed one per parameter, and nothing
//! freed it at unload: valgrind counted it). Redis copies what a get returns; the string is
//! kept until the next get of the same parameter (or the unload) and freed then.

use crate::config::{SETTINGS, Setting};
use crate::error::{self, Error};
use crate::settings;
use redis_module::{Context, raw};
use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The string each parameter's last get returned, by its index in `SETTINGS`.
static SHOWN: [AtomicPtr<raw::RedisModuleString>; SETTINGS.len()] =
    [const { AtomicPtr::new(ptr::null_mut()) }; SETTINGS.len()];

/// Registers every runtime setting as `pgcache.<name>`, then applies redis.conf's lines.
pub fn register(ctx: &Context) -> Result<(), Error> {
    for setting in settings::runtime() {
        let name = CString::new(setting.name).expect("setting names hold no NUL");
        let current =
            CString::new(settings::get(setting).replace('\0', "")).expect("NUL bytes were removed");
        let privdata = ptr::from_ref(setting).cast_mut().cast::<c_void>();
        // SAFETY: OnLoad context; the strings outlive the call, `privdata` is 'static.
        let status = unsafe {
            raw::RedisModule_RegisterStringConfig.unwrap()(
                ctx.ctx,
                name.as_ptr(),
                current.as_ptr(),
                raw::REDISMODULE_CONFIG_DEFAULT,
                Some(get),
                Some(set),
                None,
                privdata,
            )
        };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(Error::internal(format!(
                "could not register the setting pgcache.{}",
                setting.name
            )));
        }
    }
    // SAFETY: OnLoad context; applies `pgcache.*` lines of redis.conf, if any.
    if unsafe { raw::RedisModule_LoadConfigs.unwrap()(ctx.ctx) } != raw::REDISMODULE_OK as c_int {
        return Err(Error::invalid(
            "a pgcache.* setting in the Redis configuration is invalid",
        ));
    }
    Ok(())
}

/// Frees the strings the last gets returned. At unload, once Redis can call no getter.
pub fn deinit() {
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

fn setting_of(privdata: *mut c_void) -> &'static Setting {
    // SAFETY: `register` passed a pointer into the static SETTINGS table.
    unsafe { &*privdata.cast::<Setting>() }
}

/// CONFIG GET. A panic must not unwind into Redis; a NUL byte still makes a valid string.
extern "C" fn get(_name: *const c_char, privdata: *mut c_void) -> *mut raw::RedisModuleString {
    let setting = setting_of(privdata);
    let value = error::panic::guard("reading a setting", || settings::get(setting));
    // SAFETY: main thread; a string without a context is freed by `free`.
    let string = unsafe {
        raw::RedisModule_CreateString.unwrap()(
            ptr::null_mut(),
            value.as_ptr().cast::<c_char>(),
            value.len(),
        )
    };
    let index = SETTINGS
        .iter()
        .position(|s| ptr::eq(s, setting))
        .expect("a setting of the table");
    free(SHOWN[index].swap(string, Ordering::SeqCst));
    string
}

/// CONFIG SET: the error names the setting and what it accepts.
extern "C" fn set(
    _name: *const c_char,
    value: *mut raw::RedisModuleString,
    privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    let setting = setting_of(privdata);
    let mut len = 0usize;
    // SAFETY: Redis passes a live string for the duration of the call.
    let bytes = unsafe {
        let text = raw::RedisModule_StringPtrLen.unwrap()(value, &mut len);
        std::slice::from_raw_parts(text.cast::<u8>(), len)
    };
    let result = match std::str::from_utf8(bytes) {
        Ok(text) => error::panic::catch_result(|| settings::set(setting, text)),
        Err(_) => Err(Error::invalid("the value is not valid UTF-8")),
    };
    match result {
        Ok(()) => raw::REDISMODULE_OK as c_int,
        Err(e) => {
            let message = format!("pgcache.{}: {e}", setting.name).replace('\0', "\\0");
            // SAFETY: Redis takes the error string and frees it.
            unsafe {
                *err = raw::RedisModule_CreateString.unwrap()(
                    ptr::null_mut(),
                    message.as_ptr().cast::<c_char>(),
                    message.len(),
                );
            }
            raw::REDISMODULE_ERR as c_int
        }
    }
}
