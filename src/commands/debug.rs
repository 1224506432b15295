//! PGCACHE.DEBUG — fault injection, registered only with the `debug_commands yes` setting
//! (as Redis gates DEBUG behind enable-debug-command). Tests use it to force what is
//! otherwise a matter of timing:
//! - `PANIC MAIN|WORKER|REPLY`: a panic anywhere becomes an error reply; `PANIC TIMER`: a
//!   panic in a callback Redis makes (a timer) is logged, and the server carries on;
//!   `PANIC SEND`: the event loop's next send of misses panics, and its misses are still
//!   answered (by the workers);
//! - `FILLS HOLD|RELEASE|HELD`: hold fetched rows on the workers until RELEASE or their
//!   request's deadline (HELD counts them), so an invalidation can be made to arrive while a
//!   fill is in flight; `FILLS STALL` holds them, and every other answer a worker hands
//!   back, past the deadline, until RELEASE, so a fill can be made to come back after its
//!   clients timed out;
//! - `PIPELINE ALWAYS|MEASURED`: every QUERY statement's runs may share a round trip, or (the
//!   default) only those of statements measured fast, so a test of pipelining does not
//!   depend on how fast a loaded machine ran the statements before;
//! - `SENDS HOLD|RELEASE`: the event loop sends no misses until RELEASE, so misses of one
//!   statement from several clients join one batch there, as those of one turn do;
//! - `INVALIDATIONS HOLD|RELEASE`: the main thread applies no invalidation until RELEASE,
//!   and what the change feed hands over waits, as it does behind a main thread that fell
//!   behind (a long script), so the backlog's bound can be passed on any machine;
//!   `INVALIDATIONS PENDING`: how many deletions wait, so a test knows a change arrived.

use crate::cache::onloop;
use crate::cache::worker::{self, hold};
use crate::commands::docs::{Arg, Command, Keys, Params};
use crate::error::Error;
use crate::model::source::SourceId;
use crate::redis::main_thread::Task;
use crate::requests::blocked::Completion;
use crate::requests::reply::Reply;
use redis_module::Context;

pub static DEBUG: Command = Command {
    name: "pgcache.debug",
    entry: super::command_fn!(DEBUG),
    handler: debug,
    tracked: None,
    flags: "admin",
    summary: "Fault injection for tests (registered with debug_commands yes)",
    since: "0.1.0",
    complexity: "O(1)",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[
        Arg::text("PANIC | FILLS | PIPELINE | SENDS | INVALIDATIONS"),
        Arg::text("where"),
    ]),
};

const USAGE: &str = "usage: PGCACHE.DEBUG PANIC MAIN|WORKER|REPLY|TIMER|SEND | \
                     FILLS HOLD|STALL|RELEASE|HELD | PIPELINE ALWAYS|MEASURED | \
                     SENDS HOLD|RELEASE | \
                     INVALIDATIONS HOLD|RELEASE|PENDING";

pub fn debug(ctx: &Context, args: &[&[u8]]) -> Reply {
    match args[1].to_ascii_uppercase().as_slice() {
        b"PANIC" => panic_in(ctx, args[2]),
        b"FILLS" => match args[2].to_ascii_uppercase().as_slice() {
            b"HOLD" => {
                hold::hold();
                Reply::Ok
            }
            b"STALL" => {
                hold::stall();
                Reply::Ok
            }
            b"RELEASE" => {
                hold::release();
                Reply::Ok
            }
            b"HELD" => Reply::Bulk(hold::held().to_string()),
            _ => Error::invalid(USAGE).into(),
        },
        b"PIPELINE" => match args[2].to_ascii_uppercase().as_slice() {
            b"ALWAYS" => {
                crate::query::pipeline_always(true);
                Reply::Ok
            }
            b"MEASURED" => {
                crate::query::pipeline_always(false);
                Reply::Ok
            }
            _ => Error::invalid(USAGE).into(),
        },
        b"SENDS" => match args[2].to_ascii_uppercase().as_slice() {
            b"HOLD" => {
                onloop::hold_sends(true);
                Reply::Ok
            }
            b"RELEASE" => {
                onloop::hold_sends(false);
                Reply::Ok
            }
            _ => Error::invalid(USAGE).into(),
        },
        b"INVALIDATIONS" => match args[2].to_ascii_uppercase().as_slice() {
            b"HOLD" => {
                crate::invalidation::apply::hold(true);
                Reply::Ok
            }
            b"RELEASE" => {
                crate::invalidation::apply::hold(false);
                Reply::Ok
            }
            b"PENDING" => Reply::Int(crate::invalidation::apply::pending_keys() as i64),
            _ => Error::invalid(USAGE).into(),
        },
        _ => Error::invalid(USAGE).into(),
    }
}

fn panic_in(ctx: &Context, place: &[u8]) -> Reply {
    match place.to_ascii_uppercase().as_slice() {
        b"MAIN" => panic!("PGCACHE.DEBUG panic on the main thread"),
        b"WORKER" => worker::submit(
            ctx,
            SourceId::DEFAULT,
            Box::new(|_| panic!("PGCACHE.DEBUG panic on a worker")),
        ),
        b"REPLY" => worker::submit(
            ctx,
            SourceId::DEFAULT,
            Box::new(|_| {
                let completion: Completion =
                    Box::new(|_| panic!("PGCACHE.DEBUG panic in a reply callback"));
                Ok(completion)
            }),
        ),
        b"TIMER" => {
            PANICKING_TASK.request();
            Reply::Ok
        }
        b"SEND" => {
            onloop::panic_next_send();
            Reply::Ok
        }
        _ => Error::invalid(USAGE).into(),
    }
}

/// Main-thread work that panics, to show the panic is contained.
static PANICKING_TASK: Task = Task::new("PGCACHE.DEBUG's timer", |_| {
    panic!("PGCACHE.DEBUG panic in a timer")
});
