//! Generations: one key per table (`<table's key prefix>~gen`, beside its rows' entries),
//! holding a random 64-bit value. Every result key is built from the generations of the
//! tables its statement reads (`key`), taken on the main thread before the statement runs.
//! When the change feed applies a change to a table, or a flush of the table starts, its
//! generation key is deleted; the next read creates a new random one. (A flush of the whole
//! cache needs no generation of its own: until its scan has deleted every generation key
//! present when it started, results are not served, as no entry under its prefix is.) Results built under the old value are
//! never looked up again (they expire with their TTL): no result can be served after a
//! change to a table it read was applied, and a fill whose statement ran across a change
//! lands under a key nobody builds any more. The keys are ordinary keys, so the RDB, the
//! AOF and the replicas carry them with the results they vouch for.

use crate::config::MAX_TTL_SECONDS;
use crate::query::hex;
use crate::redis::keyspace;
use crate::redis::role::writable;
use redis_module::{CallOptionsBuilder, CallResult, Context};

/// A generation's value as its key holds it: 16 lowercase hex digits (64 random bits: no
/// client chooses them, and a table would need billions of changes before one came back),
/// copied into result keys as they are.
pub type Generation = [u8; 16];

/// What follows a table's (or the cache's) key prefix in its generation key's name.
const SUFFIX: &str = "~gen";

/// The generation key of the table (or cache) whose keys start with `prefix`.
pub fn key_name(prefix: &str) -> String {
    format!("{prefix}{SUFFIX}")
}

/// Appends `:` and the current generation under each of `names` (generation keys) to
/// `key`, in that order. A missing one is created when this server may write (a primary);
/// false when one is missing and cannot be (a replica whose primary has not created it:
/// nothing cached can match).
pub fn append_current(ctx: &Context, names: &[String], key: &mut String) -> bool {
    for name in names {
        let Some(generation) = of(ctx, name) else {
            return false;
        };
        key.push(':');
        key.push_str(std::str::from_utf8(&generation).unwrap_or_default());
    }
    true
}

fn of(ctx: &Context, name: &str) -> Option<Generation> {
    let found = keyspace::with_name(ctx, name.as_bytes(), |key| {
        keyspace::read_string(ctx, key, parse)
    });
    if let Some(Some(generation)) = found {
        return Some(generation);
    }
    if !writable(ctx) {
        return None;
    }
    let mut random = [0u8; 8];
    openssl::rand::rand_bytes(&mut random).ok()?;
    let generation = hex::encode(&random);
    let expires_at = (crate::model::event::now_ms() + u128::from(MAX_TTL_SECONDS) * 1000) as i64;
    let text = std::str::from_utf8(&generation).ok()?;
    keyspace::with_name(ctx, name.as_bytes(), |key| {
        keyspace::set_until(ctx, key, text, expires_at)
    });
    Some(generation)
}

/// A generation key's value, if it is one (anything else, written by hand, is none).
fn parse(value: &[u8]) -> Option<Generation> {
    let generation: Generation = value.try_into().ok()?;
    generation
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        .then_some(generation)
}

/// Ends the generation of the table (or cache) whose keys start with `prefix`, in each of
/// `dbs`: every result that read it becomes unreachable. Replicated, as DEL.
pub fn end(ctx: &Context, prefix: &str, dbs: &[i32]) {
    if !writable(ctx) {
        return;
    }
    let name = key_name(prefix);
    let options = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    keyspace::in_each_db(ctx, dbs.iter().copied(), |_| {
        if keyspace::with_name(ctx, name.as_bytes(), |key| keyspace::exists(ctx, key)) {
            let deleted: CallResult = ctx.call_ext("DEL", &options, &[name.as_str()]);
            if let Err(e) = deleted {
                ctx.log_warning(&format!(
                    "pgcache: DEL of {name} failed: {}",
                    e.to_utf8_string().unwrap_or_default()
                ));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_reads_back_as_written() {
        let generation = hex::encode(&[0xab, 1, 2, 3, 4, 5, 6, 0xff]);
        assert_eq!(parse(&generation), Some(generation));
        assert_eq!(parse(b"not a generation"), None);
        assert_eq!(parse(b"0123456789ABCDEF"), None);
        assert_eq!(key_name("pg_cache:users:"), "pg_cache:users:~gen");
    }
}
