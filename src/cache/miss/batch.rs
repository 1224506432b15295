//! Many keys of one table (MULTIREAD, and MGET of one table's keys): the hits from the cache,
//! each distinct missed key fetched once, all in one query (or, when there are many, in
//! parallel parts), and the answers in the caller's order.

use super::{Read, count_hit, must_be_canonical};
use crate::cache::fill::{self, FillTicket};
use crate::cache::tags::{self, Keep};
use crate::cache::worker;
use crate::cache::{self, Cached, applied, onloop};
use crate::config::current;
use crate::error::{Error, Result};
use crate::events;
use crate::model::event::EventKind;
use crate::model::key::{self, CanonicalPk};
use crate::model::source::SourceId;
use crate::model::tags::Tags;
use crate::pg::pool::PooledClient;
use crate::pg::schema::{self, TableSchema};
use crate::pg::{fetch, normalise, standby};
use crate::redis::acl;
use crate::redis::cluster;
use crate::redis::keyspace::{self, Name};
use crate::requests::blocked::{Completion, error_completion};
use crate::requests::reply::Reply;
use crate::stats;
use redis_module::Context;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads the rows of `items` (pk JSON as sent) in `source`'s `table_arg`: hits from the cache, the
/// misses fetched together; with `Read::FromPostgres`, every row fetched. With `named`, the
/// cache keys the client named (PGCACHE.MGET), each of which must be its row's canonical key.
pub fn many(
    ctx: &Context,
    source: SourceId,
    table_arg: &[u8],
    items: Vec<&[u8]>,
    named: Option<Vec<Vec<u8>>>,
    keep: Keep,
    read: Read,
) -> Result<Reply> {
    // A table not seen yet is resolved first, also for an empty array: a table that does
    // not exist is an error whatever the array holds. A read that must not trust the cache
    // fetches every key, on a worker, as for a table not seen yet.
    let schema = schema::of(source)
        .cached(table_arg)
        .filter(|_| read == Read::Cached);
    let Some(schema) = schema else {
        let table = schema::of(source).admit_arg(table_arg)?;
        let items: Vec<Vec<u8>> = items.iter().map(|i| i.to_vec()).collect();
        return Ok(all_on_a_worker(
            ctx, source, table, items, named, keep, read,
        ));
    };
    if items.is_empty() {
        return Ok(Reply::Array(Vec::new()));
    }
    let keys = canonicalise_all(items, &schema)?;
    if let Some(named) = &named
        && keys.iter().all(|k| !k.unconfirmed)
    {
        all_canonical(named, &schema, &keys)?;
    }
    let derived = named.is_none();
    if derived && keys.iter().all(|k| !k.unconfirmed) {
        // Keys PostgreSQL must spell are checked once it has (`Batch::complete`); keys the
        // client named (MGET) were routed and checked by the server.
        one_served_slot(ctx, &schema, &keys)?;
    }
    if derived {
        all_readable(ctx, &schema, &keys)?;
    }
    let (slots, names) = look_up(ctx, &schema, &keys, &keep.tags);
    if slots.iter().all(|s| *s != Cached::Miss) {
        schema.stats.calls.inc();
        return Ok(Reply::Array(slots.into_iter().map(slot_reply).collect()));
    }
    if keys
        .iter()
        .zip(&slots)
        .any(|(k, s)| k.unconfirmed && *s == Cached::Miss)
    {
        // Missed keys PostgreSQL must spell: confirm them, then register their fills and
        // fetch, all on the worker (hits above proved their spellings canonical).
        return Ok(worker::submit(
            ctx,
            schema.source,
            Box::new(move |client| {
                let keys = normalise::confirm_all(client, &schema, keys)?;
                if let Some(named) = &named {
                    all_canonical(named, &schema, &keys)?;
                }
                let batch = Batch::new(schema, keys, slots, Vec::new(), keep, derived);
                let rows = fetch::many(client, &batch.schema, &batch.distinct)?;
                Ok(batch.complete(rows))
            }),
        ));
    }
    Ok(fetch_misses(
        ctx,
        Batch::new(schema, keys, slots, names, keep, derived),
    ))
}

/// In cluster mode, the keys must share one slot this node serves, as for any multi-key
/// command: otherwise the reply is Redis's own CROSSSLOT or redirection, never a partial
/// answer.
fn one_served_slot(ctx: &Context, schema: &TableSchema, keys: &[CanonicalPk]) -> Result<()> {
    if keys.is_empty() || !cluster::enabled() {
        return Ok(());
    }
    let names: Vec<String> = keys
        .iter()
        .map(|k| k.cache_key(&schema.key_prefix))
        .collect();
    let first = cluster::slot(names[0].as_bytes());
    if names.iter().any(|n| cluster::slot(n.as_bytes()) != first) {
        return Err(Error::redis_reply(
            "CROSSSLOT Keys in request don't hash to the same slot",
        ));
    }
    cluster::check(ctx, &names[0])
}

/// Checks that the client's ACL user may read every key, as Redis checks the keys of a
/// multi-key command of its own.
fn all_readable(ctx: &Context, schema: &TableSchema, keys: &[CanonicalPk]) -> Result<()> {
    let prefix = schema.key_prefix.as_bytes();
    match keys
        .iter()
        .find(|k| !cache::readable(ctx, prefix, k.json.as_bytes()))
    {
        Some(refused) => Err(acl::no_read_permission(
            &refused.cache_key(&schema.key_prefix),
        )),
        None => Ok(()),
    }
}

/// Checks that each named key is the canonical key of its row.
pub fn all_canonical(named: &[Vec<u8>], schema: &TableSchema, keys: &[CanonicalPk]) -> Result<()> {
    named
        .iter()
        .zip(keys)
        .try_for_each(|(named, key)| must_be_canonical(named, schema, key))
}

/// A table not seen yet: its schema, the keys' spellings and the rows, all on one worker.
fn all_on_a_worker(
    ctx: &Context,
    source: SourceId,
    table: String,
    items: Vec<Vec<u8>>,
    named: Option<Vec<Vec<u8>>>,
    keep: Keep,
    read: Read,
) -> Reply {
    let db = keyspace::selected_db(ctx);
    worker::submit(
        ctx,
        source,
        Box::new(move |client| {
            let schema = schema::of(source).resolve(client, &table)?;
            let keys = canonicalise_all(items.iter().map(Vec::as_slice), &schema)?;
            let keys = normalise::confirm_all(client, &schema, keys)?;
            if let Some(named) = &named {
                all_canonical(named, &schema, &keys)?;
            }
            let derived = named.is_none();
            let slots = slots_for(read, db, &schema, &keys, &keep.tags);
            let batch = Batch::new(schema, keys, slots, Vec::new(), keep, derived);
            let rows = fetch::many(client, &batch.schema, &batch.distinct)?;
            Ok(batch.complete(rows))
        }),
    )
}

/// On a worker, what a read may take from the cache before it fetches: for a read `AFTER`
/// a position, what the cache holds once it reflects it (if it does in time); otherwise
/// nothing, every key is fetched.
pub fn slots_for(
    read: Read,
    db: i32,
    schema: &Arc<TableSchema>,
    keys: &[CanonicalPk],
    tags: &Tags,
) -> Vec<Cached> {
    match read {
        Read::After(lsn) => super::looked_up_once_applied(lsn, db, schema, keys, tags),
        Read::Cached | Read::FromPostgres | Read::Unvouched => None,
    }
    .unwrap_or_else(|| vec![Cached::Miss; keys.len()])
}

/// Each key's cache entry, if any (for a tagged call, only one that carries its `tags`); the
/// hits are counted (`count_hit`).
pub fn look_up(
    ctx: &Context,
    schema: &TableSchema,
    keys: &[CanonicalPk],
    tags: &Tags,
) -> (Vec<Cached>, Vec<Option<Name>>) {
    let prefix = schema.key_prefix.as_bytes();
    if tags.is_some() {
        let names: Vec<String> = (keys.iter())
            .map(|key| key.cache_key(&schema.key_prefix))
            .collect();
        tags::serve_tagged_only_many(ctx, schema.source, &names, tags);
    }
    let (slots, names): (Vec<Cached>, Vec<Option<Name>>) = keys
        .iter()
        .map(|k| cache::get_or_name(ctx, schema.source, prefix, k.json.as_bytes()))
        .unzip();
    for (key, _) in keys.iter().zip(&slots).filter(|(_, s)| **s != Cached::Miss) {
        count_hit(ctx, schema, key.json.as_bytes());
    }
    (slots, names)
}

/// Fetches the batch's misses: in one query, or, when there are many, in parallel parts,
/// one query each, on several connections.
fn fetch_misses(ctx: &Context, batch: Batch) -> Reply {
    // Read with the tickets: a standby answers once it replayed what began being applied,
    // the workers reading it there in one query.
    let needed = applied::needed(ctx, batch.schema.source);
    if batch.schema.batchable && standby::could_take(batch.schema.source, needed) {
        let needed = needed.expect("a standby takes a position");
        let deadline = Instant::now() + Duration::from_millis(current::request_timeout_ms());
        return worker::submit(
            ctx,
            batch.schema.source,
            Box::new(move |client| {
                let rows =
                    match worker::rows_on_standby(&batch.schema, &batch.distinct, needed, deadline)
                    {
                        Some(rows) => rows,
                        None => fetch::many(client, &batch.schema, &batch.distinct)?,
                    };
                Ok(batch.complete(rows))
            }),
        );
    }
    // Few enough keys of a table: one statement the event loop sends itself.
    if onloop::takes_many(&batch.schema, &batch.distinct) {
        let checked = match worker::may_wait(ctx, batch.schema.source) {
            Ok(checked) => checked,
            Err(refusal) => return refusal,
        };
        let (schema, keys) = (batch.schema.clone(), batch.distinct.clone());
        let then = Box::new(move |rows: onloop::Rows| match rows {
            Ok(rows) => batch.complete(rows),
            Err(e) => error_completion(e),
        });
        return onloop::submit_many(ctx, checked, schema, keys, then);
    }
    let ranges = split(batch.distinct.len(), worker::count());
    if ranges.len() == 1 {
        return worker::submit(
            ctx,
            batch.schema.source,
            Box::new(move |client| {
                let rows = fetch::many(client, &batch.schema, &batch.distinct)?;
                Ok(batch.complete(rows))
            }),
        );
    }
    let parts: Vec<worker::Part> = ranges
        .into_iter()
        .map(|range| {
            let (schema, distinct) = (batch.schema.clone(), batch.distinct.clone());
            let part: worker::Part =
                Box::new(move |client| fetch::many(client, &schema, &distinct[range]));
            part
        })
        .collect();
    worker::submit_parts(
        ctx,
        batch.schema.source,
        parts,
        Box::new(move |rows| batch.complete(rows.concat())),
    )
}

/// Fewest keys worth a part of their own: below this, a second round trip costs more than
/// the parallel index lookups save.
const MIN_KEYS_PER_PART: usize = 32;

/// Splits `keys` positions into at most `workers` contiguous ranges of at least
/// MIN_KEYS_PER_PART.
fn split(keys: usize, workers: usize) -> Vec<Range<usize>> {
    let parts = (keys / MIN_KEYS_PER_PART).clamp(1, workers.max(1));
    let size = keys.div_ceil(parts).max(1);
    (0..keys)
        .step_by(size)
        .map(|start| start..(start + size).min(keys))
        .collect()
}

pub fn canonicalise_all<'a>(
    items: impl IntoIterator<Item = &'a [u8]>,
    schema: &TableSchema,
) -> Result<Vec<CanonicalPk>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            key::canonicalise(item, schema)
                .map_err(|e| Error::invalid(format!("key {} of the array: {e}", i + 1)))
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

/// Where the answer for one position of the caller's array comes from.
enum Slot {
    Cached(Cached),
    /// The row fetched for `distinct[i]`.
    Fetched(usize),
}

/// One MULTIREAD's keys: the slots already answered from the cache, and the distinct keys
/// still to fetch, each with its registered fill.
pub struct Batch {
    schema: Arc<TableSchema>,
    slots: Vec<Slot>,
    /// Shared by the parts that fetch it.
    distinct: Arc<[CanonicalPk]>,
    tickets: Vec<FillTicket>,
    /// The names the distinct keys were probed under, where kept (the rows are stored
    /// under them).
    names: Vec<Option<Name>>,
    keep: Keep,
    /// Whether the keys were derived (MULTIREAD) rather than named (MGET, which the server
    /// routed): derived keys are checked against the cluster's slots.
    derived: bool,
}

impl Batch {
    /// `cached[i]` is what the cache holds for `keys[i]`, and `names[i]` (if given) the name
    /// it was probed under. Registers the fills, so call it before the query.
    pub fn new(
        schema: Arc<TableSchema>,
        keys: Vec<CanonicalPk>,
        cached: Vec<Cached>,
        mut names: Vec<Option<Name>>,
        keep: Keep,
        derived: bool,
    ) -> Batch {
        let mut first_of: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
        let mut firsts = Vec::new();
        let slots: Vec<Slot> = keys
            .iter()
            .zip(cached)
            .enumerate()
            .map(|(position, (key, cached))| match cached {
                Cached::Miss => Slot::Fetched(*first_of.entry(&key.json).or_insert_with(|| {
                    firsts.push(position);
                    firsts.len() - 1
                })),
                hit => Slot::Cached(hit),
            })
            .collect();
        drop(first_of);
        let mut keys = keys;
        let distinct: Arc<[CanonicalPk]> = firsts
            .iter()
            .map(|&position| std::mem::take(&mut keys[position]))
            .collect();
        let names = firsts
            .iter()
            .map(|&position| names.get_mut(position).and_then(Option::take))
            .collect();
        let tickets = fill::register_fills(
            distinct
                .iter()
                .map(|k| k.shared_cache_key(&schema.key_prefix))
                .collect(),
            schema.source,
            &keep.tags,
        );
        Batch {
            schema,
            slots,
            distinct,
            tickets,
            names,
            keep,
            derived,
        }
    }

    /// Whether every key was answered from the cache.
    pub fn all_cached(&self) -> bool {
        self.distinct.is_empty()
    }

    /// The rows of the keys it still has to fetch, in one query (none when all hit).
    pub fn fetch(&self, client: &mut PooledClient<'_>) -> Result<Vec<Option<String>>> {
        if self.distinct.is_empty() {
            return Ok(Vec::new());
        }
        fetch::many(client, &self.schema, &self.distinct)
    }

    /// The main-thread half, given the rows of `distinct` in order: caches what was found
    /// (unless invalidated meanwhile) and replies every slot in the caller's order.
    pub fn complete(self, rows: Vec<Option<String>>) -> Completion {
        Box::new(move |ctx| {
            let Batch {
                schema,
                slots,
                distinct,
                tickets,
                names,
                keep,
                derived,
            } = self;
            // Keys first learnt on a worker are checked here, on the main thread.
            let checked = || {
                one_served_slot(ctx, &schema, &distinct)?;
                all_readable(ctx, &schema, &distinct)
            };
            if derived && let Err(redirect) = checked() {
                fill::finish_all(tickets, &rows);
                return redirect.into();
            }
            let found = rows.iter().filter(|r| r.is_some()).count() as u64;
            let summary = keys_summary(&distinct);
            stats::of(schema.source).misses.add(distinct.len() as u64);
            schema.stats.misses.add(distinct.len() as u64);
            let fetched = u32::try_from(distinct.len()).unwrap_or(u32::MAX);
            schema
                .stats
                .pass_through
                .missed(fetched, schema.stats.hits.get());
            let missed = distinct.iter().map(|k| k.json.as_str());
            events::publish_each(ctx, EventKind::Miss, schema.source, &schema.display, missed);
            // `distinct` is never empty: a batch is built for the keys it fetches.
            let first = distinct.first().map(|k| k.cache_key(&schema.key_prefix));
            let admission =
                cache::admission(ctx, schema.source, first.as_deref().unwrap_or_default());
            let mut filled = Vec::new();
            let mut tagged: Vec<Arc<str>> = Vec::new();
            // The keys join their tags' sets together, after the loop (one SADD a set).
            let untagged = Keep {
                ttl: keep.ttl,
                tags: None,
            };
            let mut names = names.into_iter();
            for ((key, row), (cache_key, fresh)) in distinct
                .iter()
                .zip(&rows)
                .zip(fill::finish_all(tickets, &rows))
            {
                let name = names.next().flatten();
                // Rows DDL could change unseen are answered, not kept (`TableSchema::uncached`).
                if fresh
                    && schema.uncached.is_none()
                    && cache::write_fetched(
                        ctx,
                        schema.source,
                        admission,
                        &cache_key,
                        name.as_ref(),
                        row.as_deref(),
                        &untagged,
                    )
                {
                    filled.push(key.json.as_str());
                    if keep.tags.is_some() {
                        tagged.push(cache_key);
                    }
                }
            }
            let tagged: Vec<&str> = tagged.iter().map(|k| &**k).collect();
            let longest = keep.ttl.max(current::of(schema.source).negative_ttl());
            tags::attach_new(ctx, schema.source, &tagged, &keep.tags, longest);
            events::publish_each(ctx, EventKind::Fill, schema.source, &schema.display, filled);
            Reply::Array(answers(slots, rows)).described(&schema.stats, summary, found)
        })
    }
}

/// The reply's elements in the caller's order; a fetched row is moved into its last slot
/// and copied only into earlier slots asking for the same key.
fn answers(slots: Vec<Slot>, mut rows: Vec<Option<String>>) -> Vec<Reply> {
    let mut uses = vec![0usize; rows.len()];
    for slot in &slots {
        if let Slot::Fetched(i) = slot {
            uses[*i] += 1;
        }
    }
    slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Cached(cached) => slot_reply(cached),
            Slot::Fetched(i) => {
                uses[i] -= 1;
                let row = if uses[i] == 0 {
                    rows[i].take()
                } else {
                    rows[i].clone()
                };
                row.map_or(Reply::Nil, Reply::Bulk)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_keeps_order_and_bounds_parts() {
        let sizes = |n, w| split(n, w).iter().map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(sizes(10, 4), vec![10]);
        assert_eq!(sizes(100, 1), vec![100]);
        assert_eq!(sizes(100, 2), vec![50, 50]);
        assert_eq!(sizes(100, 8), vec![34, 34, 32]);
        assert_eq!(sizes(1000, 4), vec![250, 250, 250, 250]);
        let covered: Vec<usize> = split(100, 3).into_iter().flatten().collect();
        assert_eq!(covered, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn answers_follow_the_callers_order_with_repeats() {
        let slots = vec![
            Slot::Fetched(1),
            Slot::Cached(Cached::Row("cached".into())),
            Slot::Fetched(0),
            Slot::Fetched(1),
            Slot::Cached(Cached::Absent),
            Slot::Fetched(2),
        ];
        let rows = vec![Some("a".to_string()), Some("b".to_string()), None];
        let bulk = |s: &str| Reply::Bulk(s.to_string());
        assert_eq!(
            answers(slots, rows),
            vec![
                bulk("b"),
                bulk("cached"),
                bulk("a"),
                bulk("b"),
                Reply::Nil,
                Reply::Nil
            ]
        );
    }
}
