//! The miss pipeline, one owner for every read command. A key not in the cache is fetched on
//! a worker, joining the fill of it in flight or leading one (`fill`); then, on the main
//! thread, the row is stored unless the key was invalidated meanwhile, the fill's waiters
//! are answered, and the client gets its reply. READ and GET miss one key (`one`, or
//! `on_worker` when only PostgreSQL can tell the key), MULTIREAD and MGET many (`many`,
//! `many_named`): each table's misses in one query.

mod batch;
mod groups;
pub mod read;

pub use batch::many;
pub use groups::many_named;

use crate::cache::fill::{self, FillTicket, LeadOrWait, Outcome};
use crate::cache::tags::{self, Keep};
use crate::cache::worker::{self, Keyed, KeyedFill, RowLookup, ThenLookup};
use crate::cache::{self, Cached, Readable, applied, onloop};
use crate::config::current;
use crate::error::{Error, Result};
use crate::events;
use crate::model::event::EventKind;
use crate::model::key::{self, CanonicalPk};
use crate::model::lsn::Lsn;
use crate::model::source::SourceId;
use crate::model::tags::Tags;
use crate::pg::normalise;
use crate::pg::schema::{self, TableSchema};
use crate::redis::acl;
use crate::redis::cluster;
use crate::redis::keyspace::{self, Name};
use crate::redis::main_thread;
use crate::requests::blocked::Completion;
use crate::requests::reply::Reply;
use crate::stats;
use redis_module::Context;
use std::sync::Arc;
use std::time::Duration;

/// Counts a hit of `schema`'s table and raises its `hit` event: every READ and MULTIREAD hit
/// comes through here. (Redis-wide `hits` and `negative_hits` are counted by `cache` as it
/// reads the entry.) `key` is the canonical key, as bytes so that the hit path converts
/// nothing unless someone takes hit events.
#[inline]
pub fn count_hit(ctx: &Context, schema: &TableSchema, key: &[u8]) {
    schema.stats.hits.inc();
    if events::wanted(EventKind::Hit) {
        events::publish(
            ctx,
            EventKind::Hit,
            schema.source,
            &schema.display,
            &String::from_utf8_lossy(key),
        );
    }
}

/// Where a read may take its row: the cache (and any fill in flight), or, for a client that
/// asked for its own writes (`AFTER`) before the cache reflects them, PostgreSQL alone; or,
/// while the replication source streams, the cache once it reaches that position, if it does
/// within `after_wait_ms`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Cached,
    FromPostgres,
    After(Lsn),
    /// The change feed has not vouched for the cache within the read's freshness bound:
    /// PostgreSQL answers, and nothing is filled while the feed cannot vouch for it.
    Unvouched,
}

/// How long a worker waits for the main thread to look a key up.
const LOOKUP_LIMIT: Duration = Duration::from_millis(100);

/// Whose key a miss reads: one derived from the table and pk (READ's), which the server
/// could not route, with the name the cache was probed under (the row is stored under it);
/// or one the client named (GET's), which it routed.
pub enum KeyFrom {
    Derived(Name),
    Named,
}

/// A miss of a key known here (READ, GET): wait for the fill of it in flight, or fetch it
/// and fill. A derived key is first checked against the cluster's slots.
pub fn one(
    ctx: &Context,
    schema: Arc<TableSchema>,
    pk: CanonicalPk,
    keep: Keep,
    from: KeyFrom,
) -> Reply {
    let key = pk.shared_cache_key(&schema.key_prefix);
    let name = match from {
        KeyFrom::Derived(name) => {
            if let Err(redirect) = cluster::check(ctx, &key) {
                return redirect.into();
            }
            Some(name)
        }
        KeyFrom::Named => None,
    };
    let checked = match worker::may_wait(ctx, schema.source) {
        Ok(checked) => checked,
        Err(refusal) => return refusal,
    };
    // Read with the fill's ticket (taken below, on this thread, where no change's application
    // begins meanwhile): a standby answers once it replayed what began being applied.
    let needed = applied::needed(ctx, schema.source);
    // The table's rows die unread, or DDL could change them unseen: PostgreSQL's answer
    // goes back uncached.
    let passes = schema.uncached.is_some()
        || !schema
            .stats
            .pass_through
            .fill_this_miss(current::of(schema.source).pass_through());
    let then: ThenLookup = if passes {
        Box::new(passed_completion)
    } else {
        let ticket = if keep.tags.is_some() {
            // A tagged read leads its own fill: one in flight would cache without its tags.
            fill::lead(key, schema.source, &keep.tags)
        } else {
            let asked = fill::Asked::row(schema.source, &schema.stats, &pk.json);
            match fill::lead_or_wait(ctx, key, current::request_timeout_ms(), asked) {
                LeadOrWait::Wait => return Reply::Blocked,
                LeadOrWait::Lead(ticket) => ticket,
            }
        };
        Box::new(move |outcome: Outcome, schema, pk| {
            ticket.answer_waiters(&outcome);
            fill_completion(outcome, schema, pk, keep, ticket, name)
        })
    };
    let lookup = RowLookup {
        schema,
        pk,
        needed,
        then,
    };
    onloop::submit_lookup(ctx, checked, lookup)
}

/// The main-thread half of a miss: cache the row, or remember for `negative_ttl` that there
/// is none, unless the key was invalidated while the query ran; then reply.
fn fill_completion(
    outcome: Outcome,
    schema: Arc<TableSchema>,
    pk: CanonicalPk,
    keep: Keep,
    ticket: FillTicket,
    name: Option<Name>,
) -> Completion {
    Box::new(move |ctx| {
        let (key, fresh) = ticket.finish(&outcome);
        let rows = outcome.as_ref().map_or(0, |row| u64::from(row.is_some()));
        let reply = match outcome {
            Err(e) => Reply::Error(e),
            Ok(row) => {
                counted_miss(ctx, &schema, &pk);
                // Rows DDL could change unseen are answered, not kept (`TableSchema::uncached`).
                if fresh
                    && schema.uncached.is_none()
                    && cache::write_fetched(
                        ctx,
                        schema.source,
                        cache::admission(ctx, schema.source, &key),
                        &key,
                        name.as_ref(),
                        row.as_deref(),
                        &keep,
                    )
                {
                    events::publish(
                        ctx,
                        EventKind::Fill,
                        schema.source,
                        &schema.display,
                        &pk.json,
                    );
                }
                Reply::from(row)
            }
        };
        // The key moves into the reply's description: this runs once per miss.
        reply.described(&schema.stats, pk.json, rows)
    })
}

/// The main-thread half of a miss passed through: the reply, nothing cached.
fn passed_completion(outcome: Outcome, schema: Arc<TableSchema>, pk: CanonicalPk) -> Completion {
    Box::new(move |ctx| {
        let rows = outcome.as_ref().map_or(0, |row| u64::from(row.is_some()));
        let reply = match outcome {
            Err(e) => Reply::Error(e),
            Ok(row) => {
                counted_miss(ctx, &schema, &pk);
                Reply::from(row)
            }
        };
        reply.described(&schema.stats, pk.json, rows)
    })
}

/// Counts a key fetched from PostgreSQL and raises its `miss` event.
fn counted_miss(ctx: &Context, schema: &TableSchema, pk: &CanonicalPk) {
    stats::of(schema.source).misses.inc();
    schema.stats.misses.inc();
    schema.stats.pass_through.missed(1, schema.stats.hits.get());
    events::publish(
        ctx,
        EventKind::Miss,
        schema.source,
        &schema.display,
        &pk.json,
    );
}

/// A read whose cache key only PostgreSQL can tell: the first use of a table spelling (the
/// worker reads its schema), or a key PostgreSQL must spell (`normalise`). Once the worker
/// knows the key, the READ goes the way of any miss: it waits for a fill of that key in
/// flight, or leads one. With `named`, the key the client named (PGCACHE.GET), which must
/// be that canonical key. `source`: whose database the read reads.
pub fn on_worker(
    ctx: &Context,
    source: SourceId,
    table_arg: &[u8],
    pk_arg: &[u8],
    keep: Keep,
    named: Option<Vec<u8>>,
    read: Read,
) -> Reply {
    let table = match schema::of(source).admit_arg(table_arg) {
        Ok(t) => t,
        Err(e) => return e.into(),
    };
    let pk_arg = pk_arg.to_vec();
    let db = keyspace::selected_db(ctx);
    worker::submit_keyed(
        ctx,
        source,
        Box::new(move |client| {
            let schema = schema::of(source).resolve(client, &table)?;
            let pk = normalise::confirm(client, &schema, key::canonicalise(&pk_arg, &*schema)?)?;
            if let Some(named) = &named {
                must_be_canonical(named, &schema, &pk)?;
            }
            // A key the client named was routed by the server; a derived one is checked.
            let derived = named.is_none();
            if let Read::After(lsn) = read
                && let Some(answer) =
                    cached_once_applied(lsn, db, &schema, &pk, derived, &keep.tags)
            {
                return Ok(Keyed::Answer(answer));
            }
            // A tagged read leads its own fill: one in flight would cache without its tags.
            let fresh = read != Read::Cached || keep.tags.is_some();
            let tags = keep.tags.clone();
            let then = Box::new(move |outcome, ticket, schema, pk| {
                first_completion(outcome, schema, pk, keep, ticket, derived, read)
            });
            Ok(Keyed::Fill(KeyedFill {
                schema,
                pk,
                fresh,
                tags,
                then,
            }))
        }),
    )
}

/// For a read `AFTER lsn`, on a worker: waits up to `after_wait_ms` for the cache to reach
/// `lsn`, then has the main thread look `keys` up in the client's DB `db` (hits counted as
/// any read's). None when the cache did not reach `lsn` in time, or the main thread did not
/// answer: the keys are then read from PostgreSQL.
pub fn looked_up_once_applied(
    lsn: Lsn,
    db: i32,
    schema: &Arc<TableSchema>,
    keys: &[CanonicalPk],
    tags: &Tags,
) -> Option<Vec<Cached>> {
    if !applied::of(schema.source).wait_for(lsn, current::of(schema.source).after_wait()) {
        return None;
    }
    let (schema, keys, tags) = (schema.clone(), keys.to_vec(), tags.clone());
    main_thread::ask(
        move |ctx| {
            let mut slots = Vec::new();
            keyspace::in_each_db(ctx, [db], |_| {
                slots = batch::look_up(ctx, &schema, &keys, &tags).0;
            });
            slots
        },
        LOOKUP_LIMIT,
    )
}

/// `looked_up_once_applied` for one key (READ, GET): the completion answering from the
/// cache when it holds the key, checking a `derived` key's slot and read permission as a hit
/// does.
fn cached_once_applied(
    lsn: Lsn,
    db: i32,
    schema: &Arc<TableSchema>,
    pk: &CanonicalPk,
    derived: bool,
    tags: &Tags,
) -> Option<Completion> {
    let slots = looked_up_once_applied(lsn, db, schema, std::slice::from_ref(pk), tags)?;
    let row = match slots.into_iter().next()? {
        Cached::Miss => return None,
        Cached::Absent => None,
        Cached::Row(row) => Some(row),
    };
    let (schema, pk) = (schema.clone(), pk.clone());
    Some(Box::new(move |ctx| {
        if derived {
            let key = pk.cache_key(&schema.key_prefix);
            if let Err(redirect) = cluster::check(ctx, &key) {
                return redirect.into();
            }
            if !cache::readable(ctx, schema.key_prefix.as_bytes(), pk.json.as_bytes()) {
                return acl::no_read_permission(&key).into();
            }
        }
        // The row as the cache held it once it reflected the client's position: a later
        // change may have dropped the entry since, never one the client must see.
        Reply::from(row).described(&schema.stats, pk.json.as_str(), 0)
    }))
}

/// The main-thread half of `on_worker`'s miss. A `derived` key (READ's) is redirected
/// when this cluster node does not serve it. The entry may already be cached under the
/// canonical key (another spelling filled it); then the cached row is the answer, as for any
/// hit, and the fetched one is dropped.
fn first_completion(
    outcome: Outcome,
    schema: Arc<TableSchema>,
    pk: CanonicalPk,
    keep: Keep,
    ticket: FillTicket,
    derived: bool,
    read: Read,
) -> Completion {
    Box::new(move |ctx| {
        if derived && let Err(redirect) = cluster::check(ctx, &pk.cache_key(&schema.key_prefix)) {
            ticket.finish(&outcome);
            return redirect.into();
        }
        // A derived key's read permission is checked here, where it is first known (GET's
        // key the server checked).
        let (prefix, suffix) = (schema.key_prefix.as_bytes(), pk.json.as_bytes());
        if keep.tags.is_some() {
            let key = pk.cache_key(&schema.key_prefix);
            tags::serve_tagged_only(ctx, schema.source, &key, &keep.tags);
        }
        let cached = if read != Read::Cached {
            // The entry may predate the client's write: the row fetched is the answer.
            if derived && !cache::readable(ctx, prefix, suffix) {
                Readable::Refused
            } else {
                Readable::NotCached(Name::new(&[prefix, suffix].concat()))
            }
        } else if derived {
            cache::reply_if_readable(ctx, schema.source, prefix, suffix)
        } else if cache::reply_if_cached(ctx, schema.source, prefix, suffix) {
            Readable::Replied
        } else {
            Readable::NotCached(Name::new(&[prefix, suffix].concat()))
        };
        match cached {
            Readable::Replied => {
                ticket.finish(&outcome);
                count_hit(ctx, &schema, pk.json.as_bytes());
                Reply::Sent.described(&schema.stats, pk.json.as_str(), 0)
            }
            Readable::Refused => {
                ticket.finish(&outcome);
                acl::no_read_permission(&pk.cache_key(&schema.key_prefix)).into()
            }
            Readable::NotCached(name) => {
                fill_completion(outcome, schema, pk, keep, ticket, Some(name))(ctx)
            }
        }
    })
}

/// Refuses a key the client named that is not the canonical key of its row, showing that.
pub fn must_be_canonical(
    named: &[u8],
    schema: &schema::TableSchema,
    pk: &CanonicalPk,
) -> Result<()> {
    let canonical = pk.cache_key(&schema.key_prefix);
    if canonical.as_bytes() == named {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{:?} is not a canonical cache key; this row's key is {canonical:?} (PGCACHE.KEY \
         gives it)",
        String::from_utf8_lossy(named)
    )))
}
