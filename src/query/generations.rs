//! Generations: one key per table (`<table's key prefix>~gen`, beside its rows' entries) and
//! one for the whole cache (`<cache_prefix>~gen`), each holding a random 128-bit value.
//! Every result key is built from the generations of the cache and of each table its
//! statement reads (`key`), taken on the main thread before the statement runs. When the
//! change feed applies a change to a table, or a flush starts, the generation key is
//! deleted; the next read creates a new random one. Results built under the old value are
//! never looked up again (they expire with their TTL): no result can be served after a
//! change to a table it read was applied, and a fill whose statement ran across a change
//! lands under a key nobody builds any more. The keys are ordinary keys, so the RDB, the
//! AOF and the replicas carry them with the results they vouch for.

use crate::cache;
use crate::config::MAX_TTL_SECONDS;
use crate::pg::schema::TableSchema;
use crate::redis::keyspace;
use crate::redis::role::writable;
use redis_module::Context;
use std::sync::Arc;

/// A generation's value.
pub type Generation = [u8; 16];

/// What follows a table's (or the cache's) key prefix in its generation key's name.
const SUFFIX: &str = "~gen";

/// The generation key of the table (or cache) whose keys start with `prefix`.
pub fn key_name(prefix: &str) -> String {
    format!("{prefix}{SUFFIX}")
}

/// The current generations of the cache and of each of `tables`, in that order. A missing
/// one is created when this server may write (a primary); None when one is missing and
/// cannot be (a replica whose primary has not created it: nothing cached can match).
pub fn current(
    ctx: &Context,
    cache_prefix: &str,
    tables: &[Arc<TableSchema>],
) -> Option<Vec<Generation>> {
    let prefixes =
        std::iter::once(cache_prefix).chain(tables.iter().map(|t| t.key_prefix.as_str()));
    prefixes.map(|prefix| of(ctx, prefix)).collect()
}

fn of(ctx: &Context, prefix: &str) -> Option<Generation> {
    let name = key_name(prefix);
    let found = keyspace::with_name(ctx, name.as_bytes(), |key| {
        keyspace::read_string(ctx, key, parse)
    });
    if let Some(Some(generation)) = found {
        return Some(generation);
    }
    if !writable(ctx) {
        return None;
    }
    let mut generation = [0u8; 16];
    openssl::rand::rand_bytes(&mut generation).ok()?;
    let expires_at = (crate::model::event::now_ms() + u128::from(MAX_TTL_SECONDS) * 1000) as i64;
    keyspace::with_name(ctx, name.as_bytes(), |key| {
        keyspace::set_until(ctx, key, &hex(&generation), expires_at)
    });
    Some(generation)
}

fn parse(value: &[u8]) -> Option<Generation> {
    if value.len() != 32 {
        return None;
    }
    let mut generation = [0u8; 16];
    for (i, pair) in value.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        generation[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(generation)
}

fn hex(generation: &Generation) -> String {
    generation.iter().map(|b| format!("{b:02x}")).collect()
}

/// Ends the generation of the table (or cache) whose keys start with `prefix`, in each of
/// `dbs`: every result that read it becomes unreachable. Replicated.
pub fn end(ctx: &Context, prefix: &str, dbs: &[i32]) {
    cache::delete_in(ctx, &key_name(prefix), dbs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_reads_back_as_written() {
        let generation = [0xab, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff];
        assert_eq!(parse(hex(&generation).as_bytes()), Some(generation));
        assert_eq!(parse(b"not a generation"), None);
        assert_eq!(key_name("pg_cache:users:"), "pg_cache:users:~gen");
    }
}
