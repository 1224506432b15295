//! The one way pgcache runs work on the Redis main thread later. A `Task` asks to run, from
//! the main thread (`request`) or from any other (`request_from_thread`, which wakes the event
//! loop through `wake`); one zero-delay timer then runs every task that asked, once each.
//! A task that has more to do returns true and runs again on the next turn, so long work
//! (applying invalidations, flushing a table) goes in slices between other clients' commands.
//! Work runs from a timer because a timer's context replicates what it writes (deletions,
//! XADDs), which the event loop's own callbacks do not.
//!
//! Writes that must wait: inside a keyspace notification Redis forbids them, and inside a
//! server event raised by a core command (REPLICAOF NO ONE promoting a replica, FLUSHDB,
//! SWAPDB, DEBUG RELOAD) a replicated write dirties the dataset, so Redis propagates that
//! command itself to the replicas and the AOF (a chained replica would obey the REPLICAOF
//! NO ONE and leave its new primary). Such callbacks run under `writes_waiting`, and what
//! they would write (`writes_wait`) goes to a task instead.
//!
//! Unloading: Redis refuses MODULE UNLOAD while one of our timers is pending, and `deinit`
//! takes the wake-up pipe out of the event loop, so nothing queued runs after unload.

use crate::error;
use crate::redis::{paused, wake};
use redis_module::{Context, raw};
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::thread::LocalKey;
use std::time::Duration;

/// Work for the main thread: `run` returns whether it has more to do.
pub struct Task {
    /// What the task does, for the log should it panic and for the stall probe.
    name: &'static str,
    run: fn(&Context) -> bool,
    /// Queued and not yet run (so a task is queued once however often it asks).
    requested: AtomicBool,
}

impl Task {
    pub const fn new(name: &'static str, run: fn(&Context) -> bool) -> Task {
        Task {
            name,
            run,
            requested: AtomicBool::new(false),
        }
    }

    /// Runs the task on the next turn of the event loop. Main thread only.
    pub fn request(&'static self) {
        if self.enqueue() {
            arm();
        }
    }

    /// Runs the task on the main thread soon. Any thread; never blocks on the main thread.
    pub fn request_from_thread(&'static self) {
        if self.enqueue() {
            wake::request();
        }
    }

    /// Queues the task unless it is queued already; whether it was.
    fn enqueue(&'static self) -> bool {
        if self.requested.swap(true, Ordering::SeqCst) {
            return false;
        }
        QUEUE.lock().unwrap().push(self);
        true
    }
}

thread_local! {
    // Set while a callback whose writes must wait runs.
    static WRITES_WAIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, a callback of Redis's where pgcache must not write, with `writes_wait` set.
pub fn writes_waiting<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&WRITES_WAIT, f)
}

/// Runs `f` with `flag` set, put back as it was on the way out, even if `f` panics (the
/// caller contains the panic).
pub fn with_flag<R>(flag: &'static LocalKey<Cell<bool>>, f: impl FnOnce() -> R) -> R {
    struct Reset(&'static LocalKey<Cell<bool>>, bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            self.0.set(self.1);
        }
    }
    let _reset = Reset(flag, flag.replace(true));
    f()
}

/// Whether a write now must go to a task (`writes_waiting`).
pub fn writes_wait() -> bool {
    WRITES_WAIT.get()
}

/// Something another thread asked the main thread to run (`ask`), with where its answer
/// goes.
type Question = Box<dyn FnOnce(&Context) + Send>;

static QUESTIONS: Mutex<Vec<Question>> = Mutex::new(Vec::new());

static ANSWER: Task = Task::new("answering another thread", |ctx| {
    let questions = std::mem::take(&mut *QUESTIONS.lock().unwrap());
    for question in questions {
        question(ctx);
    }
    false
});

/// Runs `f` on the main thread on the next turn of the event loop and returns what it
/// returned, or None when it did not run within `limit` (a busy or stopping server: the
/// caller goes on without the answer, and `f` may still run later). Never from the main
/// thread, which would wait for itself.
pub fn ask<R: Send + 'static>(
    f: impl FnOnce(&Context) -> R + Send + 'static,
    limit: Duration,
) -> Option<R> {
    let (answer, answered) = crossbeam_channel::bounded(1);
    QUESTIONS.lock().unwrap().push(Box::new(move |ctx| {
        let _ = answer.send(f(ctx));
    }));
    ANSWER.request_from_thread();
    answered.recv_timeout(limit).ok()
}

/// The tasks that asked to run, in the order they asked.
static QUEUE: Mutex<Vec<&'static Task>> = Mutex::new(Vec::new());
/// Our timer is pending.
static ARMED: AtomicBool = AtomicBool::new(false);
/// A context tied to the module, for creating timers from the wake-up. Made at load, freed
/// at unload.
static MODULE_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// At load, with the load context.
pub fn init(ctx: &Context) -> std::io::Result<()> {
    wake::init(arm)?;
    // SAFETY: OnLoad context; the result is freed by `deinit`.
    let detached = unsafe { raw::RedisModule_GetDetachedThreadSafeContext.unwrap()(ctx.ctx) };
    MODULE_CTX.store(detached, Ordering::SeqCst);
    Ok(())
}

/// Whether work is queued or our timer pending: MODULE UNLOAD must wait.
pub fn pending() -> bool {
    ARMED.load(Ordering::SeqCst) || !QUEUE.lock().unwrap().is_empty()
}

/// At unload, once no other thread requests work: drops the wake-up pipe and what is still
/// queued (no timer is pending, or Redis would have refused the unload).
pub fn deinit() {
    wake::deinit();
    for task in std::mem::take(&mut *QUEUE.lock().unwrap()) {
        task.requested.store(false, Ordering::SeqCst);
    }
    // Unanswered: their askers gave up or see the channel closed.
    QUESTIONS.lock().unwrap().clear();
    let ctx = MODULE_CTX.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !ctx.is_null() {
        // SAFETY: made by `init`, no longer used by anyone.
        unsafe { raw::RedisModule_FreeThreadSafeContext.unwrap()(ctx) };
    }
}

/// How often work waiting for a pause of clients to end looks again (`paused`).
const WHILE_PAUSED: Duration = Duration::from_millis(10);

/// Creates the timer, unless it is pending or nothing is queued. Main thread only.
fn arm() {
    arm_in(Duration::ZERO);
}

fn arm_in(delay: Duration) {
    if QUEUE.lock().unwrap().is_empty() || ARMED.swap(true, Ordering::SeqCst) {
        return;
    }
    let ctx = MODULE_CTX.load(Ordering::SeqCst);
    if ctx.is_null() {
        ARMED.store(false, Ordering::SeqCst);
        return;
    }
    Context::new(ctx).create_timer(delay, tick, ());
}

/// Runs every queued task once; those with more to do are queued again for the next turn.
/// While clients are paused nothing runs (tasks write: invalidations, flushes, events), and
/// the queue is looked at again shortly.
fn tick(ctx: &Context, _: ()) {
    ARMED.store(false, Ordering::SeqCst);
    if paused::writes_paused() {
        arm_in(WHILE_PAUSED);
        return;
    }
    let tasks = std::mem::take(&mut *QUEUE.lock().unwrap());
    for task in tasks {
        task.requested.store(false, Ordering::SeqCst);
        if error::panic::guard(task.name, || (task.run)(ctx)) {
            task.enqueue();
        }
    }
    arm();
}
