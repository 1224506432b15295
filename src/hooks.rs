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

use crate::acl::{self, Access};
use crate::event::{self, Event, EventKind, EventMask, Extra};
use crate::ident;
use crate::stats;
use crate::tunables;
use redis_module::{CallOptionsBuilder, CallResult, Context, RedisString, raw};
use std::cell::Cell;
use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The name the `events` / `event_channel` settings' hook is listed under.
pub const DEFAULT_HOOK: &str = "default";
const MAX_HOOKS: usize = 64;
const MAX_NAME_BYTES: usize = 64;
const MAX_TARGET_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Publish(String),
    Xadd {
        stream: String,
        /// `MAXLEN ~ n` (approximate: cheaper trimming) or `MAXLEN = n`.
        maxlen: Option<(bool, u64)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub name: String,
    pub events: EventMask,
    /// Only this table's events (as events name it), or every table's.
    pub table: Option<String>,
    pub target: Target,
    /// The ACL user the hook acts for (`BY <user>`; `default` when omitted): every delivery
    /// first asks Redis whether that user may write the stream or publish on the channel.
    pub owner: String,
}

fn keyword(word: Option<&&str>, expected: &str) -> bool {
    word.is_some_and(|w| w.eq_ignore_ascii_case(expected))
}

fn checked_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if !valid {
        return Err(format!(
            "hook name {name:?} must be 1 to {MAX_NAME_BYTES} letters, digits, '_', '-', '.' or ':'"
        ));
    }
    if name.eq_ignore_ascii_case(DEFAULT_HOOK) {
        return Err(format!(
            "{DEFAULT_HOOK:?} is the built-in hook: change it with CONFIG SET pgcache.events \
             and pgcache.event_channel (events none turns it off)"
        ));
    }
    Ok(name.to_string())
}

fn checked_target(what: &str, name: Option<&&str>) -> Result<String, String> {
    let Some(name) = name else {
        return Err(format!("{what} needs a name"));
    };
    if name.is_empty()
        || name.len() > MAX_TARGET_BYTES
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ';' || c == '"')
    {
        return Err(format!(
            "{what} name {name:?} must be 1 to {MAX_TARGET_BYTES} bytes without spaces, control \
             characters, ';' or '\"'"
        ));
    }
    let prefix = tunables::cache_prefix();
    if !prefix.is_empty() && name.starts_with(&prefix) {
        return Err(format!(
            "{what} name {name:?} starts with the cache prefix {prefix:?}: pgcache would treat it as a cache entry"
        ));
    }
    Ok(name.to_string())
}

fn checked_user(name: Option<&&str>) -> Result<String, String> {
    match name {
        Some(name)
            if !name.is_empty()
                && name.len() <= MAX_TARGET_BYTES
                && !name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ';' || c == '"') =>
        {
            Ok(name.to_string())
        }
        _ => Err(format!(
            "BY needs an ACL user name of 1 to {MAX_TARGET_BYTES} bytes without spaces, \
             control characters, ';' or '\"'"
        )),
    }
}

impl Hook {
    /// Parses `<name> ON <event>[,<event>...] [TABLE <table>] PUBLISH <channel> |
    /// XADD <stream> [MAXLEN [~|=] <n>] [BY <user>]`, keywords in any case.
    pub fn parse(words: &[&str]) -> Result<Hook, String> {
        const USAGE: &str = "expected <name> ON <event>[,<event>...] [TABLE <table>] \
                             PUBLISH <channel> | XADD <stream> [MAXLEN ~ <n>] [BY <user>]";
        let name = checked_name(words.first().ok_or(USAGE)?)?;
        if !keyword(words.get(1), "ON") {
            return Err(format!("hook {name}: {USAGE}"));
        }
        let events = words
            .get(2)
            .ok_or_else(|| format!("hook {name}: ON needs events"))
            .and_then(|e| EventMask::parse(e).map_err(|e| format!("hook {name}: {e}")))?;
        if events.0 == 0 {
            return Err(format!("hook {name}: ON names no event"));
        }
        let mut rest = &words[3..];
        let mut table = None;
        if keyword(rest.first(), "TABLE") {
            let t = rest
                .get(1)
                .ok_or_else(|| format!("hook {name}: TABLE needs a table name"))?;
            table = Some(
                ident::parse_table(t)
                    .map_err(|e| format!("hook {name}: {e}"))?
                    .display(),
            );
            rest = &rest[2..];
        }
        let target = if keyword(rest.first(), "PUBLISH") {
            let channel = checked_target("channel", rest.get(1))?;
            rest = &rest[2..];
            Target::Publish(channel)
        } else if keyword(rest.first(), "XADD") {
            let stream = checked_target("stream", rest.get(1))?;
            rest = &rest[2..];
            let mut maxlen = None;
            if keyword(rest.first(), "MAXLEN") {
                // MAXLEN n, MAXLEN = n (exact) or MAXLEN ~ n (approximate).
                let (approximate, count_at) = match rest.get(1) {
                    Some(&"~") => (true, 2),
                    Some(&"=") => (false, 2),
                    _ => (false, 1),
                };
                let n = rest
                    .get(count_at)
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("hook {name}: MAXLEN needs a positive integer"))?;
                rest = &rest[count_at + 1..];
                maxlen = Some((approximate, n));
            }
            Target::Xadd { stream, maxlen }
        } else {
            return Err(format!(
                "hook {name}: expected PUBLISH <channel> or XADD <stream> after the events"
            ));
        };
        let mut owner = acl::DEFAULT_USER.to_string();
        if keyword(rest.first(), "BY") {
            owner = checked_user(rest.get(1))?;
            rest = &rest[2..];
        }
        if let Some(extra) = rest.first() {
            return Err(format!("hook {name}: unexpected {extra:?}; {USAGE}"));
        }
        Ok(Hook {
            name,
            events,
            table,
            target,
            owner,
        })
    }

    /// The definition, as `pgcache.hooks` and HOOK LIST show it (parses back to the same).
    pub fn render(&self) -> String {
        let mut text = format!("{} ON {}", self.name, self.events.render());
        if let Some(table) = &self.table {
            text.push_str(" TABLE ");
            text.push_str(table);
        }
        text.push(' ');
        text.push_str(&self.target.render());
        if self.owner != acl::DEFAULT_USER {
            text.push_str(" BY ");
            text.push_str(&self.owner);
        }
        text
    }

    /// What delivering to the target does, for the ACL check.
    pub fn access(&self) -> (&str, Access) {
        match &self.target {
            Target::Publish(channel) => (channel, Access::Publish),
            Target::Xadd { stream, maxlen } => (
                stream,
                if maxlen.is_some() {
                    Access::AppendAndTrim
                } else {
                    Access::Append
                },
            ),
        }
    }

    /// Whether the owner may deliver to the target now (its ACL rules may have changed since
    /// the hook was added).
    pub fn permitted(&self, ctx: &Context) -> Result<(), String> {
        let (target, access) = self.access();
        acl::check(ctx, &self.owner, target, access)
    }
}

impl Target {
    pub fn render(&self) -> String {
        match self {
            Target::Publish(channel) => format!("PUBLISH {channel}"),
            Target::Xadd { stream, maxlen } => match maxlen {
                None => format!("XADD {stream}"),
                Some((true, n)) => format!("XADD {stream} MAXLEN ~ {n}"),
                Some((false, n)) => format!("XADD {stream} MAXLEN = {n}"),
            },
        }
    }
}

/// Parses the `hooks` setting: definitions separated by ';'.
pub fn parse_all(text: &str) -> Result<Vec<Hook>, String> {
    let mut hooks: Vec<Hook> = Vec::new();
    for definition in text.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let words: Vec<&str> = definition.split_whitespace().collect();
        let hook = Hook::parse(&words)?;
        if hooks.iter().any(|h| h.name == hook.name) {
            return Err(format!("hook {} is defined twice", hook.name));
        }
        hooks.push(hook);
    }
    if hooks.len() > MAX_HOOKS {
        return Err(format!("{} hooks, more than {MAX_HOOKS}", hooks.len()));
    }
    Ok(hooks)
}

pub fn render_all(hooks: &[Arc<Hook>]) -> String {
    hooks
        .iter()
        .map(|h| h.render())
        .collect::<Vec<_>>()
        .join("; ")
}

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
pub fn set_all(text: &str) -> Result<(), String> {
    let hooks = parse_all(text)?;
    install(hooks.into_iter().map(Arc::new).collect());
    Ok(())
}

/// Adds a hook. Adding one that exists with the same definition is a no-op (so a replayed
/// AOF or a retried ADD is harmless); with another definition it is an error.
pub fn add(hook: Hook) -> Result<(), String> {
    let mut hooks = all();
    if let Some(existing) = hooks.iter().find(|h| h.name == hook.name) {
        if **existing == hook {
            return Ok(());
        }
        return Err(format!(
            "hook {} exists ({}); DEL it first to redefine it",
            hook.name,
            existing.render()
        ));
    }
    if hooks.len() >= MAX_HOOKS {
        return Err(format!("at most {MAX_HOOKS} hooks; DEL one first"));
    }
    hooks.push(Arc::new(hook));
    install(hooks);
    Ok(())
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
            if !crate::cache::writable(ctx) || !permitted(ctx, hook) {
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
    match hook.permitted(ctx) {
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

static DEFERRED: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());
static TIMER_SCHEDULED: AtomicBool = AtomicBool::new(false);

static SYNC_SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Whether deferred deliveries or a SYNC wait for their timer (unloading must wait).
pub fn pending() -> bool {
    TIMER_SCHEDULED.load(Ordering::SeqCst) || SYNC_SCHEDULED.load(Ordering::SeqCst)
}

/// A replica came online (after a full or partial sync): send every replica the whole set,
/// since an RDB transfer does not carry configuration. From a zero-delay timer, whose
/// context replicates. Main thread only.
pub fn on_replica_online(ctx: &Context) {
    if !crate::cache::writable(ctx) || SYNC_SCHEDULED.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: main thread; the callback takes no data.
    unsafe {
        raw::RedisModule_CreateTimer.unwrap()(ctx.ctx, 0, Some(send_sync), std::ptr::null_mut());
    }
}

extern "C" fn send_sync(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    crate::error::guard("sending hooks to replicas", || replicate_hooks(ctx));
}

fn replicate_hooks(ctx: *mut raw::RedisModuleCtx) {
    SYNC_SCHEDULED.store(false, Ordering::SeqCst);
    let Ok(definitions) = std::ffi::CString::new(setting()) else {
        return;
    };
    // SAFETY: timer context on the main thread; the strings outlive the call.
    unsafe {
        raw::RedisModule_Replicate.unwrap()(
            ctx,
            c"PGCACHE.HOOK".as_ptr(),
            c"cc".as_ptr(),
            c"SYNC".as_ptr(),
            definitions.as_ptr(),
        );
    }
}

fn defer(ctx: &Context, hook: String, args: Vec<String>) {
    DEFERRED.lock().unwrap().push((hook, args));
    if !TIMER_SCHEDULED.swap(true, Ordering::SeqCst) {
        // SAFETY: main thread; the callback takes no data.
        unsafe {
            raw::RedisModule_CreateTimer.unwrap()(
                ctx.ctx,
                0,
                Some(deliver_deferred),
                std::ptr::null_mut(),
            );
        }
    }
}

extern "C" fn deliver_deferred(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    crate::error::guard("a hook delivery", || deliver_now(ctx));
}

fn deliver_now(ctx: *mut raw::RedisModuleCtx) {
    let context = Context::new(ctx);
    TIMER_SCHEDULED.store(false, Ordering::SeqCst);
    let deferred = std::mem::take(&mut *DEFERRED.lock().unwrap());
    if !crate::cache::writable(&context) {
        return;
    }
    for (hook, args) in deferred {
        xadd(&context, &hook, &args);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Hook, String> {
        Hook::parse(&text.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn definitions_parse_and_render_back() {
        for text in [
            "audit ON write,invalidate TABLE users XADD audit:users MAXLEN ~ 1000",
            "misses ON miss PUBLISH misses",
            "exact ON error,slow XADD ops MAXLEN = 50",
            "all ON hit,miss,write,invalidate,fill,expire,evict,error,slow XADD everything",
            "owned ON miss XADD s MAXLEN = 1 BY alice",
            "told ON miss PUBLISH c BY bob",
        ] {
            let hook = parse(text).unwrap();
            assert_eq!(hook.render(), text);
            assert_eq!(parse(&hook.render()).unwrap(), hook);
        }
        let hook = parse("h on MISS table public.users xadd s maxlen 10").unwrap();
        assert_eq!(hook.render(), "h ON miss TABLE users XADD s MAXLEN = 10");
        assert_eq!(hook.table.as_deref(), Some("users"));
        let hook = parse("h ON miss TABLE app.orders PUBLISH c").unwrap();
        assert_eq!(hook.table.as_deref(), Some("app.orders"));
        assert_eq!(
            hook.owner, "default",
            "a hook without BY is the default user's"
        );
        let hook = parse("h ON miss PUBLISH c by default").unwrap();
        assert_eq!(
            hook.render(),
            "h ON miss PUBLISH c",
            "BY default is implied"
        );
    }

    #[test]
    fn the_owner_decides_what_delivery_needs() {
        let access = |text: &str| {
            let hook = parse(text).unwrap();
            let (target, access) = hook.access();
            (target.to_string(), access)
        };
        assert_eq!(access("h ON miss PUBLISH c"), ("c".into(), Access::Publish));
        assert_eq!(access("h ON miss XADD s"), ("s".into(), Access::Append));
        assert_eq!(
            access("h ON miss XADD s MAXLEN ~ 5"),
            ("s".into(), Access::AppendAndTrim)
        );
    }

    #[test]
    fn bad_definitions_say_what_is_wrong() {
        for (text, needle) in [
            ("", "expected <name>"),
            ("default ON miss PUBLISH c", "built-in"),
            ("bad/name ON miss PUBLISH c", "hook name"),
            ("h miss PUBLISH c", "expected <name> ON"),
            ("h ON PUBLISH c", "unknown event"),
            ("h ON none PUBLISH c", "names no event"),
            ("h ON hot PUBLISH c", "unknown event \"hot\""),
            ("h ON miss TABLE", "TABLE needs"),
            ("h ON miss TABLE a.b.c PUBLISH c", "invalid table name"),
            ("h ON miss SEND c", "expected PUBLISH"),
            ("h ON miss PUBLISH", "channel needs a name"),
            (
                "h ON miss XADD s MAXLEN ~ x",
                "MAXLEN needs a positive integer",
            ),
            (
                "h ON miss XADD s MAXLEN 0",
                "MAXLEN needs a positive integer",
            ),
            ("h ON miss XADD s extra", "unexpected \"extra\""),
            ("h ON miss XADD s BY", "BY needs an ACL user name"),
            ("h ON miss XADD s BY a b", "unexpected \"b\""),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_setting_holds_several_definitions() {
        let hooks = parse_all(" a ON miss PUBLISH x ;b ON write XADD s MAXLEN ~ 5; ").unwrap();
        assert_eq!(hooks.len(), 2);
        let arcs: Vec<Arc<Hook>> = hooks.into_iter().map(Arc::new).collect();
        assert_eq!(
            render_all(&arcs),
            "a ON miss PUBLISH x; b ON write XADD s MAXLEN ~ 5"
        );
        assert!(
            parse_all("a ON miss PUBLISH x; a ON write PUBLISH y")
                .unwrap_err()
                .contains("twice")
        );
        assert_eq!(parse_all("").unwrap(), vec![]);
    }
}
