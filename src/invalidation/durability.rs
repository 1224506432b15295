//! How far the position the keyspace holds would survive this server: the slot is confirmed
//! only up to it, so that a server restarted from its RDB or AOF, or a replica promoted in
//! its place, finds a position the slot can still resume from, and flushes nothing.
//!
//! What survives depends on how the server persists (`redis::persistence`): with an AOF, a
//! write once the AOF is synced; with RDB snapshots only, what the last successful snapshot
//! holds; with neither, everything (a restart starts empty). With online replicas, also
//! only what every one of them has acknowledged. The server is looked at from the main
//! thread every `OBSERVE_EVERY` while the source streams (`request`).

use super::position::Record;
use crate::redis::main_thread::Task;
use crate::redis::persistence::{self, Disk, Persistence};
use crate::redis::role::writable;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the replication thread asks for a look at the server.
pub const OBSERVE_EVERY: Duration = Duration::from_millis(100);

/// How long a look is kept: past the longest AOF sync delay.
const KEPT: Duration = Duration::from_secs(40);

/// One look at the server: the position the keyspace held, and the replication offset the
/// next look found (every write made before this look is at or before it; a write of this
/// very timer callback reaches the replication stream only when the callback ends).
struct Sample {
    at: Instant,
    stored: Option<Record>,
    offset_after: Option<i64>,
}

pub struct Durability {
    samples: VecDeque<Sample>,
    /// What the data held when it was loaded (from disk, or from a primary): durable.
    floor: Option<Record>,
    /// RDB: the position held at the last look that found no snapshot being written; a
    /// snapshot that ends later was forked after it, so holds at least that.
    idle_stored: Option<Record>,
    /// RDB: when the last successful save ended, as last seen.
    last_save: Option<i64>,
    /// RDB: at least what the last successful snapshot holds.
    snapshot: Option<Record>,
    durable: Option<Record>,
}

impl Durability {
    const fn new() -> Durability {
        Durability {
            samples: VecDeque::new(),
            floor: None,
            idle_stored: None,
            last_save: None,
            snapshot: None,
            durable: None,
        }
    }

    /// Starts over from data that holds `record` (loaded, or none).
    fn reset(&mut self, record: Option<Record>) {
        *self = Durability::new();
        self.floor = record.clone();
        self.snapshot = record.clone();
        self.durable = record;
    }

    /// Takes a look at the server (`server`, with the keyspace holding `stored`) and returns
    /// what survives it now.
    fn observe(
        &mut self,
        now: Instant,
        stored: Option<Record>,
        server: &Persistence,
    ) -> Option<Record> {
        if let Some(last) = self.samples.back_mut() {
            last.offset_after = Some(server.stream_offset);
        }
        let disk = match server.disk {
            Disk::Nothing => stored.clone(),
            Disk::Aof { sync_delay } => self.newest(|s| now.duration_since(s.at) >= sync_delay),
            Disk::Rdb {
                saving,
                last_save,
                last_ok,
            } => {
                if self.last_save.is_some_and(|seen| seen != last_save)
                    && last_ok
                    && self.idle_stored.is_some()
                {
                    self.snapshot = self.idle_stored.clone();
                }
                self.last_save = Some(last_save);
                if !saving {
                    self.idle_stored = stored.clone();
                }
                self.snapshot.clone()
            }
        };
        let replicated = match server.replicas_acked {
            None => stored.clone(),
            Some(acked) => self.newest(|s| s.offset_after.is_some_and(|o| o <= acked)),
        };
        self.samples.push_back(Sample {
            at: now,
            stored,
            offset_after: None,
        });
        // Keep the newest look older than `KEPT`: it may still be the one that qualifies.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].at) > KEPT {
            self.samples.pop_front();
        }
        self.durable = lower(disk, replicated);
        self.durable.clone()
    }

    /// The position of the newest earlier look that `qualifies`, else the floor.
    fn newest(&self, qualifies: impl Fn(&Sample) -> bool) -> Option<Record> {
        self.samples
            .iter()
            .rev()
            .find(|s| qualifies(s))
            .map_or_else(|| self.floor.clone(), |s| s.stored.clone())
    }
}

/// The earlier of two positions of one slot; none when either is none or they are of
/// different slots (a slot started over: only its own positions count).
fn lower(a: Option<Record>, b: Option<Record>) -> Option<Record> {
    match (a, b) {
        (Some(a), Some(b)) if a.system == b.system && a.slot == b.slot => {
            Some(if a.lsn <= b.lsn { a } else { b })
        }
        _ => None,
    }
}

/// What of one feed's stored position would survive this server, as last looked at.
pub struct Kept {
    durability: Mutex<Durability>,
    /// Its stream asked for a look at the server (`request`), which `OBSERVE` takes.
    requested: AtomicBool,
}

impl Kept {
    /// Nothing loaded, nothing looked at (const, so a `static` holds the default feed's).
    pub const fn new() -> Kept {
        Kept {
            durability: Mutex::new(Durability::new()),
            requested: AtomicBool::new(false),
        }
    }

    /// Takes a look at the server, the keyspace holding `stored`.
    fn observe(&self, stored: Option<Record>, server: &Persistence) {
        self.durability
            .lock()
            .unwrap()
            .observe(Instant::now(), stored, server);
    }

    /// The data holds `record` now, as loaded (or nothing, at unload).
    pub fn loaded(&self, record: Option<Record>) {
        self.durability.lock().unwrap().reset(record);
    }

    /// The position this server would still hold after a crash or a failover.
    pub fn durable(&self) -> Option<Record> {
        self.durability.lock().unwrap().durable.clone()
    }
}

/// Looks at the server for each feed whose stream asked (one look serves them all).
static OBSERVE: Task = Task::new("observing what the server keeps", |ctx| {
    let mut server = None;
    super::each(|feed| {
        if !feed.durability.requested.swap(false, Ordering::SeqCst) {
            return;
        }
        if writable(ctx) {
            feed.position.store_now(ctx);
        }
        let server = server.get_or_insert_with(|| persistence::read(ctx));
        feed.durability.observe(feed.position.stored(), server);
    });
    false
});

/// Asks the main thread to look at the server for the feed that keeps `kept`. Any thread.
pub fn request(kept: &Kept) {
    kept.requested.store(true, Ordering::SeqCst);
    OBSERVE.request_from_thread();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lsn::Lsn;

    fn at(lsn: u64) -> Option<Record> {
        Some(Record {
            lsn: Lsn(lsn),
            system: "7301".into(),
            slot: "pgcache".into(),
        })
    }

    fn server(disk: Disk, stream_offset: i64, replicas_acked: Option<i64>) -> Persistence {
        Persistence {
            disk,
            stream_offset,
            replicas_acked,
        }
    }

    fn rdb(saving: bool, last_save: i64) -> Disk {
        Disk::Rdb {
            saving,
            last_save,
            last_ok: true,
        }
    }

    #[test]
    fn without_persistence_or_replicas_what_is_stored_survives() {
        let mut d = Durability::new();
        let now = Instant::now();
        assert_eq!(
            d.observe(now, at(10), &server(Disk::Nothing, 0, None)),
            at(10)
        );
    }

    #[test]
    fn an_aof_holds_a_position_once_synced() {
        let mut d = Durability::new();
        d.reset(at(5));
        let t0 = Instant::now();
        let everysec = Disk::Aof {
            sync_delay: Duration::from_secs(2),
        };
        assert_eq!(
            d.observe(t0, at(10), &server(everysec.clone(), 0, None)),
            at(5)
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            d.observe(t1, at(20), &server(everysec.clone(), 0, None)),
            at(5)
        );
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(d.observe(t2, at(30), &server(everysec, 0, None)), at(10));
        let always = Disk::Aof {
            sync_delay: Duration::ZERO,
        };
        // Synced at once, but only once written: from the previous look on.
        let t3 = t2 + OBSERVE_EVERY;
        assert_eq!(d.observe(t3, at(40), &server(always, 0, None)), at(30));
    }

    #[test]
    fn rdb_snapshots_hold_what_was_stored_before_they_were_forked() {
        let mut d = Durability::new();
        d.reset(at(5));
        let t = Instant::now();
        assert_eq!(
            d.observe(t, at(10), &server(rdb(false, 100), 0, None)),
            at(5)
        );
        // A snapshot forked after that look: it holds at least 10, not the 20 stored since.
        assert_eq!(
            d.observe(t, at(20), &server(rdb(true, 100), 0, None)),
            at(5)
        );
        assert_eq!(
            d.observe(t, at(30), &server(rdb(true, 100), 0, None)),
            at(5)
        );
        assert_eq!(
            d.observe(t, at(40), &server(rdb(false, 107), 0, None)),
            at(10)
        );
        // A save that started and ended between two looks holds the earlier look's.
        assert_eq!(
            d.observe(t, at(50), &server(rdb(false, 109), 0, None)),
            at(40)
        );
        // A failed save holds nothing new.
        let failed = Disk::Rdb {
            saving: false,
            last_save: 110,
            last_ok: false,
        };
        assert_eq!(d.observe(t, at(60), &server(failed, 0, None)), at(40));
    }

    #[test]
    fn replicas_hold_what_they_have_acknowledged() {
        let mut d = Durability::new();
        d.reset(at(5));
        let t = Instant::now();
        assert_eq!(
            d.observe(t, at(10), &server(Disk::Nothing, 100, Some(100))),
            at(5)
        );
        // The write of 10 is at or before offset 150 (the next look's).
        assert_eq!(
            d.observe(t, at(20), &server(Disk::Nothing, 150, Some(120))),
            at(5)
        );
        assert_eq!(
            d.observe(t, at(30), &server(Disk::Nothing, 200, Some(150))),
            at(10)
        );
        assert_eq!(
            d.observe(t, at(40), &server(Disk::Nothing, 250, None)),
            at(40)
        );
    }

    #[test]
    fn the_lower_of_disk_and_replicas_counts_and_other_slots_never() {
        assert_eq!(lower(at(3), at(7)), at(3));
        assert_eq!(lower(at(7), None), None);
        let mut other = at(1);
        other.as_mut().unwrap().slot = "pgcache_2".into();
        assert_eq!(lower(at(7), other), None);
    }
}
