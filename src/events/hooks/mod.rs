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
//! XADDs: its streams are its primary's. Events raised inside a keyspace notification
//! (expire, evict) are XADDed from a zero-delay timer, since Redis forbids writes there.

pub mod definition;

pub use definition::{DEFAULT_HOOK, Hook, MAX_HOOKS, Target, parse_all, render_all};

use crate::config::current;
use crate::error::Error;
use crate::model::event::{self, Event, EventKind, EventMask, Extra};
use crate::redis::acl;
use crate::redis::main_thread::Task;
use crate::stats;
use redis_module::{CallOptionsBuilder, CallResult, Context, RedisString, raw};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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

/// The hooks taking `kind` events of `table`.
pub fn matching(kind: EventKind, table: &str) -> Vec<Arc<Hook>> {
    HOOKS
        .read()
        .unwrap()
        .iter()
        .filter(|h| h.events.contains(kind) && h.table.as_deref().is_none_or(|t| t == table))
        .cloned()
        .collect()
}

thread_local! {
    // Set while Redis runs our keyspace-notification callback, where writes are forbidden.
    static IN_NOTIFICATION: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (which may raise events) inside a keyspace notification.
pub fn in_notification<R>(f: impl FnOnce() -> R) -> R {
    // Cleared on the way out even if `f` panics (the caller contains the panic).
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_NOTIFICATION.set(false);
        }
    }
    IN_NOTIFICATION.set(true);
    let _reset = Reset;
    f()
}

/// Sends one event to one hook, if its owner may. Main thread only.
pub fn fire(ctx: &Context, hook: &Hook, event: &Event) {
    match &hook.target {
        Target::Publish(channel) => {
            if !permitted(ctx, hook) {
                return;
            }
            let channel = ctx.create_string(channel.as_str());
            publish_message(ctx, &channel, event.json);
        }
        Target::Xadd { stream, maxlen } => {
            if !crate::redis::role::writable(ctx) || !permitted(ctx, hook) {
                return;
            }
            let mut args: Vec<String> = vec![stream.clone()];
            if let Some((approximate, n)) = maxlen {
                args.push("MAXLEN".into());
                args.push(if *approximate { "~" } else { "=" }.into());
                args.push(n.to_string());
            }
            args.push("*".into());
            for (field, value) in [
                ("type", event.kind.name().to_string()),
                ("table", event.table.to_string()),
                ("key", event.key.to_string()),
                ("timestamp", event.timestamp_ms.to_string()),
            ] {
                args.push(field.into());
                args.push(value);
            }
            for (field, value) in event.extra {
                args.push(field.to_string());
                args.push(match value {
                    Extra::Text(t) => t.to_string(),
                    Extra::Int(n) => n.to_string(),
                });
            }
            if IN_NOTIFICATION.get() {
                defer(ctx, hook.name.clone(), args);
            } else {
                xadd(ctx, &hook.name, &args);
            }
        }
    }
}

/// PUBLISH through the module API (no command lookup). Main thread only.
pub fn publish_message(ctx: &Context, channel: &RedisString, message: &str) {
    // SAFETY: main thread; the message string is created and freed here.
    unsafe {
        let text =
            raw::RedisModule_CreateString.unwrap()(ctx.ctx, message.as_ptr().cast(), message.len());
        raw::RedisModule_PublishMessage.unwrap()(ctx.ctx, channel.inner, text);
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, text);
    }
}

/// Whether the hook's owner may deliver now; a refusal is counted and logged like a failed
/// delivery.
fn permitted(ctx: &Context, hook: &Hook) -> bool {
    match owner_may_deliver(ctx, hook) {
        Ok(()) => true,
        Err(refused) => {
            stats::HOOK_ERRORS.inc();
            log_failure(
                ctx,
                &format!("pgcache: hook {}: {refused}; event dropped", hook.name),
            );
            false
        }
    }
}

fn xadd(ctx: &Context, hook: &str, args: &[String]) {
    let options = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result: CallResult = ctx.call_ext("XADD", &options, args.as_slice());
    if let Err(e) = result {
        stats::HOOK_ERRORS.inc();
        log_failure(
            ctx,
            &format!(
                "pgcache: hook {hook}: XADD {} failed: {}",
                args[0],
                e.to_utf8_string().unwrap_or_default()
            ),
        );
    }
}

/// Logs a delivery failure at most every ten seconds: a broken target must not flood the log.
fn log_failure(ctx: &Context, message: &str) {
    static LAST_LOGGED_S: AtomicU64 = AtomicU64::new(0);
    let now_s = (event::now_ms() / 1000) as u64;
    if now_s >= LAST_LOGGED_S.load(Ordering::Relaxed) + 10 {
        LAST_LOGGED_S.store(now_s, Ordering::Relaxed);
        ctx.log_warning(message);
    }
}

/// XADDs raised inside a keyspace notification, delivered by `DELIVER` right after.
static DEFERRED: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());
static DELIVER: Task = Task::new("a hook delivery", deliver_deferred);
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

/// Deliveries that may wait for the next event-loop turn. One command can raise an event per
/// key (an MGET of 100,000 expired keys expires them all at once); past this the events are
/// dropped, counted in `hook_errors` and logged, instead of holding memory without bound.
pub const MAX_DEFERRED: usize = 10_000;

fn defer(ctx: &Context, hook: String, args: Vec<String>) {
    let mut deferred = DEFERRED.lock().unwrap();
    if deferred.len() >= MAX_DEFERRED {
        drop(deferred);
        stats::HOOK_ERRORS.inc();
        log_failure(
            ctx,
            &format!(
                "pgcache: hook {hook}: more than {MAX_DEFERRED} deliveries raised in one \
                 command are waiting; dropping the rest"
            ),
        );
        return;
    }
    deferred.push((hook, args));
    drop(deferred);
    DELIVER.request();
}

fn deliver_deferred(ctx: &Context) -> bool {
    let deferred = std::mem::take(&mut *DEFERRED.lock().unwrap());
    if crate::redis::role::writable(ctx) {
        for (hook, args) in deferred {
            xadd(ctx, &hook, &args);
        }
    }
    false
}
