//! PGCACHE.DEBUG PANIC MAIN|WORKER|REPLY — fault injection, registered only with the
//! `debug_commands yes` setting (as Redis gates DEBUG behind enable-debug-command). Tests use
//! it to show that a panic anywhere in pgcache becomes an error reply.

use crate::error::Error;
use crate::reply::Reply;
use crate::worker::{self, Completion};
use redis_module::Context;

pub fn debug(ctx: &Context, args: &[&[u8]]) -> Reply {
    if args.len() != 3 || !args[1].eq_ignore_ascii_case(b"PANIC") {
        return Error::new("usage: PGCACHE.DEBUG PANIC MAIN|WORKER|REPLY").into();
    }
    match args[2].to_ascii_uppercase().as_slice() {
        b"MAIN" => panic!("PGCACHE.DEBUG panic on the main thread"),
        b"WORKER" => worker::submit(ctx, Box::new(|_| panic!("PGCACHE.DEBUG panic on a worker"))),
        b"REPLY" => worker::submit(
            ctx,
            Box::new(|_| {
                let completion: Completion =
                    Box::new(|_| panic!("PGCACHE.DEBUG panic in a reply callback"));
                Ok(completion)
            }),
        ),
        _ => Error::new("usage: PGCACHE.DEBUG PANIC MAIN|WORKER|REPLY").into(),
    }
}
