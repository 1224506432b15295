//! The cache entries in the Redis keyspace. Main thread only: every function here takes the
//! command's (or reply callback's) context, whose client decides the selected DB.

use crate::cache::bypass;
use crate::cache::emptied;
use crate::cache::fill;
use crate::cache::freshness;
use crate::cache::tags::{self, Keep};
use crate::config::current;
use crate::model::source::SourceId;
use crate::redis::args::Arg;
use crate::redis::keyspace::{self, Key, Name};
use crate::redis::reply;
use crate::redis::role::writable;
use crate::stats;
use redis_module::{CallOptionsBuilder, CallResult, Context, ContextFlags};
use std::cell::RefCell;

/// Every DB that holds at least one key: where invalidations and flushes must look, whoever
/// wrote the entries (this process, a previous one whose RDB or AOF was loaded, or the
/// primary of a promoted replica).
pub fn dbs_with_keys(ctx: &Context) -> Vec<i32> {
    let mut dbs = Vec::new();
    keyspace::in_each_db(ctx, 0..keyspace::db_count(ctx), |db| {
        if keyspace::db_size(ctx) > 0 {
            dbs.push(db);
        }
    });
    dbs
}

thread_local! {
    // Reused for building key names on the hit path, so a hit allocates nothing of ours.
    static KEY_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a cache entry says when PostgreSQL has no such row (negative caching). A row is
/// always a JSON object, so the JSON `null` cannot be mistaken for one.
pub const ABSENT: &str = "null";

/// A cache lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Nothing cached: ask PostgreSQL.
    Miss,
    /// Cached as absent: there is no such row.
    Absent,
    Row(String),
}

/// Opens `prefix + suffix`, an entry of `source`, and, if it holds a string, replies it to
/// the client straight from Redis's memory (nil for an entry remembering an absent row).
/// Returns whether it replied.
pub fn reply_if_cached(ctx: &Context, source: SourceId, prefix: &[u8], suffix: &[u8]) -> bool {
    with_entry_name(prefix, suffix, |name| {
        !bypass::bypassed(source, name)
            && keyspace::with_name(ctx, name, |key| {
                keyspace::read_string(ctx, key, |value| reply_value(ctx, source, value))
            })
            .is_some()
    })
}

/// What `reply_if_readable` did.
pub enum Readable {
    Replied,
    /// Not cached; the name the key was probed under, for storing the row once fetched.
    NotCached(Name),
    /// The client's user may not read the key (nothing was replied).
    Refused,
}

/// `reply_if_cached` for a key the command derived (READ, MULTIREAD): the client's ACL user
/// must be allowed to read it, as Redis checks the keys of its own commands.
#[inline]
pub fn reply_if_readable(
    ctx: &Context,
    source: SourceId,
    prefix: &[u8],
    suffix: &[u8],
) -> Readable {
    with_entry_name(prefix, suffix, |buf| {
        let name = Name::new(buf);
        if crate::redis::acl::reads_may_be_refused(ctx)
            && !crate::redis::acl::may_read(ctx, name.key())
        {
            Readable::Refused
        } else if bypass::bypassed(source, buf)
            || keyspace::read_string(ctx, name.key(), |value| reply_value(ctx, source, value))
                .is_none()
        {
            Readable::NotCached(name)
        } else {
            Readable::Replied
        }
    })
}

/// Whether the client's ACL user may read the key `prefix + suffix`.
pub fn readable(ctx: &Context, prefix: &[u8], suffix: &[u8]) -> bool {
    if !crate::redis::acl::reads_may_be_refused(ctx) {
        return true;
    }
    with_entry_name(prefix, suffix, |name| {
        keyspace::with_name(ctx, name, |key| crate::redis::acl::may_read(ctx, key))
    })
}

/// Like `reply_if_cached`, for the key of `source` the client named in argument `name`
/// (whose text is `bytes`): it is opened as Redis holds it, without building its name again.
#[inline]
pub fn reply_if_cached_named(ctx: &Context, source: SourceId, name: Arg, bytes: &[u8]) -> bool {
    if bypass::bypassed(source, bytes) {
        return false;
    }
    keyspace::read_string(ctx, Key::from_arg(name), |value| {
        reply_value(ctx, source, value)
    })
    .is_some()
}

/// Replies a cached value of `source`: the row, or nil for a remembered absence. Always
/// inlined: taking the source left it out of line, which cost READ's hit about 25
/// instructions (callgrind).
#[inline(always)]
fn reply_value(ctx: &Context, source: SourceId, value: &[u8]) {
    if value == ABSENT.as_bytes() {
        stats::of(source).negative_hits.inc();
        reply::null(ctx);
    } else {
        stats::of(source).hits.inc();
        reply::bulk(ctx, value);
    }
}

/// The cached value at `prefix + suffix`, an entry of `source` (a copy; used where several
/// values are gathered), and on a miss the name the key was probed under (to store the row
/// under once fetched).
pub fn get_or_name(
    ctx: &Context,
    source: SourceId,
    prefix: &[u8],
    suffix: &[u8],
) -> (Cached, Option<Name>) {
    with_entry_name(prefix, suffix, |buf| {
        let name = Name::new(buf);
        let cached = if bypass::bypassed(source, buf) {
            None
        } else {
            keyspace::read_string(ctx, name.key(), |value| cached_value(source, value))
        };
        match cached {
            Some(cached) => (cached, None),
            None => (Cached::Miss, Some(name)),
        }
    })
}

/// What a cached value of `source` says, counted as the hit it is.
fn cached_value(source: SourceId, value: &[u8]) -> Cached {
    if value == ABSENT.as_bytes() {
        stats::of(source).negative_hits.inc();
        Cached::Absent
    } else {
        stats::of(source).hits.inc();
        Cached::Row(String::from_utf8_lossy(value).into_owned())
    }
}

/// Runs `f` with the entry name `prefix + suffix`, built in a reused buffer, so a lookup
/// allocates nothing of ours.
#[inline(always)]
fn with_entry_name<R>(prefix: &[u8], suffix: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    KEY_BUFFER.with_borrow_mut(|buf| {
        buf.clear();
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(suffix);
        f(buf)
    })
}

/// A cache entry's name without the prefix (`<table>:<canonical pk>`) split into the table
/// and the key. A pk is a JSON object, so the table ends at the first `:{`.
pub fn split_entry_name(entry: &str) -> (&str, &str) {
    match entry.find(":{") {
        Some(i) => (&entry[..i], &entry[i + 1..]),
        None => ("", entry),
    }
}

/// Whether this completion's fills may be written, checked once per completion (as Redis
/// checks memory once per command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Write,
    /// Not here: the cache is held (until the invalidation listener is known to listen, a
    /// row read now could change unnoticed) or the change feed has not vouched for it within
    /// `max_staleness_ms`, this server is a replica (its dataset is its
    /// primary's to write), clients are paused (`redis::paused`), or, on a cluster, the keys' slot is no longer served here (it may
    /// have moved while the rows were fetched, and no key is ever written into a slot served
    /// elsewhere).
    NotHere,
    /// Redis is over `maxmemory` under noeviction: a miss is answered whatever Redis's
    /// memory, but never pushes it past its limit, since nothing would bring it back. Under
    /// the other policies (the crate calls the flag EVICTED; Redis, EVICT) Redis evicts (our
    /// entries all have a TTL), as it does for every write.
    OutOfMemory,
}

/// The admission of fills of `key`, an entry of `source`, and of keys of its slot (a
/// completion's keys share one: MULTIREAD's are refused otherwise, MGET's by the server), so
/// a cluster node asks Redis once whether it still serves them.
pub fn admission(ctx: &Context, source: SourceId, key: &str) -> Admission {
    // Nothing is filled while the source's change feed cannot vouch for its cache: a change
    // it has not applied yet could be missed by the fill's no-stale-fill check.
    if bypass::of(source).holding()
        || !freshness::of(source).vouched(current::of(source).max_staleness_ms())
    {
        return Admission::NotHere;
    }
    // Nothing is added under a prefix being flushed: the scan under way then visits every
    // entry there is, however many more changes ask for the same flush (`flush::start`).
    if bypass::bypassed(source, key.as_bytes()) {
        return Admission::NotHere;
    }
    let flags = ctx.get_flags();
    if flags.contains(ContextFlags::SLAVE) || crate::redis::paused::writes_paused() {
        Admission::NotHere
    } else if flags.contains(ContextFlags::OOM) && !flags.contains(ContextFlags::EVICTED) {
        Admission::OutOfMemory
    } else if !crate::redis::cluster::serves(ctx, key) {
        Admission::NotHere
    } else {
        Admission::Write
    }
}

/// Caches a fill's result for `source` (under `name` when the miss kept the one it probed
/// with): the row for `keep.ttl` seconds, or, when PostgreSQL has no such row, the absent
/// marker for the source's `negative_ttl` seconds (if negative caching is on); either joins
/// `keep.tags`' sets. Returns whether it was admitted.
pub fn write_fetched(
    ctx: &Context,
    source: SourceId,
    admission: Admission,
    key: &str,
    name: Option<&Name>,
    row: Option<&str>,
    keep: &Keep,
) -> bool {
    match admission {
        Admission::NotHere => return false,
        Admission::OutOfMemory => {
            stats::of(source).fills_skipped_oom.inc();
            return false;
        }
        Admission::Write => {}
    }
    stats::of(source).fills.inc();
    let (value, ttl) = match row {
        Some(row) => (row, keep.ttl),
        None => (ABSENT, current::of(source).negative_ttl()),
    };
    // An absence is remembered only when negative caching is on (`negative_ttl` > 0).
    if row.is_some() || ttl > 0 {
        write(ctx, key, name, value, ttl);
        tags::attach_new(ctx, source, &[key], &keep.tags, ttl);
    }
    true
}

fn call_replicated(ctx: &Context, command: &str, args: &[&str]) {
    let options = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    let result: CallResult = ctx.call_ext(command, &options, args);
    if let Err(e) = result {
        ctx.log_warning(&format!(
            "pgcache: {command} of a cache entry failed: {}",
            e.to_utf8_string().unwrap_or_default()
        ));
    }
}

/// Stores `value` at `key` for `ttl_seconds`, with an absolute expiry so replicas and the
/// AOF agree on when it ends. Written through the key API rather than RM_Call (this runs
/// once per miss on the main thread), so it does what SET does itself: replicate as
/// `SET key value PXAT ms` and raise the `set` and `expire` keyspace events. Fills of it in
/// flight will not cache their row.
pub fn store(ctx: &Context, key: &str, value: &str, ttl_seconds: u64) {
    // A fill in flight must not overwrite what was stored.
    fill::invalidated(key);
    if writable(ctx) {
        write(ctx, key, None, value, ttl_seconds);
    }
}

/// `store` for a caller that checked this server may write.
fn write(ctx: &Context, key: &str, name: Option<&Name>, value: &str, ttl_seconds: u64) {
    emptied::stored(key.as_bytes());
    let expires_at = (crate::model::event::now_ms() + u128::from(ttl_seconds) * 1000) as i64;
    match name {
        Some(name) => keyspace::set_until(ctx, name.key(), value, expires_at),
        None => keyspace::with_name(ctx, key.as_bytes(), |key| {
            keyspace::set_until(ctx, key, value, expires_at)
        }),
    }
}

/// Removes `key` from the context's DB; replicated. Fills of it in flight will not cache
/// their row.
pub fn delete(ctx: &Context, key: &str) {
    fill::invalidated(key);
    if !writable(ctx) {
        return;
    }
    call_replicated(ctx, "DEL", &[key]);
}

/// Removes `key` from each of `dbs` that holds it (replicated, with the keyspace events and
/// client-tracking invalidations DEL gives); fills of it in flight will not cache their row.
/// Returns how many entries were removed.
pub fn delete_in(ctx: &Context, key: &str, dbs: &[i32]) -> usize {
    fill::invalidated(key);
    if !writable(ctx) || dbs.is_empty() {
        return 0;
    }
    let name = ctx.create_string(key);
    let mut removed = 0;
    keyspace::in_each_db(ctx, dbs.iter().copied(), |_| {
        if keyspace::exists(ctx, Key::from_string(&name)) {
            call_replicated(ctx, "DEL", &[key]);
            removed += 1;
        }
    });
    removed
}

#[cfg(test)]
mod tests {
    use super::split_entry_name;

    #[test]
    fn entry_names_split_into_table_and_key() {
        assert_eq!(
            split_entry_name("users:{\"id\":7}"),
            ("users", "{\"id\":7}")
        );
        assert_eq!(
            split_entry_name("app.orders:{\"a\":\"x:{y\"}"),
            ("app.orders", "{\"a\":\"x:{y\"}")
        );
        assert_eq!(split_entry_name("odd"), ("", "odd"));
    }
}
