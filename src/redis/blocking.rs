//! Blocking a client and unblocking it, from any thread, exactly once: the handle Redis
//! gives, and the callbacks it then runs on the main thread (reply, timeout, free), each
//! handed to a `Unblocked` implementation with the blocked command's arguments.

use crate::redis::args::Args;
use redis_module::{Context, raw};
use std::marker::PhantomData;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a blocked client is unblocked with, and what Redis then does with it on the main
/// thread. None of these may unwind into Redis: each contains its own panics.
pub trait Unblocked: Sized + Send + 'static {
    /// The client was unblocked with `self`: reply to it.
    fn reply(&mut self, ctx: &Context, args: &Args);
    /// The client was unblocked by CLIENT UNBLOCK (no Redis timeout is set): reply to it.
    fn timeout(ctx: &Context, args: &Args);
    /// Redis is done with the client's data (after `reply`, or unrun when the client left).
    fn free(ctx: &Context, data: Box<Self>);
}

/// A blocked client, until it is unblocked or the block is aborted, which happens once
/// whichever thread tries first.
pub struct Blocked<T> {
    handle: *mut raw::RedisModuleBlockedClient,
    done: AtomicBool,
    data: PhantomData<fn(T)>,
}
// SAFETY: the handle is only passed to RedisModule_UnblockClient or AbortBlock, once, by
// whoever wins `done`; Redis allows UnblockClient from any thread.
unsafe impl<T> Send for Blocked<T> {}
unsafe impl<T> Sync for Blocked<T> {}

/// Blocks the client of `ctx` without a Redis timeout (`timeout` runs only for CLIENT
/// UNBLOCK). Main thread, in a command context.
pub fn block<T: Unblocked>(ctx: &Context) -> Blocked<T> {
    // SAFETY: main thread, command context; the callbacks match what Redis passes them.
    let handle = unsafe {
        raw::RedisModule_BlockClient.unwrap()(
            ctx.ctx,
            Some(on_reply::<T>),
            Some(on_timeout::<T>),
            Some(on_free::<T>),
            0,
        )
    };
    Blocked {
        handle,
        done: AtomicBool::new(false),
        data: PhantomData,
    }
}

impl<T: Unblocked> Blocked<T> {
    /// Whether the client was unblocked or its block aborted.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Unblocks the client with `data`, unless that already happened (then `data` comes
    /// back). Any thread.
    pub fn unblock(&self, data: T) -> Result<(), T> {
        if self.done.swap(true, Ordering::SeqCst) {
            return Err(data);
        }
        let privdata = Box::into_raw(Box::new(data));
        // SAFETY: won `done`, so this client is unblocked exactly once; Redis owns the box
        // until `on_free`.
        unsafe { raw::RedisModule_UnblockClient.unwrap()(self.handle, privdata.cast()) };
        Ok(())
    }

    /// Undoes the block of a client nobody answered; false when it was already answered.
    /// Main thread.
    pub fn abort(&self) -> bool {
        if self.done.swap(true, Ordering::SeqCst) {
            return false;
        }
        // SAFETY: blocked by `block` and, having won `done`, never unblocked.
        unsafe { raw::RedisModule_AbortBlock.unwrap()(self.handle) };
        true
    }
}

extern "C" fn on_reply<T: Unblocked>(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: Redis passes the blocked command's arguments, and the privdata given to
    // UnblockClient: a Box<T> it owns until `on_free`.
    let (args, data) = unsafe {
        (
            Args::from_raw(argv, argc),
            &mut *(raw::RedisModule_GetBlockedClientPrivateData.unwrap()(ctx) as *mut T),
        )
    };
    data.reply(&Context::new(ctx), &args);
    raw::REDISMODULE_OK as c_int
}

extern "C" fn on_timeout<T: Unblocked>(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: Redis passes the blocked command's arguments.
    let args = unsafe { Args::from_raw(argv, argc) };
    T::timeout(&Context::new(ctx), &args);
    raw::REDISMODULE_OK as c_int
}

extern "C" fn on_free<T: Unblocked>(ctx: *mut raw::RedisModuleCtx, privdata: *mut c_void) {
    if !privdata.is_null() {
        // SAFETY: allocated by Box::into_raw in `unblock`, freed only here.
        let data = unsafe { Box::from_raw(privdata as *mut T) };
        T::free(&Context::new(ctx), data);
    }
}
