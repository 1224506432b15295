//! The `pgcache.*` CONFIG parameters and the settings in effect. At load the settings are
//! installed into the modules whose state they are (`config::current`, the slowlog, the
//! hooks, the schema cache) and every runtime one is registered with Redis, which then calls
//! `get` and `set` here directly for CONFIG GET and CONFIG SET; a SET is checked as the
//! module argument is, with the table's validation. Wiring, like `lib.rs`: it reaches every
//! module a setting changes.
//!
//! Each parameter's private data is its entry in the static settings table, so registering
//! allocates nothing (the crate's helper boxed one per parameter, and nothing freed it at
//! unload: valgrind counted it). Redis copies what a get returns; the string is kept until
//! the next get of the same parameter (or the unload) and freed then.

use crate::config::current;
use crate::config::{self, SETTINGS, Setting, Settings};
use crate::error::{self, Error};
use crate::events::hooks;
use crate::pg::schema;
use crate::stats::slowlog;
use redis_module::{Context, raw};
use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The settings in effect (the `hooks` field aside: PGCACHE.HOOK changes hooks too, so the
/// hooks module holds them).
static CURRENT: Mutex<Option<Settings>> = Mutex::new(None);

/// Installs the load-time values of every setting.
pub fn init(s: &Settings) -> Result<(), Error> {
    hooks::set_all(&s.hooks).map_err(|e| Error::setting("hooks", e))?;
    install(s);
    Ok(())
}

fn install(s: &Settings) {
    current::init(s);
    slowlog::set_threshold_us(s.slowlog_threshold_us);
    slowlog::set_max_len(s.slowlog_max_len);
    *CURRENT.lock().unwrap() = Some(s.clone());
}

/// The settings in effect.
fn current() -> Settings {
    let mut s = CURRENT.lock().unwrap().clone().unwrap_or_default();
    s.hooks = hooks::setting();
    s
}

/// Every setting's value in effect, as HEALTH shows them (the password as set or not).
pub fn effective() -> Vec<(&'static str, String)> {
    current().shown()
}

/// The settings CONFIG SET may change.
fn runtime() -> impl Iterator<Item = &'static Setting> {
    config::SETTINGS.iter().filter(|s| s.runtime)
}

/// What CONFIG GET pgcache.<name> shows.
fn value_of(setting: &Setting) -> String {
    setting
        .show
        .map(|show| show(&current()))
        .unwrap_or_default()
}

/// CONFIG SET pgcache.<name>'s value: checked as the module argument is, then installed.
fn set_value(setting: &Setting, value: &str) -> Result<(), Error> {
    let mut next = current();
    setting.apply(&mut next, value)?;
    if setting.name == "hooks" {
        hooks::set_all(&next.hooks)?;
    }
    install(&next);
    if setting.name == "tables" {
        // Tables resolved under the old list must be checked again.
        schema::clear_cache();
    }
    Ok(())
}

/// The string each parameter's last get returned, by its index in `SETTINGS`.
static SHOWN: [AtomicPtr<raw::RedisModuleString>; SETTINGS.len()] =
    [const { AtomicPtr::new(ptr::null_mut()) }; SETTINGS.len()];

/// Registers every runtime setting as `pgcache.<name>`, then applies redis.conf's lines.
pub fn register(ctx: &Context) -> Result<(), Error> {
    for setting in runtime() {
        let name = CString::new(setting.name).expect("setting names hold no NUL");
        let current =
            CString::new(value_of(setting).replace('\0', "")).expect("NUL bytes were removed");
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
    let value = error::panic::guard("reading a setting", || value_of(setting));
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
        Ok(text) => error::panic::catch_result(|| set_value(setting, text)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// CONFIG SET must accept exactly what the module arguments accept. (Hooks are left
    /// out: installing them reaches other global state.)
    #[test]
    fn config_set_validates_like_the_module_arguments() {
        let values = [
            "",
            "0",
            "1",
            "9",
            "10",
            "-1",
            "abc",
            "1.5",
            "3600",
            "100000",
            "100001",
            "3600000",
            "3600001",
            "315360000",
            "315360001",
            "pg_cache_events",
            "users,sales.orders",
            "miss,hit",
        ];
        for setting in runtime().filter(|t| t.name != "hooks") {
            let original = value_of(setting);
            for value in values {
                let at_load =
                    config::load(&[setting.name.to_string(), value.to_string()], &|_| None).is_ok();
                assert_eq!(
                    set_value(setting, value).is_ok(),
                    at_load,
                    "{} {value:?}",
                    setting.name
                );
            }
            set_value(setting, &original).unwrap();
        }
    }
}
