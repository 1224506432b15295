//! The state of a feed's replication stream: its thread's flags, and what HEALTH and INFO
//! say of it. The stream itself (the slot, the session, handing transactions over) is
//! `invalidation::replication`'s.

use crate::model::lsn::Lsn;
use crate::pg::replication::slot::SlotState;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::SystemTime;

/// One feed's replication stream: its thread, and what it tells the others.
pub struct Replication {
    pub(in crate::invalidation) stop: AtomicBool,
    /// The replication source is the one in use (decided; with `auto`, once PostgreSQL
    /// said).
    pub(in crate::invalidation) active: AtomicBool,
    /// The source runs (started, and `auto` has not chosen NOTIFY): on a replica, standing
    /// by.
    pub(in crate::invalidation) running: AtomicBool,
    /// This server is a primary: only a primary consumes the slot.
    pub(in crate::invalidation) primary: AtomicBool,
    /// The first session since `start` has started streaming, or failed.
    pub(in crate::invalidation) attempted: AtomicBool,
    /// Start the session again from the position the keyspace holds now (after a load).
    pub(in crate::invalidation) resume: AtomicBool,
    pub(in crate::invalidation) connected: AtomicBool,
    pub(in crate::invalidation) thread: Mutex<Option<JoinHandle<()>>>,
    pub(in crate::invalidation) status: Mutex<Status>,
    /// Tables already logged as served but not published: each is named once.
    pub(in crate::invalidation) unpublished_warned: Mutex<BTreeSet<String>>,
    /// The log said once that DDL is not followed.
    pub(in crate::invalidation) ddl_advised: AtomicBool,
    /// Read the position the keyspace holds and resume from it (`LOAD_POSITION`).
    pub(in crate::invalidation) load_requested: AtomicBool,
}

/// What HEALTH and INFO say about the source.
#[derive(Clone, Debug)]
pub struct Status {
    /// Why the source is not streaming, if it is not (and was asked to).
    pub problem: Option<String>,
    /// `auto` chose NOTIFY, and why.
    pub fell_back: Option<String>,
    /// Why the connection was last lost, and when.
    pub last_loss: Option<(SystemTime, String)>,
    /// The last position confirmed to PostgreSQL.
    pub confirmed: Option<Lsn>,
    /// What PostgreSQL last said about the slot (every `SLOT_CHECK_INTERVAL`).
    pub slot: Option<SlotState>,
}

impl Status {
    pub(in crate::invalidation) const fn new() -> Status {
        Status {
            problem: None,
            fell_back: None,
            last_loss: None,
            confirmed: None,
            slot: None,
        }
    }
}

impl Replication {
    /// Not started (const, so a `static` holds the default source's).
    pub const fn new() -> Replication {
        Replication {
            stop: AtomicBool::new(false),
            active: AtomicBool::new(false),
            running: AtomicBool::new(false),
            primary: AtomicBool::new(false),
            attempted: AtomicBool::new(false),
            resume: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            thread: Mutex::new(None),
            status: Mutex::new(Status::new()),
            unpublished_warned: Mutex::new(BTreeSet::new()),
            ddl_advised: AtomicBool::new(false),
            load_requested: AtomicBool::new(false),
        }
    }

    /// Whether the replication source is the one in use.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Whether the source runs, whether or not it has connected yet (`auto` included, until
    /// it chooses NOTIFY).
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// A replica's source stands by: its primary consumes the slot, and the primary's
    /// deletions reach this server's entries through Redis replication.
    pub fn standing_by(&self) -> bool {
        self.running() && !self.primary.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> Status {
        self.status.lock().unwrap().clone()
    }
}
