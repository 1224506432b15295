//! MGET over several tables: the rows of one pk value share a hash slot across tables, so
//! one call may name `pg_cache:users:{"id":7}` and `pg_cache:orders:{"id":7}`. Each table's
//! keys form a batch (its hits from the cache, its misses in one query); one worker job
//! fetches every batch's misses, and the answers are put back in the caller's order.

use super::batch::{Batch, all_canonical, canonicalise_all, look_up, slots_for};
use crate::cache::tags::Keep;
use crate::cache::worker;
use crate::error::{Error, Result};
use crate::model::source::SourceId;
use crate::pg::normalise;
use crate::pg::pool::PooledClient;
use crate::pg::schema;
use crate::redis::keyspace;
use crate::requests::blocked::Completion;
use crate::requests::reply::Reply;
use redis_module::Context;

/// The rows of `source`'s keys the client named (`named`, each split into its table and pk
/// JSON in `split`): one table's keys as one batch, several tables' as a batch each, fetched by one
/// worker job, with the answers put back in the caller's order.
pub fn many_named(
    ctx: &Context,
    source: SourceId,
    named: &[&[u8]],
    split: Vec<(&[u8], &[u8])>,
    keep: Keep,
    read: super::Read,
) -> Result<Reply> {
    let table = split[0].0;
    if split.iter().all(|(t, _)| *t == table) {
        let pks = split.iter().map(|(_, pk)| *pk).collect();
        let named = named.iter().map(|k| k.to_vec()).collect();
        return super::many(ctx, source, table, pks, Some(named), keep, read);
    }
    let mut groups: Vec<Group> = Vec::new();
    for (position, ((table, pk), name)) in split.iter().zip(named).enumerate() {
        let index = match groups.iter().position(|g| g.table == *table) {
            Some(index) => index,
            None => {
                groups.push(Group {
                    table: table.to_vec(),
                    positions: Vec::new(),
                    pks: Vec::new(),
                    named: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let group = &mut groups[index];
        group.positions.push(position);
        group.pks.push(pk.to_vec());
        group.named.push(name.to_vec());
    }
    read_groups(ctx, source, groups, named.len(), keep, read)
}

/// One table's keys in an MGET: where they sit in the call, their pk JSON and their names.
struct Group {
    table: Vec<u8>,
    positions: Vec<usize>,
    pks: Vec<Vec<u8>>,
    named: Vec<Vec<u8>>,
}

/// A group ready for the worker: a batch built here (its hits already read), or a table
/// whose schema or keys only a worker can tell.
enum Pending {
    Ready(Batch),
    OnWorker(String, Group),
}

/// Reads the rows of every group; `total` keys in all. A read that must not trust the
/// cache fetches every group's keys on a worker.
fn read_groups(
    ctx: &Context,
    source: SourceId,
    groups: Vec<Group>,
    total: usize,
    keep: Keep,
    read: super::Read,
) -> Result<Reply> {
    let db = keyspace::selected_db(ctx);
    let mut pending = Vec::with_capacity(groups.len());
    let mut positions = Vec::with_capacity(groups.len());
    for group in groups {
        positions.push(group.positions.clone());
        let known = schema::of(source)
            .cached(&group.table)
            .filter(|_| read == super::Read::Cached)
            .map(|schema| {
                let keys = canonicalise_all(group.pks.iter().map(Vec::as_slice), &schema)?;
                Ok::<_, Error>((schema, keys))
            })
            .transpose()?
            .filter(|(_, keys)| keys.iter().all(|k| !k.unconfirmed));
        match known {
            Some((schema, keys)) => {
                all_canonical(&group.named, &schema, &keys)?;
                let (slots, names) = look_up(ctx, &schema, &keys, &None);
                pending.push(Pending::Ready(Batch::new(
                    schema,
                    keys,
                    slots,
                    names,
                    keep.clone(),
                    false,
                )));
            }
            None => pending.push(Pending::OnWorker(
                schema::of(source).admit_arg(&group.table)?,
                group,
            )),
        }
    }
    if pending
        .iter()
        .all(|p| matches!(p, Pending::Ready(batch) if batch.all_cached()))
    {
        let completions = pending
            .into_iter()
            .filter_map(|p| match p {
                Pending::Ready(batch) => Some(batch.complete(Vec::new())),
                Pending::OnWorker(..) => None,
            })
            .collect();
        return Ok(in_callers_order(completions, positions, total)(ctx));
    }
    Ok(worker::submit(
        ctx,
        source,
        Box::new(move |client| {
            let mut completions = Vec::with_capacity(pending.len());
            for group in pending {
                let batch = match group {
                    Pending::Ready(batch) => batch,
                    Pending::OnWorker(table, group) => {
                        learn(client, source, &table, group, keep.clone(), read, db)?
                    }
                };
                let rows = batch.fetch(client)?;
                completions.push(batch.complete(rows));
            }
            Ok(in_callers_order(completions, positions, total))
        }),
    ))
}

/// A group of a table not seen yet, or of keys PostgreSQL must spell: a batch with every
/// key to fetch.
fn learn(
    client: &mut PooledClient<'_>,
    source: SourceId,
    table: &str,
    group: Group,
    keep: Keep,
    read: super::Read,
    db: i32,
) -> Result<Batch> {
    let schema = schema::of(source).resolve(client, table)?;
    let keys = canonicalise_all(group.pks.iter().map(Vec::as_slice), &schema)?;
    let keys = normalise::confirm_all(client, &schema, keys)?;
    all_canonical(&group.named, &schema, &keys)?;
    let slots = slots_for(read, db, &schema, &keys, &None);
    Ok(Batch::new(schema, keys, slots, Vec::new(), keep, false))
}

/// Runs each group's completion (filling the cache) and puts its answers back where the
/// caller asked for them.
fn in_callers_order(
    completions: Vec<Completion>,
    positions: Vec<Vec<usize>>,
    total: usize,
) -> Completion {
    Box::new(move |ctx| {
        let mut answers = vec![Reply::Nil; total];
        for (completion, positions) in completions.into_iter().zip(positions) {
            // The call as a whole is MGET's; each table it read counts it as one of its calls.
            let items = match completion(ctx) {
                Reply::Described(described) => {
                    described.1.table.calls.inc();
                    described.0
                }
                reply => reply,
            };
            let Reply::Array(items) = items else {
                return items;
            };
            for (position, item) in positions.into_iter().zip(items) {
                answers[position] = item;
            }
        }
        Reply::Array(answers)
    })
}
