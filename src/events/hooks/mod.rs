//! Hooks: where cache events go. `PGCACHE.HOOK ADD audit ON write,invalidate TABLE users
//! XADD audit:users MAXLEN ~ 10000` sends matching events to a Redis Stream (durable, for
//! consumer groups) or a pubsub channel. The default hook (PUBLISH on `event_channel` the
//! kinds in `events`) is configured by those two settings, not here.
//!
//! Hooks are configuration: the `pgcache.hooks` setting holds their definitions
//! (`name ON ... ; name ON ...`), PGCACHE.HOOK ADD/DEL change it and save it with
//! CONFIG REWRITE, and a restarted server loads it with the rest of redis.conf. ADD and DEL
//! replicate (verbatim) to replicas and the AOF; a replica that (re)synchronises gets the
//! whole set from its primary (`PGCACHE.HOOK SYNC`, sent when a replica comes online).
//!
//! Delivery happens on the main thread. A replica publishes its own events but never
//! XADDs: its streams are its primary's. Events raised where pgcache's writes wait (a
//! keyspace notification: expire, evict; a server event) are XADDed from a zero-delay timer.

pub mod definition;
mod delivery;

pub use definition::{DEFAULT_HOOK, Hook, MAX_HOOKS, Target, parse_all, render_all};
pub use delivery::fire;

use crate::config::current;
use crate::error::Error;
use crate::model::event::{EventKind, EventMask};
use crate::redis::acl;
use crate::redis::main_thread::Task;
use redis_module::Context;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

static HOOKS: RwLock<Vec<Arc<Hook>>> = RwLock::new(Vec::new());
/// The kinds some hook takes: the hit path checks this before anything else.
static MASK: AtomicU32 = AtomicU32::new(0);

fn install(hooks: Vec<Arc<Hook>>) {
    let mask = hooks.iter().fold(0, |m, h| m | h.events.0);
    *HOOKS.write().unwrap() = hooks;
    MASK.store(mask, Ordering::Relaxed);
}

pub fn mask() -> EventMask {
    EventMask(MASK.load(Ordering::Relaxed))
}

pub fn all() -> Vec<Arc<Hook>> {
    HOOKS.read().unwrap().clone()
}

/// The `hooks` setting's current value.
pub fn setting() -> String {
    render_all(&all())
}

/// Replaces every hook (CONFIG SET pgcache.hooks, load, SYNC from a primary).
pub fn set_all(text: &str) -> Result<(), Error> {
    let hooks = parse_all(text)?;
    for hook in &hooks {
        outside_the_cache(hook)?;
    }
    install(hooks.into_iter().map(Arc::new).collect());
    Ok(())
}

/// Adds a hook. Adding one that exists with the same definition is a no-op (so a replayed
/// AOF or a retried ADD is harmless); with another definition it is an error.
pub fn add(hook: Hook) -> Result<(), Error> {
    outside_the_cache(&hook)?;
    let mut hooks = all();
    if let Some(existing) = hooks.iter().find(|h| h.name == hook.name) {
        if **existing == hook {
            return Ok(());
        }
        return Err(Error::invalid(format!(
            "hook {} exists ({}); DEL it first to redefine it",
            hook.name,
            existing.render()
        )));
    }
    if hooks.len() >= MAX_HOOKS {
        return Err(Error::invalid(format!(
            "at most {MAX_HOOKS} hooks; DEL one first"
        )));
    }
    hooks.push(Arc::new(hook));
    install(hooks);
    Ok(())
}

/// Refuses a target under the cache prefix: pgcache would take it for a cache entry.
fn outside_the_cache(hook: &Hook) -> Result<(), Error> {
    let (what, name) = match &hook.target {
        Target::Publish(channel) => ("channel", channel),
        Target::Xadd { stream, .. } => ("stream", stream),
    };
    let prefix = current::cache_prefix();
    if !prefix.is_empty() && name.starts_with(&prefix) {
        return Err(Error::invalid(format!(
            "{what} name {name:?} starts with the cache prefix {prefix:?}: pgcache would treat it as a cache entry"
        )));
    }
    Ok(())
}

/// Whether the hook's owner may deliver to its target now (its ACL rules may have changed
/// since the hook was added).
pub fn owner_may_deliver(ctx: &Context, hook: &Hook) -> Result<(), Error> {
    let (target, access) = hook.access();
    acl::check(ctx, &hook.owner, target, access)
}

/// Removes a hook; whether it existed.
pub fn remove(name: &str) -> bool {
    let mut hooks = all();
    let before = hooks.len();
    hooks.retain(|h| h.name != name);
    let removed = hooks.len() != before;
    install(hooks);
    removed
}

/// The hooks taking `kind` events of `table` of the named source `source` (None: the
/// default source).
pub fn matching(kind: EventKind, source: Option<&str>, table: &str) -> Vec<Arc<Hook>> {
    HOOKS
        .read()
        .unwrap()
        .iter()
        .filter(|h| {
            h.events.contains(kind)
                && h.source.as_deref().is_none_or(|s| Some(s) == source)
                && h.table.as_deref().is_none_or(|t| t == table)
        })
        .cloned()
        .collect()
}

/// Sends every replica the whole set of hooks.
static SYNC: Task = Task::new("sending hooks to replicas", replicate_hooks);

/// A replica came online (after a full or partial sync): send every replica the whole set,
/// since an RDB transfer does not carry configuration. From the main thread's timer, whose
/// context replicates. Main thread only.
pub fn on_replica_online(ctx: &Context) {
    if crate::redis::role::writable(ctx) {
        SYNC.request();
    }
}

fn replicate_hooks(ctx: &Context) -> bool {
    let definitions = setting();
    ctx.replicate("PGCACHE.HOOK", &["SYNC", definitions.as_str()][..]);
    false
}
