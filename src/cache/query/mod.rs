//! QUERY's pipeline below the command: the hit path, and a miss's way to PostgreSQL and back.
//!
//! A hit is a lookup of the statement's text in the statement table, the parameters
//! canonicalised, the generations of its tables read, one hash and one key opened: no SQL is
//! parsed (`hit`). A miss leaves a worker a job (`job`): waiting for the feed to apply an
//! `AFTER` position, or learning a statement seen for the first time (`learn`), comes first.
//! The worker runs the statement in a READ ONLY transaction (`run`), several misses of one
//! statement as one statement, and the misses of other statements queued with them in the
//! same round trip (`batch`, `worker::pipeline`), and the main thread caches the result under
//! the key built before it ran (`complete`; `query::generations` says why that is never stale).

mod batch;
mod complete;
mod hit;
mod job;
mod key;
mod learn;
mod run;

pub use learn::learn;

use crate::cache::miss::Read;
use crate::cache::tags::Keep;
use crate::model::source::SourceId;
use crate::query::statements;
use crate::requests::reply::Reply;
use hit::Known;
use job::Job;
use redis_module::Context;

/// A QUERY call: the statement as the client spelled it, its parameters as sent, how long
/// its result is kept (seconds) and how it may be read.
pub struct Call<'a> {
    /// Whose database the statement reads.
    pub source: SourceId,
    pub sql: &'a [u8],
    pub params: &'a [&'a [u8]],
    /// How long the result is kept, and its tags.
    pub keep: Keep,
    pub read: Read,
    /// `WITHKEY`: the reply is `[result, key, [generation key, ...]]`: the key the result
    /// is held under and the generation keys in it (nil and none where the call cannot
    /// name one: passed through, too big, joined a fill, a replica's miss).
    pub with_key: bool,
}

/// Answers a call: from the cache when it holds the result, else by a worker's job.
///
/// Inline: a QUERY hit runs through here, and left to where the crate's code units fall, it
/// paid a call more (+39 instructions a hit, measured at #53 step 3).
#[inline]
pub fn call(ctx: &Context, call: &Call) -> Reply {
    let job = match statements::of(call.source).get(call.sql) {
        Some(statement) => match hit::known(ctx, statement, call) {
            Ok(Known::Answered(reply)) => return reply,
            Ok(Known::Missed(job)) => job,
            Err(e) => return e.into(),
        },
        None => Job::first_sight(ctx, call),
    };
    batch::submit(ctx, job)
}
