//! PGCACHE.MULTIREAD <table> <json_array_of_pks> [ttl]
//!
//! Replies an array in the caller's order, nil where no row exists. Hits come from the
//! cache; every miss of the call is fetched in ONE query, each distinct key once.

use crate::cache::{self, Cached};
use crate::commands::read::checked_table;
use crate::commands::ttl_arg;
use crate::error::{Error, Result};
use crate::events::{self, EventKind};
use crate::fill::{self, FillTicket};
use crate::key::{self, CanonicalPk};
use crate::pg::fetch;
use crate::pg::schema::{self, TableSchema};
use crate::reply::Reply;
use crate::requests;
use crate::stats;
use crate::tunables;
use crate::worker::{self, Completion};
use redis_module::Context;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

pub fn multiread(ctx: &Context, args: &[&[u8]]) -> Reply {
    if !(3..=4).contains(&args.len()) {
        return Reply::WrongArity;
    }
    match prepare(ctx, args) {
        Ok(reply) => reply,
        Err(e) => e.into(),
    }
}

fn prepare(ctx: &Context, args: &[&[u8]]) -> Result<Reply> {
    let ttl = ttl_arg(args.get(3))?.unwrap_or_else(tunables::default_ttl);
    let items = parse_array(args[2])?;
    if items.is_empty() {
        return Ok(Reply::Array(Vec::new()));
    }
    let Some(schema) = schema::cached(args[1]) else {
        let table = checked_table(args[1])?;
        return Ok(worker::submit(
            ctx,
            Box::new(move |client| {
                let schema = schema::resolve(client, &table)?;
                let keys = canonicalise_all(&items, &schema)?;
                let batch = Batch::new(schema, keys, Vec::new(), ttl);
                let rows = fetch::many(client, &batch.schema, &batch.distinct)?;
                Ok(batch.complete(rows))
            }),
        ));
    };
    let keys = canonicalise_all(&items, &schema)?;
    let slots: Vec<Cached> = keys
        .iter()
        .map(|k| cache::get(ctx, &schema.cache_key(&k.json)))
        .collect();
    let hits = keys.iter().zip(&slots).filter(|(_, s)| **s != Cached::Miss);
    schema.stats.hits.add(hits.clone().count() as u64);
    events::publish_each(
        ctx,
        EventKind::Hit,
        &schema.display,
        hits.map(|(k, _)| k.json.as_str()),
    );
    if slots.iter().all(|s| *s != Cached::Miss) {
        schema.stats.calls.inc();
        return Ok(Reply::Array(slots.into_iter().map(slot_reply).collect()));
    }
    let batch = Batch::new(schema, keys, slots, ttl);
    let chunks = split(&batch.distinct, worker::count());
    if chunks.len() == 1 {
        return Ok(worker::submit(
            ctx,
            Box::new(move |client| {
                let rows = fetch::many(client, &batch.schema, &batch.distinct)?;
                Ok(batch.complete(rows))
            }),
        ));
    }
    // Many misses: fetch them in parallel parts, one query each, on several connections.
    let parts: Vec<worker::Part> = chunks
        .into_iter()
        .map(|chunk| {
            let schema = batch.schema.clone();
            let part: worker::Part = Box::new(move |client| fetch::many(client, &schema, &chunk));
            part
        })
        .collect();
    Ok(worker::submit_parts(
        ctx,
        parts,
        Box::new(move |rows| batch.complete(rows.concat())),
    ))
}

/// Fewest keys worth a part of their own: below this, a second round trip costs more than
/// the parallel index lookups save.
const MIN_KEYS_PER_PART: usize = 32;

/// Splits keys into at most `workers` contiguous chunks of at least MIN_KEYS_PER_PART.
fn split(keys: &[CanonicalPk], workers: usize) -> Vec<Vec<CanonicalPk>> {
    let parts = (keys.len() / MIN_KEYS_PER_PART).clamp(1, workers.max(1));
    let size = keys.len().div_ceil(parts);
    keys.chunks(size.max(1))
        .map(<[CanonicalPk]>::to_vec)
        .collect()
}

fn parse_array(arg: &[u8]) -> Result<Vec<Value>> {
    let value: Value = serde_json::from_slice(arg)
        .map_err(|e| Error::new(format!("keys are not valid JSON ({e})")))?;
    let Value::Array(items) = value else {
        return Err(Error::new(
            "keys must be a JSON array of key objects, such as [{\"id\":1},{\"id\":2}]",
        ));
    };
    let max = tunables::multiread_max();
    if items.len() > max {
        return Err(Error::new(format!(
            "{} keys in one MULTIREAD, more than pgcache.multiread_max ({max}); split the call",
            items.len()
        )));
    }
    Ok(items)
}

fn canonicalise_all(items: &[Value], schema: &TableSchema) -> Result<Vec<CanonicalPk>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            key::canonicalise_value(item, schema)
                .map_err(|e| Error::new(format!("key {} of the array: {e}", i + 1)))
        })
        .collect()
}

/// The fetched keys as the slowlog shows them: a JSON array, cut short after a few hundred
/// bytes (the slowlog cuts at 128).
fn keys_summary(keys: &[CanonicalPk]) -> String {
    let mut text = String::from("[");
    for (i, key) in keys.iter().enumerate() {
        if text.len() > 256 {
            text.push_str(&format!("... {} more keys", keys.len() - i));
            break;
        }
        if i > 0 {
            text.push(',');
        }
        text.push_str(&key.json);
    }
    text.push(']');
    text
}

fn slot_reply(slot: Cached) -> Reply {
    match slot {
        Cached::Row(row) => Reply::Bulk(row),
        Cached::Absent | Cached::Miss => Reply::Nil,
    }
}

/// One MULTIREAD's keys: the slots already answered from the cache, and the distinct keys
/// still to fetch, each with its registered fill.
struct Batch {
    schema: Arc<TableSchema>,
    keys: Vec<CanonicalPk>,
    slots: Vec<Cached>,
    distinct: Vec<CanonicalPk>,
    tickets: Vec<FillTicket>,
    ttl: u64,
}

impl Batch {
    /// `slots` may be empty: nothing was found in the cache. Registers the fills, so call
    /// it before the query.
    fn new(
        schema: Arc<TableSchema>,
        keys: Vec<CanonicalPk>,
        mut slots: Vec<Cached>,
        ttl: u64,
    ) -> Batch {
        slots.resize(keys.len(), Cached::Miss);
        let mut seen = std::collections::HashSet::new();
        let distinct: Vec<CanonicalPk> = keys
            .iter()
            .zip(&slots)
            .filter(|(key, slot)| **slot == Cached::Miss && seen.insert(key.json.as_str()))
            .map(|(key, _)| key.clone())
            .collect();
        let tickets = distinct
            .iter()
            .map(|k| fill::register_fill(&schema.cache_key(&k.json)))
            .collect();
        Batch {
            schema,
            keys,
            slots,
            distinct,
            tickets,
            ttl,
        }
    }

    /// The main-thread half, given the rows of `distinct` in order: caches what was found
    /// (unless invalidated meanwhile) and replies every slot in the caller's order.
    fn complete(self, rows: Vec<Option<String>>) -> Completion {
        Box::new(move |ctx| {
            let Batch {
                schema,
                keys,
                mut slots,
                distinct,
                tickets,
                ttl,
            } = self;
            let found = rows.iter().filter(|r| r.is_some()).count() as u64;
            requests::describe(&schema.stats, keys_summary(&distinct), found);
            stats::MISSES.add(distinct.len() as u64);
            schema.stats.misses.add(distinct.len() as u64);
            let missed = distinct.iter().map(|k| k.json.as_str());
            events::publish_each(ctx, EventKind::Miss, &schema.display, missed);
            let writable = cache::writable(ctx);
            let mut filled = Vec::new();
            let mut fetched: HashMap<&str, Cached> = HashMap::new();
            for ((key, row), ticket) in distinct.iter().zip(rows).zip(tickets) {
                if ticket.finish(&Ok(row.clone())) && writable {
                    cache::fill(ctx, &schema.cache_key(&key.json), row.as_deref(), ttl);
                    filled.push(key.json.as_str());
                }
                fetched.insert(&key.json, row.map_or(Cached::Absent, Cached::Row));
            }
            events::publish_each(ctx, EventKind::Fill, &schema.display, filled);
            for (key, slot) in keys.iter().zip(slots.iter_mut()) {
                if *slot == Cached::Miss {
                    *slot = fetched[key.json.as_str()].clone();
                }
            }
            Reply::Array(slots.into_iter().map(slot_reply).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<CanonicalPk> {
        (0..n)
            .map(|i| CanonicalPk {
                json: format!("{{\"id\":{i}}}"),
                columns: vec![("id".into(), i.to_string())],
            })
            .collect()
    }

    #[test]
    fn splitting_keeps_order_and_bounds_parts() {
        let sizes = |n, w| split(&keys(n), w).iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(10, 4), vec![10]);
        assert_eq!(sizes(100, 1), vec![100]);
        assert_eq!(sizes(100, 2), vec![50, 50]);
        assert_eq!(sizes(100, 8), vec![34, 34, 32]);
        assert_eq!(sizes(1000, 4), vec![250, 250, 250, 250]);
        let flat: Vec<CanonicalPk> = split(&keys(100), 3).concat();
        assert_eq!(flat, keys(100));
    }
}
