//! Waking the Redis main thread from another thread, in a way MODULE UNLOAD can cancel.
//!
//! A thread that has work for the main thread writes a byte to a pipe whose read end is
//! registered with Redis's event loop (`RedisModule_EventLoopAdd`); the event loop then calls
//! `on_readable`, which hands over to the registered handler. Unlike
//! `RedisModule_EventLoopAddOneShot`, whose queued callbacks cannot be withdrawn and would
//! run after the module's code is unmapped, the pipe is removed from the event loop at
//! unload (`deinit`): a wake-up still pending then simply never fires.

use redis_module::raw;
use std::os::raw::{c_int, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end, or -1 when not set up.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
/// The pipe's read end, registered with the event loop, and what to run when it is readable.
struct Reader {
    fd: c_int,
    handler: fn(),
}

/// Main thread only, set at load.
static READER: Mutex<Option<Reader>> = Mutex::new(None);

/// Sets up the pipe and registers `handler`, run on the main thread after `request`.
/// At load, with the Redis lock held.
pub fn init(handler: fn()) -> std::io::Result<()> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: a plain pipe: non-blocking, so neither side can ever wait on the other, and
    // close-on-exec, so no child process (a BGSAVE fork's exec) holds it.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the read end stays open until `deinit` removes it from the event loop.
    let status = unsafe {
        raw::RedisModule_EventLoopAdd.unwrap()(
            fds[0],
            raw::REDISMODULE_EVENTLOOP_READABLE as c_int,
            Some(on_readable),
            std::ptr::null_mut(),
        )
    };
    if status != raw::REDISMODULE_OK as c_int {
        close_fds(fds);
        return Err(std::io::Error::other(
            "the event loop refused the wake-up pipe",
        ));
    }
    *READER.lock().unwrap() = Some(Reader {
        fd: fds[0],
        handler,
    });
    WRITE_FD.store(fds[1], Ordering::SeqCst);
    Ok(())
}

/// Asks for the handler to run on the main thread soon. Any thread; never blocks (a full
/// pipe already holds a wake-up).
pub fn request() {
    let fd = WRITE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: writing one byte from a live buffer to our own pipe.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// Takes the pipe out of the event loop and closes it; pending wake-ups are dropped.
/// At unload, on the main thread, after every thread that calls `request` has stopped.
pub fn deinit() {
    let write_fd = WRITE_FD.swap(-1, Ordering::SeqCst);
    if let Some(Reader { fd: read_fd, .. }) = READER.lock().unwrap().take() {
        // SAFETY: registered by `init` on this fd.
        unsafe {
            raw::RedisModule_EventLoopDel.unwrap()(
                read_fd,
                raw::REDISMODULE_EVENTLOOP_READABLE as c_int,
            );
        }
        close_fds([read_fd, write_fd]);
    }
}

extern "C" fn on_readable(fd: c_int, _user_data: *mut c_void, _mask: c_int) {
    let mut drain = [0u8; 256];
    // SAFETY: reading into a live buffer from our own non-blocking pipe.
    while unsafe { libc::read(fd, drain.as_mut_ptr().cast(), drain.len()) } > 0 {}
    let handler = READER.lock().unwrap().as_ref().map(|r| r.handler);
    if let Some(handler) = handler {
        crate::error::panic::guard("a main-thread wake-up", handler);
    }
}

fn close_fds(fds: [c_int; 2]) {
    for fd in fds.into_iter().filter(|fd| *fd >= 0) {
        // SAFETY: our own descriptors, closed once.
        unsafe { libc::close(fd) };
    }
}
