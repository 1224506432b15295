//! A command's arguments, borrowed from Redis without copying.

use redis_module::raw;
use std::os::raw::c_int;

/// An argument's bytes, borrowed from Redis.
///
/// # Safety
/// `arg` must be a live string, and stay so while the slice is used.
#[inline]
pub unsafe fn borrow_arg<'a>(arg: *mut raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0usize;
    // SAFETY: per the contract.
    unsafe {
        let ptr = raw::RedisModule_StringPtrLen.unwrap()(arg, &mut len);
        std::slice::from_raw_parts(ptr.cast(), len)
    }
}

/// The arguments a blocked client's accounting reads: command, table, key.
const HEAD: usize = 3;

/// A command's first `HEAD` arguments, borrowed from Redis without allocating (every
/// blocked client's reply reads them).
pub struct Head<'a>([&'a [u8]; HEAD], usize);

impl<'a> std::ops::Deref for Head<'a> {
    type Target = [&'a [u8]];
    fn deref(&self) -> &Self::Target {
        &self.0[..self.1]
    }
}

/// A command's first arguments (command, table, key), borrowed from Redis in a blocked
/// client's callbacks.
///
/// # Safety
/// `argv` must hold `argc` live strings, which outlive the slices.
pub unsafe fn borrow_head<'a>(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> Head<'a> {
    let len = (argc.max(0) as usize).min(HEAD);
    let mut head: [&[u8]; HEAD] = [&[]; HEAD];
    for (i, slot) in head.iter_mut().enumerate().take(len) {
        // SAFETY: per the contract.
        *slot = unsafe { borrow_arg(*argv.add(i)) };
    }
    Head(head, len)
}
