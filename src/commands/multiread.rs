//! PGCACHE.MULTIREAD <table> <json_array_of_pks> [ttl]
//!
//! Replies an array in the caller's order, nil where no row exists. Hits come from the
//! cache; every miss of the call is fetched in ONE query, each distinct key once.

use crate::cache;
use crate::commands::read::checked_table;
use crate::commands::ttl_arg;
use crate::error::{Error, Result};
use crate::events::{self, EventKind};
use crate::key::{self, CanonicalPk};
use crate::pg::fetch;
use crate::pg::pool::PooledClient;
use crate::pg::schema::{self, TableSchema};
use crate::reply::Reply;
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
                let slots = vec![None; keys.len()];
                fetch_missing(client, schema, keys, slots, ttl)
            }),
        ));
    };
    let keys = canonicalise_all(&items, &schema)?;
    let slots: Vec<Option<String>> = keys
        .iter()
        .map(|k| cache::get(ctx, &schema.cache_key(&k.json)))
        .collect();
    if tunables::events().contains(EventKind::Hit) {
        for (k, _) in keys.iter().zip(&slots).filter(|(_, s)| s.is_some()) {
            events::publish(ctx, EventKind::Hit, &schema.display, &k.json);
        }
    }
    if slots.iter().all(Option::is_some) {
        return Ok(Reply::Array(slots.into_iter().map(Reply::from).collect()));
    }
    Ok(worker::submit(
        ctx,
        Box::new(move |client| fetch_missing(client, schema, keys, slots, ttl)),
    ))
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

/// Worker half: one query for the distinct keys whose slot is empty; the completion caches
/// what was found and replies every slot in order.
fn fetch_missing(
    client: &mut PooledClient,
    schema: Arc<TableSchema>,
    keys: Vec<CanonicalPk>,
    mut slots: Vec<Option<String>>,
    ttl: u64,
) -> Result<Completion> {
    let mut distinct: Vec<CanonicalPk> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for (key, slot) in keys.iter().zip(&slots) {
        if slot.is_none() && !index_of.contains_key(key.json.as_str()) {
            index_of.insert(&key.json, distinct.len());
            distinct.push(key.clone());
        }
    }
    let rows = fetch::many(client, &schema, &distinct)?;
    for (key, slot) in keys.iter().zip(slots.iter_mut()) {
        if slot.is_none() {
            *slot = rows[index_of[key.json.as_str()]].clone();
        }
    }
    Ok(Box::new(move |ctx| {
        for (key, row) in distinct.iter().zip(&rows) {
            events::publish(ctx, EventKind::Miss, &schema.display, &key.json);
            if let Some(row) = row {
                cache::store(ctx, &schema.cache_key(&key.json), row, ttl);
            }
        }
        Reply::Array(slots.into_iter().map(Reply::from).collect())
    }))
}
