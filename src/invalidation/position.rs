//! How far the replication source has applied PostgreSQL's log, and the copy of that
//! position kept in the keyspace.
//!
//! The position is an ordinary key (`POSITION_KEY`), written on the main thread after the
//! deletions it covers: it reaches the RDB, the AOF and the replicas with the entries it
//! vouches for, so a restarted server or a promoted replica knows exactly which changes its
//! entries reflect and resumes the slot from there. A module data type could put it in the
//! RDB's aux fields, but would make every RDB need pgcache to load (see DESIGN.md §3). The
//! slot is confirmed only up to a position written (`stored`), never to one merely applied,
//! and only once the server would keep it through a crash or a failover (`durability`).
//!
//! A position that only moved on is written at most every `WRITE_EVERY`: PostgreSQL's
//! keepalives move it up to thousands of times a second while other tables change, and each
//! write is a SET in the AOF and to every replica. A copy older than what is applied is always
//! safe (a server that resumes from it deletes a few entries a second time); what is written
//! never runs ahead of the deletions it covers.

use crate::cache;
use crate::config::current;
use crate::model::lsn::Lsn;
use crate::model::source::{self, SourceId};
use crate::redis::{cluster, keyspace};
use redis_module::{CallOptionsBuilder, CallResult, Context};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a position that only moved on is written (the slot's confirmation follows it,
/// within `durability::OBSERVE_EVERY` of a look at the server).
const WRITE_EVERY: Duration = Duration::from_millis(100);

/// Where the default source's position lives (in DB 0). Not under the cache prefix, so
/// flushes pass it by. On a cluster node, in a slot the node serves: the key is tagged for
/// its lowest slot, which a promoted replica serves too (a resharding that moves that slot
/// away loses the position: the source then starts over with a flush).
pub const POSITION_KEY: &str = "pgcache:replication:position";

/// Where the position of source `name` (None: the default source) lives: a named source's
/// nests its name as its cache keys do (`pgcache:@analytics:replication:position`, design/53
/// §2.4), so two sources' slots never resume from each other's position.
fn position_key(name: Option<&str>) -> String {
    match name {
        None => POSITION_KEY.to_string(),
        Some(name) => format!(
            "pgcache:{}{name}:replication:position",
            char::from(source::MARK)
        ),
    }
}

/// The position key's name of `source` on this server; None on a cluster node that serves
/// no slot.
fn key_name(ctx: &Context, source: SourceId) -> Option<String> {
    let key = position_key(current::name(source).as_deref());
    if !cluster::enabled() {
        return Some(key);
    }
    let slot = cluster::lowest_served_slot(ctx)?;
    Some(format!("{key}:{{{}}}", cluster::tag_for(slot)))
}

/// What the position key holds: the position, and the PostgreSQL system and slot it is a
/// position of (a position means nothing in another server's log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    /// PostgreSQL's system identifier (IDENTIFY_SYSTEM).
    pub system: String,
    pub slot: String,
}

impl Record {
    fn to_text(&self) -> String {
        format!("{} {} {}", self.lsn, self.system, self.slot)
    }

    fn parse(text: &str) -> Option<Record> {
        let mut parts = text.split(' ');
        let lsn = Lsn::parse(parts.next()?).ok()?;
        let system = parts.next()?.to_string();
        let slot = parts.next()?.to_string();
        (parts.next().is_none() && !system.is_empty() && !slot.is_empty()).then_some(Record {
            lsn,
            system,
            slot,
        })
    }
}

struct State {
    /// The log's identity and the position applied in it: every transaction committed at
    /// or before `applied.lsn` has been applied to the keyspace.
    applied: Option<Record>,
    /// What the position key holds.
    stored: Option<Record>,
    /// When it was last written.
    written_at: Option<Instant>,
}

impl State {
    /// The position to write now, if any: the applied one when it differs from the copy in
    /// the keyspace and the copy is of another log or slot (a new starting point is written
    /// at once), or `WRITE_EVERY` has passed since the last write, or `at_once` says so.
    fn due(&self, now: Instant, at_once: bool) -> Option<Record> {
        let applied = self.applied.as_ref()?;
        if self.stored.as_ref() == Some(applied) {
            return None;
        }
        let same_log = self
            .stored
            .as_ref()
            .is_some_and(|s| s.system == applied.system && s.slot == applied.slot);
        let recent = self
            .written_at
            .is_some_and(|at| now.duration_since(at) < WRITE_EVERY);
        (at_once || !same_log || !recent).then(|| applied.clone())
    }
}

/// How far one feed has applied the log, and the copy of that position in the keyspace.
pub struct Position {
    /// Whose log it is: the position is published to its cache and kept under its key.
    source: SourceId,
    state: Mutex<State>,
    /// How long the last transaction applied took from its commit in PostgreSQL to its
    /// invalidations applied here, in microseconds.
    last_lag_us: AtomicU64,
}

/// Tells the cache of `source` how far it reflects the log (`cache::applied`, which `AFTER`
/// reads).
fn publish(source: SourceId, applied: &Option<Record>) {
    cache::applied::of(source).set(applied.as_ref().map_or(Lsn(0), |r| r.lsn));
}

/// The position `source` applied (0/0 when none): every change committed up to it is
/// applied.
#[inline]
pub fn applied_lsn_of(source: SourceId) -> Lsn {
    cache::applied::of(source).get()
}

/// What the position key of `source` holds, read without taking it as this server's (a
/// replica follows its primary's). Main thread.
pub fn held(ctx: &Context, source: SourceId) -> Option<Record> {
    let mut record = None;
    let name = key_name(ctx, source);
    keyspace::in_each_db(ctx, [0], |_| {
        let Some(name) = &name else { return };
        record = keyspace::with_name(ctx, name.as_bytes(), |key| {
            keyspace::read_string(ctx, key, |value| {
                Record::parse(std::str::from_utf8(value).unwrap_or(""))
            })
        })
        .flatten();
    });
    record
}

impl Position {
    /// Nothing applied, nothing stored (const, so a `static` holds the default feed's).
    pub const fn new(source: SourceId) -> Position {
        Position {
            source,
            state: Mutex::new(State {
                applied: None,
                stored: None,
                written_at: None,
            }),
            last_lag_us: AtomicU64::new(0),
        }
    }

    pub fn record_lag(&self, lag: Duration) {
        self.last_lag_us
            .store(lag.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn last_lag(&self) -> Duration {
        Duration::from_micros(self.last_lag_us.load(Ordering::Relaxed))
    }

    /// Reads the position key (after a load from disk, at start, after a promotion). Main
    /// thread.
    pub fn load(&self, ctx: &Context) -> Option<Record> {
        let record = held(ctx, self.source);
        let mut state = self.state.lock().unwrap();
        state.applied = record.clone();
        state.stored = record.clone();
        publish(self.source, &state.applied);
        record
    }

    /// The feed starts consuming `record`'s slot at its position (a new slot's first
    /// position, or the slot's own after a gap nothing could cover). Any thread.
    pub fn restart_at(&self, record: Record) {
        let mut state = self.state.lock().unwrap();
        state.applied = Some(record);
        // A starting point is written at once, whatever was written lately.
        state.written_at = None;
        publish(self.source, &state.applied);
    }

    /// Everything committed up to `lsn` is applied. Main thread.
    pub fn applied_up_to(&self, lsn: Lsn) {
        let mut state = self.state.lock().unwrap();
        if let Some(applied) = &mut state.applied
            && lsn > applied.lsn
        {
            applied.lsn = lsn;
            publish(self.source, &state.applied);
        }
    }

    /// Writes the applied position into the keyspace (replicated like any write) if it
    /// moved and is due (see the module's doc). Main thread, on a primary.
    pub fn store(&self, ctx: &Context) {
        self.write(ctx, false);
    }

    /// Writes the applied position into the keyspace if it moved, due or not: the look at
    /// the server that tells how far the slot may be confirmed (`durability`) starts with
    /// it. Main thread, on a primary.
    pub fn store_now(&self, ctx: &Context) {
        self.write(ctx, true);
    }

    fn write(&self, ctx: &Context, at_once: bool) {
        let now = Instant::now();
        let Some(record) = self.state.lock().unwrap().due(now, at_once) else {
            return;
        };
        let options = CallOptionsBuilder::new()
            .replicate()
            .errors_as_replies()
            .build();
        let Some(name) = key_name(ctx, self.source) else {
            return;
        };
        let mut written = false;
        keyspace::in_each_db(ctx, [0], |_| {
            let text = record.to_text();
            let result: CallResult = ctx.call_ext("SET", &options, &[name.as_str(), text.as_str()]);
            match result {
                Ok(_) => written = true,
                Err(e) => ctx.log_warning(&format!(
                    "pgcache: cannot write the replication position ({}); the slot is not \
                     confirmed past the last position written",
                    e.to_utf8_string().unwrap_or_default()
                )),
            }
        });
        if written {
            let mut state = self.state.lock().unwrap();
            state.stored = Some(record);
            state.written_at = Some(now);
        }
    }

    /// The position applied, if the feed has one.
    pub fn applied(&self) -> Option<Record> {
        self.state.lock().unwrap().applied.clone()
    }

    /// The position the keyspace holds: how far the slot may be confirmed.
    pub fn stored(&self) -> Option<Record> {
        self.state.lock().unwrap().stored.clone()
    }

    /// At unload.
    pub fn forget(&self) {
        let mut state = self.state.lock().unwrap();
        state.applied = None;
        state.stored = None;
        state.written_at = None;
        publish(self.source, &None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let record = Record {
            lsn: Lsn(0x1_0000_16B3),
            system: "7301234567890123456".into(),
            slot: "pgcache".into(),
        };
        assert_eq!(record.to_text(), "1/16B3 7301234567890123456 pgcache");
        assert_eq!(Record::parse(&record.to_text()), Some(record));
    }

    fn record(lsn: u64, slot: &str) -> Record {
        Record {
            lsn: Lsn(lsn),
            system: "7301234567890123456".into(),
            slot: slot.into(),
        }
    }

    #[test]
    fn a_position_that_only_moved_on_is_written_every_so_often_a_new_one_at_once() {
        let t0 = Instant::now();
        let mut state = State {
            applied: Some(record(10, "pgcache")),
            stored: None,
            written_at: None,
        };
        assert_eq!(state.due(t0, false), Some(record(10, "pgcache")), "first");
        state.stored = Some(record(10, "pgcache"));
        state.written_at = Some(t0);
        assert_eq!(state.due(t0, false), None, "unmoved");
        state.applied = Some(record(20, "pgcache"));
        let soon = t0 + WRITE_EVERY / 2;
        assert_eq!(state.due(soon, false), None, "moved on, written lately");
        assert_eq!(
            state.due(soon, true),
            Some(record(20, "pgcache")),
            "asked at once"
        );
        assert_eq!(
            state.due(t0 + WRITE_EVERY, false),
            Some(record(20, "pgcache")),
            "due again"
        );
        state.applied = Some(record(5, "pgcache_other"));
        assert_eq!(
            state.due(soon, false),
            Some(record(5, "pgcache_other")),
            "another slot's starting point"
        );
    }

    #[test]
    fn a_named_source_keeps_its_position_under_its_own_key() {
        assert_eq!(position_key(None), "pgcache:replication:position");
        assert_eq!(
            position_key(Some("analytics")),
            "pgcache:@analytics:replication:position"
        );
    }

    #[test]
    fn anything_else_is_no_record() {
        for text in ["", "0/1", "0/1 7301", "x 1 s", "0/1 7301 s extra", "0/1  s"] {
            assert_eq!(Record::parse(text), None, "{text:?}");
        }
    }
}
