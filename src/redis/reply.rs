//! Writing a reply to the client of a command context, one RESP element per call. Main
//! thread only, with the context Redis passed the command (or its reply callback).

use redis_module::{Context, raw};
use std::ffi::CStr;

// SAFETY (every function here): the context is a live command context on the main
// thread, which is what the reply functions require; the buffers outlive each call, and
// Redis copies them.

#[inline]
pub fn ok(ctx: &Context) {
    unsafe { raw::RedisModule_ReplyWithSimpleString.unwrap()(ctx.ctx, c"OK".as_ptr()) };
}

#[inline]
pub fn null(ctx: &Context) {
    unsafe { raw::RedisModule_ReplyWithNull.unwrap()(ctx.ctx) };
}

#[inline]
pub fn bulk(ctx: &Context, bytes: &[u8]) {
    unsafe {
        raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx.ctx, bytes.as_ptr().cast(), bytes.len())
    };
}

pub fn int(ctx: &Context, n: i64) {
    unsafe { raw::RedisModule_ReplyWithLongLong.unwrap()(ctx.ctx, n) };
}

pub fn double(ctx: &Context, d: f64) {
    unsafe { raw::RedisModule_ReplyWithDouble.unwrap()(ctx.ctx, d) };
}

/// Opens an array of `len` elements: the next `len` replies are its items.
pub fn array(ctx: &Context, len: usize) {
    unsafe { raw::RedisModule_ReplyWithArray.unwrap()(ctx.ctx, len as _) };
}

/// Opens a map of `len` entries: the next `2 * len` replies are its keys and values.
pub fn map(ctx: &Context, len: usize) {
    unsafe { raw::RedisModule_ReplyWithMap.unwrap()(ctx.ctx, len as _) };
}

/// An error reply; `line` is the whole line (`ERR ...`, `NOPERM ...`) without CR or LF.
pub fn error(ctx: &Context, line: &CStr) {
    unsafe { raw::RedisModule_ReplyWithError.unwrap()(ctx.ctx, line.as_ptr()) };
}

/// The error Redis gives a command called with the wrong number of arguments.
pub fn wrong_arity(ctx: &Context) {
    unsafe { raw::RedisModule_WrongArity.unwrap()(ctx.ctx) };
}
