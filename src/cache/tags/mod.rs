//! Tags on cache entries (`model::tags`): a tagged call's entries join their tags' sets when
//! they are written (a fill's completion, WRITE) or hit, on the main thread, in the same
//! callback as the entry; `PGCACHE.INVALIDATE TAG` empties the sets and drops their members
//! (`drain`).
//!
//! Why membership is exact: a set is written in the callback that writes its entry, or that
//! serves it, so when `drain` starts every entry a tagged call cached or was served is a
//! member; fills in flight then that would give their entry one of the tags are told they
//! are invalidated (`fill::invalidated_tagged`: a tagged call registers its fill with its
//! tags), so none caches a row read before the invalidation, and a tagged call never joins a fill
//! in flight (it leads its own: the entry then carries its tags). A set expires no earlier
//! than the last of its members' entries (`PEXPIREAT` raised to each member's expiry), so
//! a tag whose entries all expired leaves nothing behind.
//!
//! Why it is bounded: each tagged entry costs one member per tag (`MAX_TAGS` at most), and a
//! member whose entry expired, was evicted or deleted is swept when the set grows: each new
//! member checks `SWEEP_SAMPLE` random members and removes those whose entry is gone (and
//! whose fill is not in flight). In a steady state each new member stands for one that will
//! die, and removes `SWEEP_SAMPLE` times the dead share: a third of a set is dead at most on
//! average, so it holds about 1.5 times its live entries.

pub mod drain;
pub mod orphans;

use crate::cache::fill;
use crate::config::current;
use crate::model::event::now_ms;
use crate::model::source::SourceId;
use crate::model::tags::{self, Tags};
use crate::redis::cluster;
use crate::redis::keyspace;
use crate::redis::role::writable;
use crate::stats;
use redis_module::{CallOptionsBuilder, CallReply, CallResult, Context};

/// How long a call's entries are kept, and the tags they carry.
#[derive(Clone)]
pub struct Keep {
    pub ttl: u64,
    pub tags: Tags,
}

impl Keep {
    /// Entries kept `ttl` seconds, untagged.
    pub fn for_ttl(ttl: u64) -> Keep {
        Keep { ttl, tags: None }
    }
}

/// Random members each new member checks (see the module's doc).
const SWEEP_SAMPLE: usize = 3;

/// The set of `tag`'s entries that holds `key` (an entry of the source whose prefix is
/// `prefix`): in `key`'s slot on a cluster.
pub fn set_for(prefix: &str, key: &str, tag: &str) -> String {
    let slot = cluster::enabled().then(|| cluster::slot_tag(cluster::slot(key.as_bytes())));
    tags::set_name(prefix, slot, tag)
}

/// Makes `keys`, entries of `source` written (or served) in this callback, which expire at
/// `expires_at_ms` at the latest, members of their tags' sets: one `SADD` per set. Main
/// thread, in the callback that wrote them.
pub fn attach(ctx: &Context, source: SourceId, keys: &[&str], tags: &[String], expires_at_ms: i64) {
    // Not on a replica (its data is its primary's), nor while writes are paused (a failover
    // under way: Redis asserts against anything propagated then).
    if !writable(ctx) || crate::redis::paused::writes_paused() || keys.is_empty() {
        return;
    }
    let prefix = current::key_prefix(source);
    for tag in tags {
        // A call's keys share a set but on a cluster, where a MULTIREAD's share a slot.
        for (set, at) in by_set(&prefix, keys, tag) {
            let members: Vec<&str> = at.iter().map(|&i| keys[i]).collect();
            let mut args = vec![set.as_str()];
            args.extend(&members);
            let result = call(ctx, "SADD", &args);
            if result.is_err() && cluster::enabled() {
                // Refused: the set's slot is moving and the set is on the other node. An
                // entry its tag does not list would outlive INVALIDATE TAG: it goes.
                for key in &members {
                    let _ = call(ctx, "DEL", &[key]);
                }
                stats::of(source)
                    .tag_untagged_dropped
                    .add(members.len() as u64);
                continue;
            }
            let added = integer(result).unwrap_or(0);
            if added > 0 {
                stats::of(source).tag_members_added.add(added as u64);
                sweep_sample(ctx, source, &set, added as usize);
            }
            // Raised, never shortened: other members may live longer. (-1: none yet, the
            // set was just made.)
            let set_expires = integer(call(ctx, "PEXPIRETIME", &[&set])).unwrap_or(-1);
            if set_expires < expires_at_ms {
                let _ = call(ctx, "PEXPIREAT", &[&set, &expires_at_ms.to_string()]);
            }
        }
    }
}

/// `attach` for entries written now for `ttl_seconds` at most (a fill, WRITE).
pub fn attach_new(ctx: &Context, source: SourceId, keys: &[&str], tags: &Tags, ttl_seconds: u64) {
    if let Some(tags) = tags {
        // Taken after the entries' own expiry was: never before it.
        let expires = (now_ms() + u128::from(ttl_seconds) * 1000 + 1) as i64;
        attach(ctx, source, keys, tags, expires);
    }
}

/// Before a tagged call looks `key` (an entry of `source`) up: an entry that is not a member
/// of each of `tags`' sets is dropped, so the call misses and fills it afresh, tagged. A
/// tagged call is only ever served an entry cached since its tags' last INVALIDATE TAG began
/// (members are added only as entries are written; the invalidation pops every member). Its
/// other tags stay: membership is by key, so the new entry goes with them too. Not on a
/// replica or while writes are paused, where nothing may be written (the primary's
/// membership is what its own tagged calls made).
pub fn serve_tagged_only(ctx: &Context, source: SourceId, key: &str, tags: &Tags) {
    let Some(tags) = tags else {
        return;
    };
    if !writable(ctx) || crate::redis::paused::writes_paused() {
        return;
    }
    if !keyspace::with_name(ctx, key.as_bytes(), |k| keyspace::exists(ctx, k)) {
        return;
    }
    let prefix = current::key_prefix(source);
    let carries = tags
        .iter()
        .all(|tag| integer(call(ctx, "SISMEMBER", &[&set_for(&prefix, key, tag), key])) == Some(1));
    if !carries {
        // Not `cache::delete`: nothing changed in PostgreSQL, so fills in flight (this
        // call's own, about to lead) may still cache what they read.
        let _ = call(ctx, "DEL", &[key]);
        stats::of(source).tag_untagged_dropped.inc();
    }
}

/// `serve_tagged_only` for the keys of one call (a MULTIREAD): one `SMISMEMBER` per set, not
/// one call per key and tag, so that a thousand keys' check stays one short callback.
pub fn serve_tagged_only_many(ctx: &Context, source: SourceId, keys: &[String], tags: &Tags) {
    let Some(tags) = tags else {
        return;
    };
    if !writable(ctx) || crate::redis::paused::writes_paused() {
        return;
    }
    let cached: Vec<&str> = (keys.iter())
        .filter(|key| keyspace::with_name(ctx, key.as_bytes(), |k| keyspace::exists(ctx, k)))
        .map(String::as_str)
        .collect();
    if cached.is_empty() {
        return;
    }
    let prefix = current::key_prefix(source);
    let mut carried = vec![true; cached.len()];
    for tag in tags.iter() {
        for (set, at) in by_set(&prefix, &cached, tag) {
            let mut args = vec![set.as_str()];
            args.extend(at.iter().map(|&i| cached[i]));
            let members = match call(ctx, "SMISMEMBER", &args) {
                Ok(CallReply::Array(members)) => members,
                _ => {
                    at.iter().for_each(|&i| carried[i] = false);
                    continue;
                }
            };
            for (&i, member) in at.iter().zip(members.iter()) {
                if !matches!(member, Ok(CallReply::I64(n)) if n.to_i64() == 1) {
                    carried[i] = false;
                }
            }
        }
    }
    for (key, carried) in cached.iter().zip(carried) {
        if !carried {
            let _ = call(ctx, "DEL", &[key]);
            stats::of(source).tag_untagged_dropped.inc();
        }
    }
}

/// `keys` grouped by the set of `tag` each belongs in (one set outside a cluster), as the
/// positions of the keys in `keys`.
fn by_set(prefix: &str, keys: &[&str], tag: &str) -> Vec<(String, Vec<usize>)> {
    let mut sets: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let set = set_for(prefix, key, tag);
        match sets.iter_mut().find(|(name, _)| *name == set) {
            Some((_, at)) => at.push(i),
            None => sets.push((set, vec![i])),
        }
    }
    sets
}

/// Removes from `set` those of `SWEEP_SAMPLE` random members per one `added` whose entry is
/// gone (members whose fill is in flight are kept: their entries are being written; those
/// just added exist).
fn sweep_sample(ctx: &Context, source: SourceId, set: &str, added: usize) {
    let count = (SWEEP_SAMPLE * added).to_string();
    let Some(sampled) = strings(call(ctx, "SRANDMEMBER", &[set, &count])) else {
        return;
    };
    for member in sampled {
        if fill::in_flight(&member) {
            continue;
        }
        let gone = keyspace::with_name(ctx, member.as_bytes(), |k| !keyspace::exists(ctx, k));
        if gone && integer(call(ctx, "SREM", &[set, &member])) == Some(1) {
            stats::of(source).tag_members_swept.inc();
        }
    }
}

/// Runs a command replicated (to replicas and the AOF, as the entries' own writes are).
pub(super) fn call<'a>(ctx: &'a Context, command: &str, args: &[&str]) -> CallResult<'a> {
    let options = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    let result: CallResult = ctx.call_ext(command, &options, args);
    if let Err(e) = &result {
        let said = e.to_utf8_string().unwrap_or_default();
        // A key of a slot moving to another node is refused while it moves: expected.
        if !said.contains("non local key") {
            ctx.log_warning(&format!("pgcache: {command} of a tag set failed: {said}"));
        }
    }
    result
}

/// An array reply's strings (None: an error, or no array).
pub(super) fn strings(result: CallResult) -> Option<Vec<String>> {
    match result {
        Ok(CallReply::Array(items)) => Some(
            (items.iter())
                .filter_map(|item| match item {
                    Ok(CallReply::String(s)) => s.to_string(),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

pub(super) fn integer(result: CallResult) -> Option<i64> {
    match result {
        Ok(CallReply::I64(n)) => Some(n.to_i64()),
        _ => None,
    }
}
