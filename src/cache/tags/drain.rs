//! `PGCACHE.INVALIDATE TAG <tag> [tag ...]`: every entry carrying any of the tags is
//! dropped, in slices, and the client answered (the number dropped) after the last one, so
//! that from its reply on no entry of the tags is served.
//!
//! The tags' sets (`model::tags`: one per DB, source and tag, and on a cluster per slot
//! too) are emptied with `SPOP` a batch at a time and each member's entry deleted, both
//! replicated. Every fill in flight when the invalidation starts whose entry would carry one
//! of the tags (`fill::lead` with tags) is counted invalidated first: a fill read before it
//! is never cached after it with them. Entries cached after it started may be dropped too
//! (they are read again), never kept from before.

use super::orphans::{self, Orphans};
use crate::cache::fill;
use crate::config::current;
use crate::error::Error;
use crate::error::panic::catch;
use crate::events;
use crate::model::event::{EventKind, Extra};
use crate::model::source::SourceId;
use crate::model::tags;
use crate::redis::cluster::{self, HeldSlots};
use crate::redis::keyspace;
use crate::redis::main_thread::Task;
use crate::redis::paused;
use crate::redis::role::writable;
use crate::requests::blocked::BlockedClient;
use crate::requests::reply::Reply;
use crate::stats;
use redis_module::{CallReply, Context, ContextFlags};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Main-thread time one turn may spend dropping entries.
const SLICE: Duration = Duration::from_millis(1);
/// Members taken from a set at a time.
const BATCH: usize = 64;
/// Keys an event names at most (its count says how many went).
pub const EVENT_KEYS: usize = 100;
/// How long a client may wait for a tag's entries to go before it is told it timed out.
const PATIENCE_MS: u64 = 3_600_000;

/// One set to empty: a tag's, of one source, in one DB.
struct Target {
    db: i32,
    source: SourceId,
    prefix: String,
    tag: usize,
}

/// An invalidation under way.
struct Drain {
    tags: Vec<String>,
    targets: Vec<Target>,
    /// On a cluster, the slots that may hold this node's keys (each target has a set in
    /// each), and which of them the first target's set being emptied is in.
    slots: Option<HeldSlots>,
    slot_at: usize,
    /// Slots moving between nodes where a set's members could not all be reached here: the
    /// reply is TRYAGAIN, the members kept for when the slot has moved.
    unsettled: Vec<u16>,
    /// Per tag, what was dropped.
    tallies: Vec<Tally>,
    /// Entries of the tags whose set went another way (`orphans`), dropped first.
    orphans: Vec<Orphans>,
    client: Option<BlockedClient>,
}

static ACTIVE: Mutex<Vec<Drain>> = Mutex::new(Vec::new());
static DRAIN: Task = Task::new("a tag invalidation", drain_slice);

/// Starts dropping the entries of `tags`; replies at once when a slice is enough, else
/// blocks the client until the last one. Main thread.
/// `dbs`: every DB holding keys.
pub fn start(ctx: &Context, tags: Vec<String>, dbs: Vec<i32>) -> Reply {
    fill::invalidated_tagged(&tags);
    let mut sources = vec![SourceId::DEFAULT];
    sources.extend(current::numbered_ids());
    let mut targets = Vec::new();
    for db in dbs {
        for &source in &sources {
            let prefix = current::key_prefix(source);
            targets.extend((0..tags.len()).map(|tag| Target {
                db,
                source,
                prefix: prefix.clone(),
                tag,
            }));
        }
    }
    let mut drain = Drain {
        tallies: (0..tags.len()).map(|_| Tally::default()).collect(),
        orphans: orphans::take(ctx, &tags),
        tags,
        targets,
        slots: cluster::slots_with_keys(ctx),
        slot_at: 0,
        unsettled: Vec::new(),
        client: None,
    };
    if run(ctx, &mut drain, Instant::now() + SLICE) {
        return finish(ctx, drain);
    }
    if ctx.get_flags().contains(ContextFlags::DENY_BLOCKING) {
        return Reply::Error(Error::invalid(format!(
            "the tags hold more entries than one slice drops ({} dropped so far); run \
             PGCACHE.INVALIDATE TAG outside MULTI/EXEC or a script, where it waits for the rest",
            drain.tallies.iter().map(|t| t.dropped).sum::<u64>()
        )));
    }
    drain.client = Some(BlockedClient::block(ctx, SourceId::DEFAULT, PATIENCE_MS));
    ACTIVE.lock().unwrap().push(drain);
    DRAIN.request();
    Reply::Blocked
}

/// Goes on with the invalidations under way; whether any is left for the next turn.
fn drain_slice(ctx: &Context) -> bool {
    let deadline = Instant::now() + SLICE;
    let mut active = std::mem::take(&mut *ACTIVE.lock().unwrap());
    let mut left = Vec::new();
    for mut drain in active.drain(..) {
        if !writable(ctx) {
            // Demoted meanwhile: its new primary holds the entries, and this server may not
            // write (nor propagate) now.
            if let Some(client) = drain.client.take() {
                let refusal = Error::invalid(
                    "this server became a replica while the tags were being dropped; send \
                     PGCACHE.INVALIDATE TAG to its primary",
                );
                client.answer(Box::new(move |_| Reply::Error(refusal)));
            }
            continue;
        }
        // While writes are paused (a failover under way) nothing may be propagated: wait.
        if paused::writes_paused() {
            left.push(drain);
            continue;
        }
        // A panic ends this drain with an error to its client, not the others.
        match catch(|| Instant::now() < deadline && run(ctx, &mut drain, deadline)) {
            Ok(true) => {
                let client = drain.client.take();
                let reply = finish(ctx, drain);
                if let Some(client) = client {
                    client.answer(Box::new(move |_| reply));
                }
            }
            Ok(false) => left.push(drain),
            Err(failure) => {
                if let Some(client) = drain.client.take() {
                    client.answer(Box::new(move |_| Reply::Error(failure)));
                }
            }
        }
    }
    let mut active = ACTIVE.lock().unwrap();
    active.extend(left);
    !active.is_empty()
}

/// Drops the tags' orphans, then empties sets, until `deadline`; whether all is done.
fn run(ctx: &Context, drain: &mut Drain, deadline: Instant) -> bool {
    // Sets lost since the last slice (evicted, deleted) are this drain's to drop too.
    let lost = orphans::take(ctx, &drain.tags);
    drain.orphans.extend(lost);
    // Slots move between slices: read where they are now. A node whose slots changed since
    // the drain started may have missed a set that came or went: the reply says TRYAGAIN.
    let now = drain.slots.as_ref().and(cluster::slots_with_keys(ctx));
    if let (Some(then), Some(now)) = (&drain.slots, &now)
        && then.all != now.all
        && drain.unsettled.is_empty()
    {
        let changed = (then.all.iter())
            .find(|slot| now.all.binary_search(slot).is_err())
            .or_else(|| {
                now.all
                    .iter()
                    .find(|slot| then.all.binary_search(slot).is_err())
            });
        drain.unsettled.extend(changed);
    }
    let (tags, tallies) = (&drain.tags, &mut drain.tallies);
    let orphans_done = orphans::drop_until(ctx, &mut drain.orphans, deadline, |of, key| {
        if let Some(tag) = tags.iter().position(|tag| *tag == of.tag) {
            tallies[tag].add(key);
        }
    });
    if !orphans_done {
        return false;
    }
    while let Some(target) = drain.targets.first() {
        if Instant::now() >= deadline {
            return false;
        }
        let tag = target.tag;
        let (slot, moving) = match &drain.slots {
            None => (None, false),
            Some(held) => match held.all.get(drain.slot_at) {
                // Moving now, or no longer this node's: its keys may be on either node.
                Some(&slot) => (
                    Some(slot),
                    now.as_ref().is_none_or(|now| {
                        now.moving.binary_search(&slot).is_ok()
                            || now.all.binary_search(&slot).is_err()
                    }),
                ),
                // No slot here (a replica's view, or all moved away): nothing to empty.
                None => {
                    drain.targets.clear();
                    break;
                }
            },
        };
        let set = tags::set_name(
            &target.prefix,
            slot.map(cluster::slot_tag),
            &drain.tags[tag],
        );
        let (source, db) = (target.source, target.db);
        let mut emptied = false;
        let tally = &mut drain.tallies[tag];
        keyspace::in_each_db(ctx, [db], |_| {
            emptied = if moving {
                let settled = settle_moving(ctx, source, &set, tally);
                if !settled {
                    drain.unsettled.extend(slot);
                }
                true
            } else {
                pop_batch(ctx, source, &set, tally)
            };
        });
        if emptied {
            let slots = drain.slots.as_ref().map_or(0, |held| held.all.len());
            if drain.slot_at + 1 < slots {
                drain.slot_at += 1;
            } else {
                drain.slot_at = 0;
                drain.targets.remove(0);
            }
        }
    }
    true
}

/// Whether `set` is a key of this node (read directly: a module call may be refused it).
fn here(ctx: &Context, set: &str) -> bool {
    keyspace::with_name(ctx, set.as_bytes(), |k| keyspace::exists(ctx, k))
}

/// Takes a batch of `set`'s members and deletes their entries; whether the set is empty.
/// A set not here (on a cluster: of a slot served elsewhere) is empty.
fn pop_batch(ctx: &Context, source: SourceId, set: &str, tally: &mut Tally) -> bool {
    if !here(ctx, set) {
        return true;
    }
    let count = BATCH.to_string();
    // Not a set (a key of the user's under the prefix, logged by `call`): left alone.
    let popped = orphans::own_removal(|| super::call(ctx, "SPOP", &[set, count.as_str()]));
    let Some(members) = super::strings(popped) else {
        return true;
    };
    for member in &members {
        if super::integer(super::call(ctx, "DEL", &[member])) == Some(1) {
            tally.entry_dropped(source, member);
        }
    }
    members.len() < BATCH
}

/// `set`'s members' entries deleted, on a cluster node where the set's slot is moving
/// (migrating away, or importing): an entry may be on either node, and this node is refused
/// the keys it does not serve. Members are read, not popped: each entry deleted here leaves
/// the set, one out of reach stays in it (and goes with the set to the slot's next node,
/// where INVALIDATE TAG sent again finds it). Whether every member was reached. A set not
/// here is settled: its members are listed where it is.
fn settle_moving(ctx: &Context, source: SourceId, set: &str, tally: &mut Tally) -> bool {
    if !here(ctx, set) {
        return true;
    }
    let Some(members) = super::strings(super::call(ctx, "SMEMBERS", &[set])) else {
        // The set is here but out of reach (an importing slot, asked without ASKING).
        return false;
    };
    let mut settled = true;
    for member in &members {
        match super::call(ctx, "DEL", &[member]) {
            Ok(CallReply::I64(deleted)) => {
                let _ = super::call(ctx, "SREM", &[set, member]);
                if deleted.to_i64() == 1 {
                    tally.entry_dropped(source, member);
                }
            }
            _ => settled = false,
        }
    }
    settled
}

/// What a drain dropped of one tag: how many entries, and the first keys (for its event).
#[derive(Default)]
struct Tally {
    dropped: u64,
    keys: Vec<String>,
}

impl Tally {
    fn add(&mut self, key: &str) {
        self.dropped += 1;
        if self.keys.len() < EVENT_KEYS {
            self.keys.push(key.to_string());
        }
    }

    /// An entry of `source` a set listed, deleted.
    fn entry_dropped(&mut self, source: SourceId, key: &str) {
        self.add(key);
        stats::of(source).tag_entries_dropped.inc();
    }
}

/// Counts, announces and replies a finished invalidation: the entries it dropped, or
/// TRYAGAIN while a slot it could not settle moves.
fn finish(ctx: &Context, drain: Drain) -> Reply {
    let total: u64 = drain.tallies.iter().map(|t| t.dropped).sum();
    for (tag, tally) in drain.tags.iter().zip(&drain.tallies) {
        stats::of(SourceId::DEFAULT).tag_invalidations.inc();
        let listed = serde_json::to_string(&tally.keys).unwrap_or_else(|_| "[]".into());
        events::publish_with(
            ctx,
            EventKind::TagInvalidate,
            SourceId::DEFAULT,
            "",
            tag,
            &[
                ("tag", Extra::Text(tag)),
                ("count", Extra::Int(tally.dropped)),
                ("keys", Extra::Json(&listed)),
            ],
        );
    }
    ctx.log_debug(&format!(
        "pgcache: INVALIDATE TAG {} dropped {total} entries",
        drain.tags.join(" ")
    ));
    if let Some(slot) = drain.unsettled.first() {
        // What redis-py and other cluster clients retry (TryAgainError).
        return Reply::Error(Error::redis_reply(format!(
            "TRYAGAIN pgcache: slot {slot} is moving between nodes and holds entries of the \
             tags this node cannot reach ({total} dropped); send PGCACHE.INVALIDATE TAG to \
             every primary again once it has moved"
        )));
    }
    Reply::Int(total as i64)
}
