//! `PGCACHE.INVALIDATE TAG <tag> [tag ...]`: every entry carrying any of the tags is
//! dropped, in slices, and the client answered (the number dropped) after the last one, so
//! that from its reply on no entry of the tags is served.
//!
//! The tags' sets (`model::tags`: one per DB, source and tag, and on a cluster per slot
//! too) are emptied with `SPOP` a batch at a time and each member's entry deleted, both
//! replicated. Every fill in flight when the invalidation starts is counted invalidated
//! first: a fill read before it is never cached after it. Entries cached after it started
//! may be dropped too (they are read again), never kept from before.

use super::orphans::{self, Orphans};
use crate::cache::fill;
use crate::config::current;
use crate::error::Error;
use crate::error::panic::catch;
use crate::events;
use crate::model::event::{EventKind, Extra};
use crate::model::source::SourceId;
use crate::model::tags;
use crate::redis::cluster;
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
    slots: Option<Vec<u16>>,
    slot_at: usize,
    dropped: Vec<u64>,
    keys: Vec<Vec<String>>,
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
    fill::invalidated_all();
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
        dropped: vec![0; tags.len()],
        keys: vec![Vec::new(); tags.len()],
        orphans: orphans::take(ctx, &tags),
        tags,
        targets,
        slots: cluster::slots_with_keys(ctx),
        slot_at: 0,
        client: None,
    };
    if run(ctx, &mut drain, Instant::now() + SLICE) {
        return finish(ctx, drain);
    }
    if ctx.get_flags().contains(ContextFlags::DENY_BLOCKING) {
        return Reply::Error(Error::invalid(format!(
            "the tags hold more entries than one slice drops ({} dropped so far); run \
             PGCACHE.INVALIDATE TAG outside MULTI/EXEC or a script, where it waits for the rest",
            drain.dropped.iter().sum::<u64>()
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
    let (tags, dropped, keys) = (&drain.tags, &mut drain.dropped, &mut drain.keys);
    let orphans_done = orphans::drop_until(ctx, &mut drain.orphans, deadline, |of, key| {
        if let Some(tag) = tags.iter().position(|tag| *tag == of.tag) {
            dropped[tag] += 1;
            if keys[tag].len() < EVENT_KEYS {
                keys[tag].push(key.to_string());
            }
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
        let slot = match &drain.slots {
            None => None,
            Some(slots) => match slots.get(drain.slot_at) {
                Some(&slot) => Some(cluster::slot_tag(slot)),
                // No slot here (a replica's view, or all moved away): nothing to empty.
                None => {
                    drain.targets.clear();
                    break;
                }
            },
        };
        let set = tags::set_name(&target.prefix, slot, &drain.tags[tag]);
        let (source, db) = (target.source, target.db);
        let mut emptied = false;
        keyspace::in_each_db(ctx, [db], |_| {
            emptied = pop_batch(
                ctx,
                source,
                &set,
                &mut drain.dropped[tag],
                &mut drain.keys[tag],
            );
        });
        if emptied {
            let slots = drain.slots.as_ref().map_or(0, Vec::len);
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

/// Takes a batch of `set`'s members and deletes their entries; whether the set is empty.
/// A set not here (on a cluster: of a slot served elsewhere) is empty.
fn pop_batch(
    ctx: &Context,
    source: SourceId,
    set: &str,
    dropped: &mut u64,
    keys: &mut Vec<String>,
) -> bool {
    if !keyspace::with_name(ctx, set.as_bytes(), |k| keyspace::exists(ctx, k)) {
        return true;
    }
    let count = BATCH.to_string();
    let members: Vec<String> = match super::call(ctx, "SPOP", &[set, count.as_str()]) {
        Ok(CallReply::Array(members)) => members
            .iter()
            .filter_map(|m| match m {
                Ok(CallReply::String(s)) => s.to_string(),
                _ => None,
            })
            .collect(),
        Ok(_) => return true,
        // Not a set (a key of the user's under the prefix, logged by `call`): left alone.
        Err(_) => return true,
    };
    for member in &members {
        if super::integer(super::call(ctx, "DEL", &[member])) == Some(1) {
            *dropped += 1;
            stats::of(source).tag_entries_dropped.inc();
            if keys.len() < EVENT_KEYS {
                keys.push(member.clone());
            }
        }
    }
    members.len() < BATCH
}

/// Counts, announces and replies a finished invalidation: the entries it dropped.
fn finish(ctx: &Context, drain: Drain) -> Reply {
    let total: u64 = drain.dropped.iter().sum();
    for ((tag, dropped), keys) in drain.tags.iter().zip(&drain.dropped).zip(&drain.keys) {
        stats::of(SourceId::DEFAULT).tag_invalidations.inc();
        let listed = serde_json::to_string(keys).unwrap_or_else(|_| "[]".into());
        events::publish_with(
            ctx,
            EventKind::TagInvalidate,
            SourceId::DEFAULT,
            "",
            tag,
            &[
                ("tag", Extra::Text(tag)),
                ("count", Extra::Int(*dropped)),
                ("keys", Extra::Json(&listed)),
            ],
        );
    }
    ctx.log_debug(&format!(
        "pgcache: INVALIDATE TAG {} dropped {total} entries",
        drain.tags.join(" ")
    ));
    Reply::Int(total as i64)
}
