//! A result's key as of now: the statement's, its parameters' and the current generations
//! of the tables it reads, which the hit path looks up and a miss fills.

use crate::query::key::push_route;
use crate::query::{Statement, generations};
use redis_module::Context;

/// The result's key under the current generations, in the context's DB; None where results
/// are not cached (a replica before its primary made the generations).
pub(super) fn key_now(ctx: &Context, statement: &Statement, params: &[String]) -> Option<String> {
    let mut key = String::with_capacity(statement.key_head.len() + 64);
    key.push_str(&statement.key_head);
    push_route(&mut key, params);
    generations::append_current(ctx, statement.source, &statement.generation_keys, &mut key)
        .then_some(key)
}
