//! A tag's set removed by anything but its own drain (evicted under `maxmemory`, expired,
//! deleted, renamed or overwritten by a client) takes with it the only record of which
//! entries carry the tag, and a later INVALIDATE TAG would leave them. So they go too: the
//! set's members are read as it goes (Redis's key event, its value still readable, where
//! nothing may be written) and their entries deleted on the next turns, in slices; an
//! INVALIDATE TAG of the tag takes those still pending into its own work (`take`), so none
//! is served after its reply. A tagged call is never served one meanwhile: it is no member
//! of its tag's set (`serve_tagged_only`).
//!
//! A server older than Redis 7.2 tells only the name of a key evicted, once its value is
//! gone: nothing says which entries carried the tag, so the set's source forgets all of its
//! entries (a flush of the source, whose hits miss from its start), and an INVALIDATE TAG
//! starts any such flush still pending before it drops anything. Such a set's expiry needs
//! nothing: a set expires after the last of its entries.

use crate::config::current;
use crate::model::source::SourceId;
use crate::model::tags;
use crate::redis::cluster;
use crate::redis::keyspace;
use crate::redis::main_thread::Task;
use crate::redis::paused;
use crate::redis::role::writable;
use crate::redis::server_events::SetRead;
use crate::stats;
use redis_module::{Context, ContextFlags};
use std::cell::Cell;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most members of a removed set read as it goes: more would stall the removal (an
/// eviction, where memory is short) for long; such a set's source is flushed instead.
const MEMBERS_READ_AT_MOST: usize = 100_000;

/// Main-thread time one turn may spend deleting.
const SLICE: Duration = Duration::from_millis(1);

/// The entries a removed set listed, still to delete.
pub struct Orphans {
    pub db: i32,
    pub source: SourceId,
    pub tag: String,
    pub members: Vec<String>,
}

thread_local! {
    // Set while a drain takes a set's members itself: `SPOP` of as many as the set holds
    // removes the key with its members in it, which are the drain's, no orphans.
    static OWN_REMOVAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, a drain's own removal of a set's members (`SPOP`), as no loss of the set.
pub fn own_removal<R>(f: impl FnOnce() -> R) -> R {
    crate::redis::main_thread::with_flag(&OWN_REMOVAL, f)
}

static PENDING: Mutex<Vec<Orphans>> = Mutex::new(Vec::new());
static DROP: Task = Task::new("dropping the entries of a removed tag set", drop_slice);
/// Sources a tag set of was evicted unread, whose entries must all go.
static UNREAD: Mutex<Vec<SourceId>> = Mutex::new(Vec::new());
static FLUSH_UNREAD: Task = Task::new("flushing a source whose tag set was evicted", |ctx| {
    flush_unread(ctx);
    false
});

/// Key `name` of DB `db` is being removed: if it is a tag's set with members, on a server
/// that may write, its members' entries are queued for deletion. Main thread, inside
/// Redis's removal (nothing written here).
pub fn key_unlinking(ctx: &Context, name: &[u8], set: &SetRead<'_>) {
    // Cheap first: every key removed passes here. A replica's removals are its primary's,
    // which drops the entries itself.
    if OWN_REMOVAL.get() {
        return;
    }
    let Some(source) = current::source_of_key(name) else {
        return;
    };
    let prefix = current::key_prefix(source);
    let Some(tag) = tags::tag_of_set(prefix.as_bytes(), name, cluster::enabled()) else {
        return;
    };
    // A load replays removals whose entries' deletions follow them in the file.
    if !writable(ctx) || ctx.get_flags().contains(ContextFlags::LOADING) {
        return;
    }
    let Some((db, members)) = set(MEMBERS_READ_AT_MOST) else {
        return;
    };
    let Some(members) = members else {
        // Too many to hold now (inside an eviction, every byte counts): the source goes.
        flush_later(
            ctx,
            source,
            name,
            "held more entries than pgcache reads as it goes",
        );
        return;
    };
    if members.is_empty() {
        return;
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    let members: Vec<String> = (members.into_iter())
        .filter_map(|m| String::from_utf8(m).ok())
        .collect();
    stats::of(source).tag_sets_lost.inc();
    PENDING.lock().unwrap().push(Orphans {
        db,
        source,
        tag,
        members,
    });
    DROP.request();
}

/// Tag set `name` of `source` was evicted and its members cannot be read (a server older
/// than Redis 7.2): the source's entries are flushed on the next turn (nothing may be
/// written inside Redis's eviction). Main thread.
pub fn set_evicted_unread(ctx: &Context, source: SourceId, name: &[u8]) {
    if !writable(ctx) {
        return;
    }
    flush_later(
        ctx,
        source,
        name,
        "was evicted (maxmemory-policy), and this server cannot tell which entries it held \
         (Redis 7.2 or Valkey can)",
    );
}

/// Tag set `name` of `source` went, and which entries it held is not known (`why`): the
/// source's entries are flushed on the next turn.
fn flush_later(ctx: &Context, source: SourceId, name: &[u8], why: &str) {
    stats::of(source).tag_sets_lost.inc();
    let mut unread = UNREAD.lock().unwrap();
    if !unread.contains(&source) {
        ctx.log_warning(&format!(
            "pgcache: tag set {} {why}: the source's entries are flushed; give the cache \
             room (maxmemory)",
            String::from_utf8_lossy(name)
        ));
        unread.push(source);
    }
    FLUSH_UNREAD.request();
}

/// Starts the flushes `set_evicted_unread` asked for.
fn flush_unread(ctx: &Context) {
    let sources = std::mem::take(&mut *UNREAD.lock().unwrap());
    for source in sources {
        crate::cache::flush::start(ctx, source, &current::scope(source));
    }
}

/// The pending orphans of any of `tags`, for an INVALIDATE TAG to drop itself (after
/// starting any flush an unread eviction asked for: its hits miss from then on).
pub fn take(ctx: &Context, tags: &[String]) -> Vec<Orphans> {
    flush_unread(ctx);
    let mut pending = PENDING.lock().unwrap();
    let (taken, left) = std::mem::take(&mut *pending)
        .into_iter()
        .partition(|orphans| tags.contains(&orphans.tag));
    *pending = left;
    taken
}

/// Deletes members of `orphans` until `deadline`, calling `dropped` with the orphans and
/// each entry deleted; whether none is left.
pub fn drop_until(
    ctx: &Context,
    orphans: &mut Vec<Orphans>,
    deadline: Instant,
    mut dropped: impl FnMut(&Orphans, &str),
) -> bool {
    while let Some(last) = orphans.last_mut() {
        if Instant::now() >= deadline {
            return false;
        }
        let db = last.db;
        keyspace::in_each_db(ctx, [db], |_| {
            while Instant::now() < deadline
                && let Some(member) = last.members.pop()
            {
                if super::integer(super::call(ctx, "DEL", &[&member])) == Some(1) {
                    stats::of(last.source).tag_orphans_dropped.inc();
                    dropped(last, &member);
                }
            }
        });
        if last.members.is_empty() {
            orphans.pop();
        }
    }
    true
}

/// Goes on deleting the pending orphans; whether any is left for the next turn.
fn drop_slice(ctx: &Context) -> bool {
    if !writable(ctx) {
        // Demoted: its primary holds the entries now, and this server may not write.
        PENDING.lock().unwrap().clear();
        return false;
    }
    // While writes are paused (a failover under way) nothing may be propagated: wait.
    if paused::writes_paused() {
        return true;
    }
    let mut orphans = std::mem::take(&mut *PENDING.lock().unwrap());
    drop_until(ctx, &mut orphans, Instant::now() + SLICE, |_, _| {});
    let mut pending = PENDING.lock().unwrap();
    pending.extend(orphans);
    !pending.is_empty()
}
