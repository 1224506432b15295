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

/// A command's arguments, borrowed from Redis (in a blocked client's callbacks).
///
/// # Safety
/// `argv` must hold `argc` live strings, which outlive the slices.
pub unsafe fn borrow_args<'a>(
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> Vec<&'a [u8]> {
    (0..argc.max(0) as usize)
        // SAFETY: per the contract.
        .map(|i| unsafe { borrow_arg(*argv.add(i)) })
        .collect()
}
