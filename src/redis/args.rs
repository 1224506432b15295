//! A command's arguments, borrowed from Redis without copying.

use redis_module::raw;
use std::marker::PhantomData;
use std::os::raw::c_int;

/// The arguments Redis passed one command call (the name first), for the length of the
/// call.
pub struct Args<'a>(&'a [*mut raw::RedisModuleString]);

/// One argument as Redis holds it: opening it as a key needs no copy of its name.
#[derive(Clone, Copy)]
pub struct Arg<'a>(*mut raw::RedisModuleString, PhantomData<&'a ()>);

impl<'a> Args<'a> {
    /// # Safety
    /// `argv` must hold `argc` live strings, which stay live for `'a` (what Redis passes a
    /// command, or a blocked client's callbacks).
    #[inline]
    pub unsafe fn from_raw(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> Args<'a> {
        let argc = argc.max(0) as usize;
        if argc == 0 {
            return Args(&[]);
        }
        // SAFETY: per the contract.
        Args(unsafe { std::slice::from_raw_parts(argv, argc) })
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Argument `i` (`i < len()`).
    #[inline]
    pub fn get(&self, i: usize) -> Arg<'a> {
        Arg(self.0[i], PhantomData)
    }

    /// The bytes of argument `i` (`i < len()`).
    #[inline]
    pub fn bytes(&self, i: usize) -> &'a [u8] {
        self.get(i).bytes()
    }

    /// The first `HEAD` arguments (command, table, key), as a blocked client's accounting
    /// reads them.
    pub fn head(&self) -> Head<'a> {
        let len = self.len().min(HEAD);
        let mut head: [&[u8]; HEAD] = [&[]; HEAD];
        for (i, slot) in head.iter_mut().enumerate().take(len) {
            *slot = self.bytes(i);
        }
        Head(head, len)
    }
}

impl<'a> Arg<'a> {
    /// The argument's bytes.
    #[inline]
    pub fn bytes(self) -> &'a [u8] {
        // SAFETY: a live argument of the call, for `'a`.
        unsafe { string_bytes(self.0) }
    }

    /// Redis's own string, for the calls that take one.
    #[inline]
    pub(super) fn as_ptr(self) -> *mut raw::RedisModuleString {
        self.0
    }
}

/// The bytes of a string Redis holds. Ours rather than the crate's `string_as_slice`,
/// which is not inlined across crates: every argument of every call goes through here (and
/// every command's through the ACL watch's filter).
///
/// # Safety
/// `string` must be live, and stay so while the slice is used.
#[inline]
pub(super) unsafe fn string_bytes<'a>(string: *const raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0usize;
    // SAFETY: per the contract.
    unsafe {
        let ptr = raw::RedisModule_StringPtrLen.unwrap()(string, &mut len);
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
