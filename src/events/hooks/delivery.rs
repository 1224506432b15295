//! Delivering one event to one hook, on the main thread: PUBLISH through the module API, or
//! XADD (replicated), deferred to a zero-delay timer when raised where pgcache's writes wait
//! (`main_thread::writes_waiting`: a keyspace notification, a server event). A hook whose
//! owner may no longer reach its target, or whose XADD fails, drops the event, counted in
//! `hook_errors` and logged at most every ten seconds.

use super::{Hook, Target, owner_may_deliver};
use crate::model::event::{self, Event, Extra};
use crate::model::source::SourceId;
use crate::redis::main_thread::{self, Task};
use crate::redis::pubsub;
use crate::stats;
use redis_module::{CallOptionsBuilder, CallResult, Context};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sends one event to one hook, if its owner may. Main thread only.
pub fn fire(ctx: &Context, hook: &Hook, event: &Event) {
    match &hook.target {
        Target::Publish(channel) => {
            if !permitted(ctx, hook) {
                return;
            }
            let channel = pubsub::channel(ctx, channel);
            pubsub::publish(ctx, &channel, event.json);
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
            args.extend(["type".into(), event.kind.name().to_string()]);
            if let Some(source) = event.source {
                args.extend(["source".into(), source.to_string()]);
            }
            for (field, value) in [
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
                    Extra::Json(json) => json.to_string(),
                });
            }
            if main_thread::writes_wait() {
                defer(ctx, hook.name.clone(), args);
            } else {
                xadd(ctx, &hook.name, &args);
            }
        }
    }
}

/// Whether the hook's owner may deliver now; a refusal is counted and logged like a failed
/// delivery.
fn permitted(ctx: &Context, hook: &Hook) -> bool {
    match owner_may_deliver(ctx, hook) {
        Ok(()) => true,
        Err(refused) => {
            stats::of(SourceId::DEFAULT).hook_errors.inc();
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
        stats::of(SourceId::DEFAULT).hook_errors.inc();
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

/// XADDs raised where writes wait, delivered by `DELIVER` right after.
static DEFERRED: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());
static DELIVER: Task = Task::new("a hook delivery", deliver_deferred);
/// Deliveries that may wait for the next event-loop turn. One command can raise an event per
/// key (an MGET of 100,000 expired keys expires them all at once); past this the events are
/// dropped, counted in `hook_errors` and logged, instead of holding memory without bound.
pub const MAX_DEFERRED: usize = 10_000;

fn defer(ctx: &Context, hook: String, args: Vec<String>) {
    let mut deferred = DEFERRED.lock().unwrap();
    if deferred.len() >= MAX_DEFERRED {
        drop(deferred);
        stats::of(SourceId::DEFAULT).hook_errors.inc();
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
