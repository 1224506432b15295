//! A module section in INFO: registering the function that writes it, and the fields it
//! may write (`name:value` lines, and dict lines such as `db0:keys=1,expires=0`).

use redis_module::{Context, raw};
use std::ffi::CString;
use std::sync::OnceLock;

/// The function that writes the section, set once at load.
static WRITER: OnceLock<fn(&InfoSection)> = OnceLock::new();

/// The section being written, for one INFO call.
pub struct InfoSection(*mut raw::RedisModuleInfoCtx);

/// Registers `writer` as the module's INFO section (a library Redis kept mapped across
/// MODULE UNLOAD and LOAD keeps the first one, which is the same function). At load.
pub fn register(ctx: &Context, writer: fn(&InfoSection)) {
    WRITER.get_or_init(|| writer);
    // SAFETY: OnLoad context; the callback lives as long as the module.
    unsafe { raw::RedisModule_RegisterInfoFunc.unwrap()(ctx.ctx, Some(write_section)) };
}

extern "C" fn write_section(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: i32) {
    if let Some(writer) = WRITER.get() {
        writer(&InfoSection(ctx));
    }
}

/// A field name as a C string; names come from our own figures, never with a NUL.
fn c_name(name: &str) -> CString {
    CString::new(name.replace('\0', "_")).expect("NULs were replaced")
}

// SAFETY (the methods below): the info context is the live one Redis passed to this INFO
// call, and every string outlives the call it is passed to (Redis copies it).
impl InfoSection {
    /// Starts the module's own section (`# pgcache`); fields follow.
    pub fn begin(&self) {
        unsafe { raw::RedisModule_InfoAddSection.unwrap()(self.0, std::ptr::null()) };
    }

    pub fn int(&self, name: &str, n: i64) {
        let name = c_name(name);
        unsafe { raw::RedisModule_InfoAddFieldLongLong.unwrap()(self.0, name.as_ptr(), n) };
    }

    pub fn double(&self, name: &str, d: f64) {
        let name = c_name(name);
        unsafe { raw::RedisModule_InfoAddFieldDouble.unwrap()(self.0, name.as_ptr(), d) };
    }

    pub fn text(&self, name: &str, text: &str) {
        let (name, text) = (c_name(name), c_name(text));
        unsafe {
            raw::RedisModule_InfoAddFieldCString.unwrap()(self.0, name.as_ptr(), text.as_ptr())
        };
    }

    /// Writes the fields `fill` adds as one dict line, `name:field=value,...`.
    pub fn dict(&self, name: &str, fill: impl FnOnce(&InfoSection)) {
        let name = c_name(name);
        unsafe { raw::RedisModule_InfoBeginDictField.unwrap()(self.0, name.as_ptr()) };
        fill(self);
        unsafe { raw::RedisModule_InfoEndDictField.unwrap()(self.0) };
    }
}
