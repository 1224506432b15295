//! Cache events, as JSON:
//! `{"type":"cache_miss","table":"users","key":"{\"id\":7}","timestamp":1700000000000}`
//! (a named source's with `"source":"<name>"` after the type),
//! delivered to the default hook (PUBLISH on `event_channel`, `pg_cache_events` unless
//! configured, for the kinds in the `events` setting) and to every matching hook
//! (PGCACHE.HOOK, `hooks` module). Hit events are off by default because publishing on
//! every hit costs the hit path (see BENCHMARKS.md).

pub mod hooks;

use crate::config::current;
use crate::model::event::{Event, EventKind, Extra, now_ms, write_event_json};
use crate::model::source::SourceId;
use crate::redis::pubsub;
use redis_module::Context;

/// Whether any hook (the default one included) takes events of this kind.
pub fn wanted(kind: EventKind) -> bool {
    current::events().union(hooks::mask()).contains(kind)
}

/// Delivers one event of `source` to the hooks that take it. Main thread only.
pub fn publish(ctx: &Context, kind: EventKind, source: SourceId, table: &str, key: &str) {
    deliver(ctx, kind, source, table, [key], &[]);
}

/// Like `publish`, with fields beyond type, table, key and timestamp.
pub fn publish_with(
    ctx: &Context,
    kind: EventKind,
    source: SourceId,
    table: &str,
    key: &str,
    extra: &[(&str, Extra)],
) {
    deliver(ctx, kind, source, table, [key], extra);
}

/// Delivers one event per key (a MULTIREAD's misses), sharing the targets and the message
/// buffer. Main thread only.
pub fn publish_each<'a>(
    ctx: &Context,
    kind: EventKind,
    source: SourceId,
    table: &str,
    keys: impl IntoIterator<Item = &'a str>,
) {
    deliver(ctx, kind, source, table, keys, &[]);
}

thread_local! {
    // The message buffer, reused: every miss publishes an event by default.
    static MESSAGE: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

/// Delivers the events; a failure here is logged, never turned into a second reply to a
/// client already answered (a hit replies before its event is published).
fn deliver<'a>(
    ctx: &Context,
    kind: EventKind,
    source: SourceId,
    table: &str,
    keys: impl IntoIterator<Item = &'a str>,
    extra: &[(&str, Extra)],
) {
    crate::error::panic::contain("delivering an event", || {
        deliver_unguarded(ctx, kind, source, table, keys, extra)
    });
}

fn deliver_unguarded<'a>(
    ctx: &Context,
    kind: EventKind,
    source: SourceId,
    table: &str,
    keys: impl IntoIterator<Item = &'a str>,
    extra: &[(&str, Extra)],
) {
    let to_default = current::events().contains(kind);
    let hooked = hooks::mask().contains(kind);
    if !to_default && !hooked {
        return;
    }
    // Looked up only for a named source: the default's events, on every miss, take no lock.
    let source = (source != SourceId::DEFAULT)
        .then(|| current::name(source))
        .flatten();
    let hooks = hooked
        .then(|| hooks::matching(kind, source.as_deref(), table))
        .filter(|h| !h.is_empty());
    if !to_default && hooks.is_none() {
        return;
    }
    let channel =
        to_default.then(|| current::with_event_channel(|name| pubsub::channel(ctx, name)));
    let timestamp = now_ms();
    // Taken, not borrowed: a delivery can raise another event (an XADD that evicts).
    let mut message = MESSAGE.take();
    for key in keys {
        message.clear();
        write_event_json(
            &mut message,
            kind,
            source.as_deref(),
            table,
            key,
            timestamp,
            extra,
        );
        if let Some(channel) = &channel {
            pubsub::publish(ctx, channel, &message);
        }
        let event = Event {
            kind,
            source: source.as_deref(),
            table,
            key,
            timestamp_ms: timestamp,
            extra,
            json: &message,
        };
        for hook in hooks.iter().flatten() {
            hooks::fire(ctx, hook, &event);
        }
    }
    // A buffer grown by an outsized key is not kept.
    if message.capacity() <= 16 * 1024 {
        message.clear();
        MESSAGE.set(message);
    }
}
