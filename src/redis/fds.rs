//! Sockets the Redis event loop watches for pgcache (`RedisModule_EventLoopAdd`): a
//! registration owned by a value, removed when it is dropped (before the socket closes, so
//! a reused descriptor number never inherits it), and one callback that hands each event to
//! the handler with the token the socket was registered with. Main thread only: the event
//! loop calls back there, with the server's lock held.
//!
//! Redis keeps one registration per descriptor (a second Add overwrites the user data and
//! adds to the mask), calls the readable callback before the writable one in one dispatch,
//! and refuses a descriptor past `maxclients + 128` (ERANGE): the caller then keeps using
//! its other paths.

use redis_module::raw;
use std::cell::Cell;
use std::os::fd::RawFd;
use std::os::raw::{c_int, c_void};

/// What a socket is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
}

/// Called with the token a socket was registered with and what it is ready for.
pub type Handler = fn(token: u64, ready: Ready);

thread_local! {
    static HANDLER: Cell<Option<Handler>> = const { Cell::new(None) };
}

/// A socket the event loop watches: readable always, writable while asked for.
pub struct Watched {
    fd: RawFd,
    token: u64,
    writable: bool,
}

impl Watched {
    /// Watches `fd` for reading, calling `handler` with `token` (one handler for every
    /// socket: the last given).
    pub fn add(fd: RawFd, token: u64, handler: Handler) -> std::io::Result<Watched> {
        HANDLER.set(Some(handler));
        let watched = Watched {
            fd,
            token,
            writable: false,
        };
        watched.register(raw::REDISMODULE_EVENTLOOP_READABLE)?;
        Ok(watched)
    }

    /// Asks for the writable event while `on` (output waiting for room), or stops.
    pub fn want_writable(&mut self, on: bool) {
        if on == self.writable {
            return;
        }
        let mask = raw::REDISMODULE_EVENTLOOP_WRITABLE;
        if on {
            self.writable = self.register(mask).is_ok();
        } else {
            // SAFETY: removes an event this value added on its own descriptor.
            unsafe { raw::RedisModule_EventLoopDel.unwrap()(self.fd, mask as c_int) };
            self.writable = false;
        }
    }

    fn register(&self, mask: u32) -> std::io::Result<()> {
        // SAFETY: the descriptor is open while this value lives (its owner drops it before
        // closing); user data is the token, not a pointer.
        let status = unsafe {
            raw::RedisModule_EventLoopAdd.unwrap()(
                self.fd,
                mask as c_int,
                Some(on_event),
                self.token as usize as *mut c_void,
            )
        };
        if status == raw::REDISMODULE_OK as c_int {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mask = raw::REDISMODULE_EVENTLOOP_READABLE | raw::REDISMODULE_EVENTLOOP_WRITABLE;
        // SAFETY: removes this value's registration; the descriptor is still open.
        unsafe { raw::RedisModule_EventLoopDel.unwrap()(self.fd, mask as c_int) };
    }
}

extern "C" fn on_event(_fd: c_int, user_data: *mut c_void, mask: c_int) {
    let Some(handler) = HANDLER.get() else {
        return;
    };
    let ready = Ready {
        readable: mask & raw::REDISMODULE_EVENTLOOP_READABLE as c_int != 0,
        writable: mask & raw::REDISMODULE_EVENTLOOP_WRITABLE as c_int != 0,
    };
    let token = user_data as usize as u64;
    crate::error::panic::guard("a PostgreSQL connection's event", || handler(token, ready));
}
