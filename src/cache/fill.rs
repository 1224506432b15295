//! Fills in flight: how a miss becomes a cache entry without ever caching a stale row, and
//! without asking PostgreSQL twice for the same key at once.
//!
//! Every fill of a key registers here before its query and holds a `FillTicket`.
//! - No stale fill: an invalidation of the key while fills are in flight is counted; a fill
//!   caches its row only if no invalidation arrived since it registered. (A fill may read
//!   v1, an UPDATE commit v2 and its invalidation arrive, and only then the fill complete:
//!   that fill must not cache v1.) Checked on the main thread right before the write.
//! - Coalescing: a READ miss for a key whose fill is already in flight does not query; its
//!   client waits for that fill and gets the same answer. Only a fill that started after the
//!   key's last invalidation can be shared: one that started before may have read the row
//!   the invalidation replaced.
//! - Sources: a source's keys are named by its name, which a SET gives to a new number (and
//!   another database). Removing a source counts an invalidation of its fills in flight, and a
//!   fill a retired number's job registers afterwards is detached: in no entry, shared with
//!   nobody, cached never.

use crate::config::current;
use crate::error::Error;
use crate::model::source::{Scope, SourceId};
use crate::model::tags::Tags;
use crate::requests::blocked::{BlockedClient, Completion};
use crate::requests::reply::Reply;
use crate::stats::{self, TableStats};
use redis_module::Context;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A fill's result: the row, None for no row, or the error.
pub type Outcome = Result<Option<String>, Error>;

#[derive(Default)]
struct Entry {
    /// Fills of this key in flight.
    fills: usize,
    /// Invalidations of this key seen while fills were in flight.
    invalidations: u64,
    /// `invalidations` when the newest fill in flight registered.
    newest_start: u64,
    /// Clients waiting for a fill, each with `invalidations` when it joined: it shares the
    /// fill that registered at that count.
    waiters: Vec<(BlockedClient, u64)>,
    /// What the waiters asked for.
    asked: Option<Asked>,
    /// The tags the fills in flight will give the entry (`lead` with tags): an INVALIDATE
    /// TAG of one of them counts an invalidation here (`invalidated_tagged`).
    tags: Vec<Arc<str>>,
}

/// What the clients waiting for a key asked for: the table and canonical pk, for their
/// statistics, and the keys whose read permission stands for the key's (a QUERY result's:
/// its tables' generation keys; None: the key itself).
#[derive(Clone)]
pub struct Asked {
    /// Whose entry it is: a waiter joining its fill counts in its figures.
    pub source: SourceId,
    pub table: Arc<TableStats>,
    pub pk: String,
    pub readable_as: Option<Arc<[String]>>,
}

impl Asked {
    /// A row of `source` read by `table` and `pk`, whose own key is checked.
    pub fn row(source: SourceId, table: &Arc<TableStats>, pk: &str) -> Asked {
        Asked {
            source,
            table: table.clone(),
            pk: pk.to_string(),
            readable_as: None,
        }
    }
}

/// Fills by cache key. Hashed with foldhash (randomly seeded per process, so clients cannot
/// choose colliding keys ahead), not SipHash: every miss hashes its key twice here on the
/// main thread.
type Fills = HashMap<Arc<str>, Entry, foldhash::fast::RandomState>;

/// Touched from the main thread, and from workers to answer waiters as soon as a row is
/// known.
static FILLS: Mutex<Option<Fills>> = Mutex::new(None);

fn with_map<R>(f: impl FnOnce(&mut Fills) -> R) -> R {
    let mut guard = FILLS.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Fills::default))
}

/// A registered fill of one key. Dropping it unfinished (the request was refused, timed out
/// or failed) answers any waiters with an error and unregisters the fill.
pub struct FillTicket {
    /// Shared with the map's entry: registering copies no key.
    key: Arc<str>,
    invalidations_at_start: u64,
    done: bool,
    /// Registered for a retired source: no entry holds it (`register`).
    detached: bool,
}

/// What a READ miss should do.
pub enum LeadOrWait {
    /// Query PostgreSQL, holding this ticket.
    Lead(FillTicket),
    /// Another request is fetching this key; this client waits for it (already blocked).
    Wait,
}

/// Registers a fill of `key` (the row of `pk` in `table`) for a READ miss, or makes the
/// client wait for the one in flight. Main thread only.
pub fn lead_or_wait(ctx: &Context, key: Arc<str>, timeout_ms: u64, asked: Asked) -> LeadOrWait {
    with_map(|map| {
        if let Some(entry) = shareable(map, &key) {
            entry.add_waiter(BlockedClient::block(ctx, asked.source, timeout_ms), asked);
            return LeadOrWait::Wait;
        }
        LeadOrWait::Lead(register(map, key, asked.source))
    })
}

/// Like `lead_or_wait`, for a client already blocked, from a worker that just learned which
/// key the client reads: the client joins the fill in flight (None), or comes back with the
/// ticket to lead one.
pub fn lead_or_join(
    client: BlockedClient,
    key: &Arc<str>,
    source: SourceId,
    table: &Arc<TableStats>,
    pk: &str,
) -> Option<(FillTicket, BlockedClient)> {
    with_map(|map| {
        if !current::retired(source)
            && let Some(entry) = shareable(map, key)
        {
            entry.add_waiter(client, Asked::row(source, table, pk));
            return None;
        }
        Some((register(map, key.clone(), source), client))
    })
}

/// Registers a fill of `key` that joins none in flight: its query starts after the client's
/// request, so its row is at least as fresh as the client's own committed writes. `tags`:
/// those its completion gives the entry.
pub fn lead(key: Arc<str>, source: SourceId, tags: &Tags) -> FillTicket {
    with_map(|map| register_tagged(map, key, source, tags))
}

/// `register`, and with `tags`, `tag`. The fills of the key already in flight may have read
/// before an INVALIDATE TAG of these tags, and would overwrite the entry this one tags:
/// they are counted invalidated (answered, not cached).
fn register_tagged(map: &mut Fills, key: Arc<str>, source: SourceId, tags: &Tags) -> FillTicket {
    let Some(tags) = tags else {
        return register(map, key, source);
    };
    if let Some(entry) = map.get_mut(&key)
        && entry.fills > 0
    {
        entry.invalidations += 1;
    }
    let ticket = register(map, key, source);
    tag(map, &ticket.key, tags);
    ticket
}

/// Records that the fills of `key` in flight will give its entry `tags`.
fn tag(map: &mut Fills, key: &str, tags: &[String]) {
    if let Some(entry) = map.get_mut(key) {
        for tag in tags {
            if !entry.tags.iter().any(|t| **t == **tag) {
                entry.tags.push(tag.as_str().into());
            }
        }
    }
}

/// The fill of `key` in flight a new client may share: one that started after the key's
/// last invalidation.
fn shareable<'a>(map: &'a mut Fills, key: &str) -> Option<&'a mut Entry> {
    map.get_mut(key)
        .filter(|e| e.fills > 0 && e.newest_start == e.invalidations)
}

impl Entry {
    fn add_waiter(&mut self, client: BlockedClient, asked: Asked) {
        self.waiters.push((client, self.invalidations));
        // The fill answers it: a hit of what the miss fetches (`pass_through`).
        asked.table.pass_through.joined();
        stats::of(asked.source).coalesced.inc();
        self.asked.get_or_insert(asked);
    }
}

/// Keys being fetched for the cache now. Bounded: each has a job in the bounded work queue
/// or on a worker, or is being answered.
pub fn count() -> usize {
    with_map(|map| map.len())
}

/// Registers the fills of several keys of `source` (a MULTIREAD's misses) under one lock,
/// whose completion gives the entries `tags`.
pub fn register_fills(keys: Vec<Arc<str>>, source: SourceId, tags: &Tags) -> Vec<FillTicket> {
    with_map(|map| {
        keys.into_iter()
            .map(|key| register_tagged(map, key, source, tags))
            .collect()
    })
}

/// Registers a fill of `key`, of `source`'s database. Under the map's lock, so a removal
/// (which retires the number, then counts an invalidation of its fills under this lock)
/// either finds the fill or is seen by it.
fn register(map: &mut Fills, key: Arc<str>, source: SourceId) -> FillTicket {
    if current::retired(source) {
        return FillTicket {
            key,
            invalidations_at_start: 0,
            done: true,
            detached: true,
        };
    }
    let entry = map.entry(key.clone()).or_default();
    entry.fills += 1;
    entry.newest_start = entry.invalidations;
    FillTicket {
        invalidations_at_start: entry.invalidations,
        key,
        done: false,
        detached: false,
    }
}

/// Ends the fills of several keys on the main thread (under one lock), `rows[i]` being
/// what ticket i fetched: answers the clients waiting on them and returns each ticket's
/// key with whether its row may be cached (as `FillTicket::finish`).
pub fn finish_all(tickets: Vec<FillTicket>, rows: &[Option<String>]) -> Vec<(Arc<str>, bool)> {
    let mut waiting = Vec::new();
    let finished = with_map(|map| {
        tickets
            .into_iter()
            .zip(rows)
            .map(|(mut ticket, row)| {
                ticket.done = true;
                let (fresh, waiters) = ticket.unregister_in(map);
                if !waiters.0.is_empty() {
                    waiting.push((waiters, row, ticket.key.clone()));
                }
                (std::mem::take(&mut ticket.key), fresh)
            })
            .collect()
    });
    for (waiters, row, key) in waiting {
        answer_all(waiters, &Reply::from(row.clone()), &key);
    }
    finished
}

/// Records that `key` was invalidated: fills in flight for it will not cache their row.
pub fn invalidated(key: &str) {
    with_map(|map| {
        if let Some(entry) = map.get_mut(key) {
            entry.invalidations += 1;
        }
    });
}

/// Records that every key in `scope` was invalidated (a flush).
pub fn invalidated_scope(scope: &Scope) {
    with_map(|map| {
        for (key, entry) in map.iter_mut() {
            if scope.covers(key.as_bytes()) {
                entry.invalidations += 1;
            }
        }
    });
}

/// Records an invalidation of every fill in flight whose entry would carry any of `tags`
/// (INVALIDATE TAG): none of them caches its row. Fills of untagged calls cache theirs
/// untagged, which no INVALIDATE TAG drops and no tagged call is served.
pub fn invalidated_tagged(tags: &[String]) {
    with_map(|map| {
        for entry in map.values_mut() {
            if entry
                .tags
                .iter()
                .any(|t| tags.iter().any(|tag| **t == **tag))
            {
                entry.invalidations += 1;
            }
        }
    });
}

/// Whether a fill of `key` is in flight (its entry is not written yet).
pub fn in_flight(key: &str) -> bool {
    with_map(|map| map.get(key).is_some_and(|e| e.fills > 0))
}

/// Every fill in flight whose key contains `part` (a generation) will not be stored.
pub fn invalidated_containing(part: &str) {
    with_map(|map| {
        for (key, entry) in map.iter_mut() {
            if key.contains(part) {
                entry.invalidations += 1;
            }
        }
    });
}

/// Clients waiting for a fill, and what they asked for.
type Waiting = (Vec<BlockedClient>, Option<Asked>);

/// Answers the clients waiting on the fill of `key` with `reply`. A waiter may have joined
/// before its own read permission on the key was checked (a READ whose key only a worker
/// could tell), so a row is given only to a client whose ACL user may read the key (or the
/// keys that stand for it: a QUERY result's tables).
fn answer_all((waiters, asked): Waiting, reply: &Reply, key: &str) {
    let rows = u64::from(matches!(reply, Reply::Bulk(_)));
    for waiter in waiters {
        let reply = reply.clone();
        let asked = asked.clone();
        let key = key.to_string();
        let completion: Completion = Box::new(move |ctx| {
            let reply = match reply {
                Reply::Bulk(_) | Reply::Nil if crate::redis::acl::reads_may_be_refused(ctx) => {
                    let guards = asked.as_ref().and_then(|a| a.readable_as.clone());
                    let guards = guards.as_deref().unwrap_or(std::slice::from_ref(&key));
                    match guards
                        .iter()
                        .find(|k| !crate::redis::acl::may_read_key(ctx, k))
                    {
                        Some(refused) => crate::redis::acl::no_read_permission(refused).into(),
                        None => reply,
                    }
                }
                reply => reply,
            };
            match asked {
                Some(Asked { table, pk, .. }) => reply.described(&table, pk, rows),
                None => reply,
            }
        });
        waiter.answer(completion);
    }
}

fn outcome_reply(outcome: &Outcome) -> Reply {
    match outcome {
        Ok(row) => Reply::from(row.clone()),
        Err(e) => Reply::Error(e.clone()),
    }
}

impl FillTicket {
    /// Answers the clients waiting on this fill now (any thread), so they need not wait
    /// for the leader's turn on the main thread.
    pub fn answer_waiters(&self, outcome: &Outcome) {
        if self.detached {
            return;
        }
        let waiters = with_map(|map| {
            map.get_mut(&self.key)
                .map(|e| (self.take_own_waiters(e), e.asked.clone()))
                .unwrap_or_default()
        });
        // The reply is a copy of the outcome (a result may be megabytes): none without waiters.
        if !waiters.0.is_empty() {
            answer_all(waiters, &outcome_reply(outcome), &self.key);
        }
    }

    /// The clients that joined this fill (none joins a fill invalidated since it started).
    fn take_own_waiters(&self, entry: &mut Entry) -> Vec<BlockedClient> {
        if entry.waiters.is_empty() {
            return Vec::new();
        }
        let (own, others) = std::mem::take(&mut entry.waiters)
            .into_iter()
            .partition(|(_, joined_at)| *joined_at == self.invalidations_at_start);
        entry.waiters = others;
        own.into_iter().map(|(client, _)| client).collect()
    }

    /// Ends the fill on the main thread, right before writing the cache: answers waiters
    /// that joined meanwhile. Returns the key, and whether its row may be cached (no
    /// invalidation of the key arrived since the fill registered).
    pub fn finish(mut self, outcome: &Outcome) -> (Arc<str>, bool) {
        self.done = true;
        let (fresh, waiters) = with_map(|map| self.unregister_in(map));
        if !waiters.0.is_empty() {
            answer_all(waiters, &outcome_reply(outcome), &self.key);
        }
        (std::mem::take(&mut self.key), fresh)
    }

    /// Ends this fill in the map: whether no invalidation arrived since it registered, and
    /// the waiters to answer if it was the key's last fill.
    fn unregister_in(&self, map: &mut Fills) -> (bool, Waiting) {
        if self.detached {
            return (false, Waiting::default());
        }
        let Some(entry) = map.get_mut(&self.key) else {
            return (false, Waiting::default());
        };
        let fresh = entry.invalidations == self.invalidations_at_start;
        if entry.fills > 1 {
            entry.fills -= 1;
            return (fresh, (self.take_own_waiters(entry), entry.asked.clone()));
        }
        // The key's last fill: nobody else can answer what is left (a client always joins a
        // fill in flight), so every waiter is answered with this fill's result.
        let Some(entry) = map.remove(&self.key) else {
            return (fresh, Waiting::default());
        };
        if entry.waiters.is_empty() {
            return (fresh, Waiting::default());
        }
        let all = entry
            .waiters
            .into_iter()
            .map(|(client, _)| client)
            .collect();
        (fresh, (all, entry.asked))
    }
}

impl Drop for FillTicket {
    fn drop(&mut self) {
        if !self.done {
            let (_, waiters) = with_map(|map| self.unregister_in(map));
            answer_all(
                waiters,
                &Reply::Error(Error::invalid(
                    "the request fetching this key was abandoned (timed out or refused); retry",
                )),
                &self.key,
            );
        }
    }
}
