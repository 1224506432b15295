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

use crate::cache;
use crate::model::lsn::Lsn;
use crate::redis::{cluster, keyspace};
use redis_module::{CallOptionsBuilder, CallResult, Context};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the position lives (in DB 0). Not under the cache prefix, so flushes pass it by. On
/// a cluster node, in a slot the node serves: the key is tagged for its lowest slot, which a
/// promoted replica serves too (a resharding that moves that slot away loses the position:
/// the source then starts over with a flush).
pub const POSITION_KEY: &str = "pgcache:replication:position";

/// The position key's name on this server; None on a cluster node that serves no slot.
fn key_name(ctx: &Context) -> Option<String> {
    if !cluster::enabled() {
        return Some(POSITION_KEY.to_string());
    }
    let slot = cluster::lowest_served_slot(ctx)?;
    Some(format!("{POSITION_KEY}:{{{}}}", cluster::tag_for(slot)))
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
}

static STATE: Mutex<State> = Mutex::new(State {
    applied: None,
    stored: None,
});
/// Tells the cache how far it reflects the log (`cache::applied`, which `AFTER` reads).
fn publish(applied: &Option<Record>) {
    cache::applied::set(applied.as_ref().map_or(Lsn(0), |r| r.lsn));
}

/// How long the last transaction applied took from its commit in PostgreSQL to its
/// invalidations applied here, in microseconds.
static LAST_LAG_US: AtomicU64 = AtomicU64::new(0);

pub fn record_lag(lag: std::time::Duration) {
    LAST_LAG_US.store(lag.as_micros() as u64, Ordering::Relaxed);
}

pub fn last_lag() -> std::time::Duration {
    std::time::Duration::from_micros(LAST_LAG_US.load(Ordering::Relaxed))
}

/// The position applied (0/0 when none): every change committed up to it is applied.
#[inline]
pub fn applied_lsn() -> Lsn {
    cache::applied::get()
}

/// Reads the position key (after a load from disk, at start, after a promotion). Main thread.
pub fn load(ctx: &Context) -> Option<Record> {
    let mut record = None;
    let name = key_name(ctx);
    keyspace::in_each_db(ctx, [0], |_| {
        let Some(name) = &name else { return };
        record = keyspace::with_name(ctx, name.as_bytes(), |key| {
            keyspace::read_string(ctx, key, |value| {
                Record::parse(std::str::from_utf8(value).unwrap_or(""))
            })
        })
        .flatten();
    });
    let mut state = STATE.lock().unwrap();
    state.applied = record.clone();
    state.stored = record.clone();
    publish(&state.applied);
    record
}

/// The source starts consuming `record`'s slot at its position (a new slot's first position,
/// or the slot's own after a gap nothing could cover). Any thread.
pub fn restart_at(record: Record) {
    let mut state = STATE.lock().unwrap();
    state.applied = Some(record);
    publish(&state.applied);
}

/// Everything committed up to `lsn` is applied. Main thread.
pub fn applied_up_to(lsn: Lsn) {
    let mut state = STATE.lock().unwrap();
    if let Some(applied) = &mut state.applied
        && lsn > applied.lsn
    {
        applied.lsn = lsn;
        publish(&state.applied);
    }
}

/// Writes the applied position into the keyspace if it moved (replicated like any write).
/// Main thread, on a primary.
pub fn store(ctx: &Context) {
    let record = {
        let state = STATE.lock().unwrap();
        match &state.applied {
            Some(applied) if state.stored.as_ref() != Some(applied) => applied.clone(),
            _ => return,
        }
    };
    let options = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    let Some(name) = key_name(ctx) else {
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
        STATE.lock().unwrap().stored = Some(record);
    }
}

/// The position applied, if the source has one.
pub fn applied() -> Option<Record> {
    STATE.lock().unwrap().applied.clone()
}

/// The position the keyspace holds: how far the slot may be confirmed.
pub fn stored() -> Option<Record> {
    STATE.lock().unwrap().stored.clone()
}

/// At unload.
pub fn forget() {
    let mut state = STATE.lock().unwrap();
    state.applied = None;
    state.stored = None;
    publish(&None);
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

    #[test]
    fn anything_else_is_no_record() {
        for text in ["", "0/1", "0/1 7301", "x 1 s", "0/1 7301 s extra", "0/1  s"] {
            assert_eq!(Record::parse(text), None, "{text:?}");
        }
    }
}
