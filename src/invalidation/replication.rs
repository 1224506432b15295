//! The replication source: invalidations from PostgreSQL's own log. A thread of its own holds
//! a replication connection, streams a logical slot with the built-in `pgoutput` plugin from
//! the publication's tables, gathers each transaction's changed keys until its commit and hands
//! them, in commit order and tagged with the commit's position, to `apply` (the same step the
//! NOTIFY listener feeds). Writers pay nothing: no trigger, no NOTIFY.
//!
//! Nothing is lost while nobody consumes: the slot keeps every change after the position it
//! was confirmed to, and that is never past the position the keyspace holds (`position`), so
//! after a reconnect, a PostgreSQL restart, a redis-server restart or a promotion the stream
//! resumes where the data's position says and no entry is dropped. Only a slot that is gone or
//! lost, or a position of another server, starts over with a flush.
//!
//! The slot keeps the log while pgcache is away; pgcache confirms its position also while
//! only other tables change (keepalives), so an idle pgcache holds back nothing. The thread
//! consumes only on a primary; a replica's entries are kept by its primary's deletions.

mod pace;
mod transaction;

use super::feed::replication::{Replication, Status};
use super::feed::{self, Feed};
use super::{changes, ddl, durability, listener, position, translate};
use crate::cache;
use crate::model::lsn::Lsn;
use crate::model::source::PartRef;
use crate::pg::pool::{Connection as Catalog, Pool};
use crate::pg::replication::connection::{Connection, Failure};
use crate::pg::replication::pgoutput::{self, Message, Relation};
use crate::pg::replication::slot;
use crate::pg::replication::stream::CopyData;
use crate::redis::main_thread::Task;
use crate::redis::role::writable;
use pace::Pace;
use position::Record;
use redis_module::Context;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use transaction::Transaction;

/// What the replication stream consumes (a slot source, not to be taken for the source:
/// the database the slot is in).
#[derive(Clone)]
pub struct SlotSource {
    /// The `replication_slot` setting; on a cluster node, the slot is named after it and
    /// the node (`slot`).
    pub base_slot: String,
    pub slot: String,
    pub publication: String,
    /// `invalidation_source auto`: the channel to LISTEN on instead when PostgreSQL does not
    /// allow logical replication.
    pub fallback_channel: Option<String>,
}

/// How often an unchanged position is confirmed again, and how soon a new one is.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
const STATUS_SOON: Duration = Duration::from_millis(20);
/// After this long without a message, PostgreSQL is asked to answer at once...
const LIVENESS_INTERVAL: Duration = Duration::from_secs(2);
/// ... and a connection that stays silent this long after the question is given up (a
/// network that drops packets without a reset), then resumed from the position stored.
const LIVENESS_PATIENCE: Duration = Duration::from_secs(3);
/// While catching up after a (re)connect, PostgreSQL is asked this often how far it is.
const CATCH_UP_PING: Duration = Duration::from_millis(100);
/// Longest wait for one message before the loop looks at its flags again.
const RECEIVE_WAIT: Duration = Duration::from_millis(50);
const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);
/// How often PostgreSQL is asked about the slot (log kept, `wal_status`) and the tables the
/// publication covers.
const SLOT_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Most deletions gathered from several transactions before they are handed over.
const HAND_OVER_KEYS: usize = 1_000;
const APPLICATION_NAME: &str = "pgcache-replication";
const CATALOG_APPLICATION_NAME: &str = "pgcache-replication-catalog";

/// Starts `feed`'s replication thread. Main thread, at load: the position the keyspace
/// holds now is read first (a load from disk that follows reads it again, see
/// `invalidation::data_loaded`).
pub fn start(
    ctx: &Context,
    feed: PartRef<'static, Feed>,
    pool: Arc<Pool>,
    source: SlotSource,
) -> std::io::Result<()> {
    let replication = &feed.replication;
    replication.stop.store(false, Ordering::SeqCst);
    replication.attempted.store(false, Ordering::SeqCst);
    replication.resume.store(false, Ordering::SeqCst);
    load_position(ctx, &feed);
    replication.primary.store(writable(ctx), Ordering::SeqCst);
    let mut source = source;
    if let Some(id) = crate::redis::cluster::my_id(ctx) {
        // One slot per shard: named after the node that made it, and kept by the replica
        // that replaces it (the position key names the slot it is a position of).
        source.slot = format!("{}_{}", source.base_slot, &id[..id.len().min(12)]);
    }
    replication
        .active
        .store(source.fallback_channel.is_none(), Ordering::SeqCst);
    replication.running.store(true, Ordering::SeqCst);
    *replication.status.lock().unwrap() = Status::new();
    let thread = feed.clone();
    let handle = std::thread::Builder::new()
        .name("pgcache-replication".into())
        .spawn(move || run(thread, pool, source))?;
    *replication.thread.lock().unwrap() = Some(handle);
    Ok(())
}

/// Stops `feed`'s thread, handed to `end` (to wait for it, or leave it to end on its own);
/// forgets its position.
pub fn stop(feed: &Feed, end: &dyn Fn(std::thread::JoinHandle<()>)) {
    let replication = &feed.replication;
    replication.stop.store(true, Ordering::SeqCst);
    if let Some(handle) = replication.thread.lock().unwrap().take() {
        end(handle);
    }
    replication.active.store(false, Ordering::SeqCst);
    replication.running.store(false, Ordering::SeqCst);
    replication.connected.store(false, Ordering::SeqCst);
    cache::applied::of(feed.source).track(false);
    feed.position.forget();
    feed.durability.loaded(None);
}

impl Replication {
    /// Waits (at most `limit`) for the first session to start streaming or fail, so that a
    /// server starting with PostgreSQL up caches from its first request on.
    pub fn wait_for_first_attempt(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.attempted.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The keyspace was loaded again or this server promoted (the position read by the
    /// caller): stream from there if this server is a primary.
    fn resume(&self, primary: bool) {
        self.primary.store(primary, Ordering::SeqCst);
        self.resume.store(true, Ordering::SeqCst);
    }

    /// This server became a replica: its primary consumes the slot now.
    pub fn demoted(&self) {
        self.primary.store(false, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps up to `total`, waking early when asked to stop or to resume.
    fn pause(&self, total: Duration) {
        let until = Instant::now() + total;
        while !self.stopping() && !self.resume.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads the position the keyspace holds after a load or a promotion, and resumes from it,
/// for each feed that asked (`load_position_soon`).
static LOAD_POSITION: Task = Task::new("reading the replication position", |ctx| {
    feed::each(|feed| {
        if feed
            .replication
            .load_requested
            .swap(false, Ordering::SeqCst)
        {
            load_position(ctx, feed);
            feed.replication.resume(writable(ctx));
        }
    });
    false
});

/// Reads the position the keyspace holds: what the data loaded vouches for, and so what
/// survives this server until it has kept more (`durability`). Main thread.
fn load_position(ctx: &Context, feed: &Feed) {
    feed.durability.loaded(feed.position.load(ctx));
}

/// Reads the position of `feed` once the event under way is over (a promoted cluster node
/// claims its slots after the promotion's event) and resumes from it. Main thread.
pub fn load_position_soon(feed: &Feed) {
    feed.replication
        .load_requested
        .store(true, Ordering::SeqCst);
    LOAD_POSITION.request();
}

/// How a session ended.
enum Ended {
    Stopped,
    /// Start again at once (a load moved the position, or this server stopped being a
    /// primary).
    Again,
    /// `auto`: PostgreSQL does not allow logical replication; NOTIFY it is.
    UseNotify(String),
    Lost(String),
}

fn run(feed: PartRef<'static, Feed>, pool: Arc<Pool>, source: SlotSource) {
    let replication = &feed.replication;
    let mut backoff = Duration::from_millis(100);
    while !replication.stopping() {
        if !replication.primary.load(Ordering::SeqCst) {
            replication.attempted.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        replication.resume.store(false, Ordering::SeqCst);
        let ended = session(&feed, &pool, &source);
        replication.connected.store(false, Ordering::SeqCst);
        cache::applied::of(feed.source).track(false);
        feed.apply.listener_disconnected();
        match ended {
            Ended::Stopped => break,
            Ended::Again => {}
            Ended::UseNotify(why) => {
                redis_module::logging::log_warning(format!(
                    "pgcache: {why}; invalidation_source auto uses NOTIFY instead (install the \
                     triggers with pgcache_watch); set wal_level = logical for the replication \
                     source, which costs writers nothing"
                ));
                replication.status.lock().unwrap().fell_back = Some(why);
                crate::config::current::of(feed.source).fell_back_to_notify(true);
                replication.running.store(false, Ordering::SeqCst);
                let channel = source.fallback_channel.clone().unwrap_or_default();
                if let Err(e) = listener::start(feed.clone(), pool.clone(), channel) {
                    redis_module::logging::log_warning(format!(
                        "pgcache: cannot start the invalidation listener: {e}"
                    ));
                }
                replication.attempted.store(true, Ordering::SeqCst);
                return;
            }
            Ended::Lost(why) => {
                replication.attempted.store(true, Ordering::SeqCst);
                let streamed = replication.status.lock().unwrap().problem.is_none();
                if streamed {
                    backoff = Duration::from_millis(100);
                    crate::stats::of(feed.source).listener_reconnects.inc();
                }
                redis_module::logging::log_warning(format!(
                    "pgcache: replication source: {why}; retrying in {} ms",
                    backoff.as_millis()
                ));
                let mut status = replication.status.lock().unwrap();
                status.last_loss = Some((SystemTime::now(), why.clone()));
                status.problem = Some(why);
                drop(status);
                replication.pause(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Connects, finds or makes the publication and slot, decides where to start, and streams.
fn session(feed: &Feed, pool: &Arc<Pool>, source: &SlotSource) -> Ended {
    let mut replication = match pool.connect_replication(APPLICATION_NAME) {
        Ok(connection) => connection,
        // 42501: the role may not replicate; 28000: pg_hba.conf has no entry for it.
        Err(e)
            if source.fallback_channel.is_some() && matches!(e.code(), Some("42501" | "28000")) =>
        {
            return Ended::UseNotify(format!("PostgreSQL refuses a replication connection ({e})"));
        }
        Err(e) => return Ended::Lost(format!("cannot connect: {e}")),
    };
    let slot = slot_name(feed, source);
    let prepared = match prepare(feed, &mut replication, source, &slot) {
        Ok(prepared) => prepared,
        Err(Prepare::UseNotify(why)) if source.fallback_channel.is_some() => {
            return Ended::UseNotify(why);
        }
        Err(Prepare::UseNotify(why) | Prepare::Failed(why)) => return Ended::Lost(why),
    };
    feed.replication.active.store(true, Ordering::SeqCst);
    let command = format!(
        "START_REPLICATION SLOT {slot} LOGICAL {} (proto_version '1', publication_names \
         '{}', messages 'true')",
        prepared.start, source.publication
    );
    if let Err(e) = replication.start_streaming(&command, EXCHANGE_LIMIT) {
        return Ended::Lost(format!("cannot stream slot {slot}: {e}"));
    }
    feed.replication.connected.store(true, Ordering::SeqCst);
    // From here the main thread applies this log's changes, marking where each begins. The
    // stream starts at `prepared.start`: what committed before it is reflected (resumed) or
    // flushed (reset), never streamed, so a miss needs at least that much replayed, even
    // before the start's position is applied (after a reset, the `begun` of an earlier
    // session may lie before commits the stream will never bring).
    let applied = cache::applied::of(feed.source);
    applied.begin(prepared.start);
    applied.track(true);
    feed.replication.status.lock().unwrap().problem = None;
    match &prepared.reset {
        Some(why) => feed.apply.source_reset(why.clone()),
        None => feed.apply.source_resumed(),
    }
    if feed.position.stored().as_ref() != Some(&prepared.record) {
        // A new starting point is written at once, not at the first change after it.
        let mut start = changes::Changes::default();
        start.reach(prepared.start);
        feed.apply.submit(start);
    }
    feed.replication.attempted.store(true, Ordering::SeqCst);
    redis_module::logging::log_notice(format!(
        "pgcache: streaming invalidations from slot {} (publication {}) at {}",
        source.slot, source.publication, prepared.start
    ));
    Stream::new(feed, pool, &source.publication, replication, prepared).run()
}

/// Where a session starts.
struct Prepared {
    start: Lsn,
    record: Record,
    /// Why the entries cannot be vouched for (a flush), if they cannot.
    reset: Option<String>,
    /// Where PostgreSQL's log ended when the session started: caught up once applied to there.
    target: Lsn,
}

enum Prepare {
    UseNotify(String),
    Failed(String),
}

fn query(replication: &mut Connection, sql: &str) -> Result<Vec<Vec<Option<String>>>, Prepare> {
    replication
        .query(sql, EXCHANGE_LIMIT)
        .map_err(|e| Prepare::Failed(format!("{sql:?} failed: {e}")))
}

fn single(rows: &[Vec<Option<String>>], column: usize) -> Option<&str> {
    rows.first()?.get(column)?.as_deref()
}

fn lsn_of(text: Option<&str>, what: &str) -> Result<Lsn, Prepare> {
    text.and_then(|t| Lsn::parse(t).ok())
        .ok_or_else(|| Prepare::Failed(format!("PostgreSQL sent no valid {what}")))
}

/// The slot to consume: the one the position the keyspace holds names (a promoted replica
/// continues its primary's), else this node's own.
fn slot_name(feed: &Feed, source: &SlotSource) -> String {
    match feed.position.stored() {
        Some(r)
            if r.slot == source.base_slot
                || r.slot.starts_with(&format!("{}_", source.base_slot)) =>
        {
            r.slot
        }
        _ => source.slot.clone(),
    }
}

fn prepare(
    feed: &Feed,
    replication: &mut Connection,
    source: &SlotSource,
    slot_name: &str,
) -> Result<Prepared, Prepare> {
    let rows = query(replication, "SHOW wal_level")?;
    let wal_level = single(&rows, 0).unwrap_or_default().to_string();
    if wal_level != "logical" {
        return Err(Prepare::UseNotify(format!(
            "PostgreSQL's wal_level is {wal_level}, not logical (set wal_level = logical and \
             restart PostgreSQL; on managed services see docs/invalidation.md)"
        )));
    }
    let identity = query(replication, "IDENTIFY_SYSTEM")?;
    let system = single(&identity, 0).unwrap_or_default().to_string();
    let timeline = single(&identity, 1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    crate::pg::standby::primary_is(feed.source, &system, timeline);
    // Where the log's inserts are now, not where it is flushed (IDENTIFY_SYSTEM's): with
    // synchronous_commit off a commit may be inserted and not yet flushed, and caught up
    // means past it.
    let inserted = query(
        replication,
        "SELECT pg_catalog.pg_current_wal_insert_lsn()::text",
    )?;
    let target = lsn_of(single(&inserted, 0), "log position")?;
    let publication_exists = !query(
        replication,
        &format!(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = '{}'",
            source.publication
        ),
    )?
    .is_empty();
    if !publication_exists {
        // An empty publication: pgcache_watch() adds tables to it.
        query(
            replication,
            &format!("CREATE PUBLICATION {}", source.publication),
        )
        .map_err(|_| {
            Prepare::Failed(format!(
                "publication {} does not exist and this role may not create it: create it \
                 (CREATE PUBLICATION {}) or run pgcache_watch('<table>') as its owner",
                source.publication, source.publication
            ))
        })?;
    }
    let slot_sql = format!(
        "SELECT confirmed_flush_lsn, wal_status, plugin, database = current_database(), \
         active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = '{}'",
        slot_name
    );
    let mut slot = query(replication, &slot_sql)?;
    if let Some(pid) = slot.first().and_then(|row| row.get(4)).cloned().flatten() {
        slot = take_over(replication, &slot_sql, &pid)?;
    }
    let stored = feed.position.stored();
    // Entries no position vouches for (present at load, or loaded without a position).
    let unvouched = || {
        feed.apply
            .untrusted_entries()
            .then(|| "because the cached rows came without a position to resume from".to_string())
    };
    let mut reset = None;
    let start = match slot.first() {
        Some(row)
            if row.get(2).and_then(Option::as_deref) != Some("pgoutput")
                || row.get(3).and_then(Option::as_deref) != Some("t") =>
        {
            return Err(Prepare::Failed(format!(
                "replication slot {} exists but is not a pgoutput slot of this database: \
                 choose another replication_slot",
                slot_name
            )));
        }
        Some(row) if row.get(1).and_then(Option::as_deref) == Some("lost") => {
            query(replication, &format!("DROP_REPLICATION_SLOT {}", slot_name))?;
            reset = Some(format!(
                "because replication slot {} lost log it still needed (max_slot_wal_keep_size)",
                slot_name
            ));
            create_slot(replication, slot_name)?
        }
        Some(row) => {
            let confirmed = lsn_of(row.first().and_then(Option::as_deref), "slot position")?;
            match &stored {
                Some(r) if r.system != system || r.slot != slot_name => {
                    reset = Some(
                        "because the position this server holds is of another PostgreSQL or \
                         slot"
                            .into(),
                    );
                    confirmed
                }
                Some(r) if r.lsn < confirmed => {
                    reset = Some(format!(
                        "because slot {} was confirmed past the position this server's data \
                         reflects ({} < {confirmed})",
                        slot_name, r.lsn
                    ));
                    confirmed
                }
                Some(r) => r.lsn,
                None => {
                    reset = unvouched();
                    confirmed
                }
            }
        }
        None => {
            reset = match &stored {
                Some(_) => Some(format!(
                    "because replication slot {} is gone (dropped, or PostgreSQL failed over)",
                    slot_name
                )),
                None => unvouched(),
            };
            create_slot(replication, slot_name)?
        }
    };
    let record = Record {
        lsn: start,
        system,
        slot: slot_name.to_string(),
    };
    if stored.as_ref() != Some(&record) {
        feed.position.restart_at(record.clone());
    }
    Ok(Prepared {
        start,
        record,
        reset,
        target,
    })
}

/// The slot is still streamed by another session: this server's own, which a silent network
/// cut off without PostgreSQL noticing yet (it would wait `wal_sender_timeout`), or the one
/// of the primary this server replaced. The slot is this server's now: that session is
/// ended, and the slot read again once it is free.
fn take_over(
    replication: &mut Connection,
    slot_sql: &str,
    pid: &str,
) -> Result<Vec<Vec<Option<String>>>, Prepare> {
    let pid: i32 = pid
        .parse()
        .map_err(|_| Prepare::Failed(format!("PostgreSQL sent an invalid process id {pid:?}")))?;
    redis_module::logging::log_notice(format!(
        "pgcache: replication slot is in use by process {pid}; ending that session to take \
         the slot over"
    ));
    query(
        replication,
        &format!("SELECT pg_catalog.pg_terminate_backend({pid})"),
    )?;
    let deadline = Instant::now() + EXCHANGE_LIMIT;
    loop {
        let slot = query(replication, slot_sql)?;
        if slot
            .first()
            .and_then(|row| row.get(4))
            .cloned()
            .flatten()
            .is_none()
        {
            return Ok(slot);
        }
        if Instant::now() >= deadline {
            return Err(Prepare::Failed(format!(
                "replication slot is still in use by process {pid}, which could not be ended"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn create_slot(replication: &mut Connection, slot: &str) -> Result<Lsn, Prepare> {
    let rows = query(
        replication,
        &format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput NOEXPORT_SNAPSHOT"),
    )?;
    lsn_of(single(&rows, 1), "slot position")
}

/// One streaming session.
struct Stream<'a> {
    feed: &'a Feed,
    pool: &'a Arc<Pool>,
    publication: String,
    replication: Connection,
    /// A regular connection, for the catalog (tables' keys) and spelling key values.
    catalog: Option<Catalog>,
    record: Record,
    target: Lsn,
    caught_up: bool,
    relations: HashMap<u32, Relation>,
    open: Option<Transaction>,
    /// The highest position handed to `apply` (or gathered in `pending` for it).
    submitted: Lsn,
    /// Committed transactions read in one go, handed to `apply` together once no whole
    /// message is left to read (one wake-up of the main thread for many commits).
    pending: Option<changes::Changes>,
    pace: Pace,
    last_received: Instant,
    asked: Option<Instant>,
    confirmed: Option<Lsn>,
    last_status: Instant,
    /// When the main thread was last asked to look at what the server keeps.
    last_observed: Option<Instant>,
    /// None: not yet checked in this session.
    last_slot_check: Option<Instant>,
}

impl<'a> Stream<'a> {
    fn new(
        feed: &'a Feed,
        pool: &'a Arc<Pool>,
        publication: &str,
        replication: Connection,
        prepared: Prepared,
    ) -> Stream<'a> {
        Stream {
            feed,
            pool,
            publication: publication.to_string(),
            replication,
            catalog: None,
            submitted: prepared.start,
            pending: None,
            pace: Pace::default(),
            record: prepared.record,
            target: prepared.target,
            caught_up: false,
            relations: HashMap::new(),
            open: None,
            last_received: Instant::now(),
            asked: None,
            confirmed: None,
            last_status: Instant::now(),
            last_observed: None,
            last_slot_check: None,
        }
    }

    fn run(mut self) -> Ended {
        loop {
            let replication = &self.feed.replication;
            if replication.stopping() {
                return Ended::Stopped;
            }
            if replication.resume.load(Ordering::SeqCst)
                || !replication.primary.load(Ordering::SeqCst)
            {
                return Ended::Again;
            }
            if let Err(why) = self.step() {
                return Ended::Lost(why);
            }
        }
    }

    fn step(&mut self) -> Result<(), String> {
        // Messages already read are handled back to back; the rest waits until none is.
        let buffered = self.replication.buffered().map_err(|e| e.to_string())?;
        let message = match buffered {
            Some(message) => message,
            None => {
                if self.hand_over() && self.pace.busy() {
                    // A steady stream of small transactions: waking for each costs more
                    // than handling it, so a few are let arrive before the next read.
                    std::thread::sleep(pace::COALESCE);
                }
                self.check_caught_up();
                self.report()?;
                if self
                    .last_slot_check
                    .is_none_or(|at| at.elapsed() >= SLOT_CHECK_INTERVAL)
                {
                    self.check_slot()?;
                }
                let received = self.replication.receive(RECEIVE_WAIT);
                let Some(message) = received.map_err(|e| e.to_string())? else {
                    return Ok(());
                };
                message
            }
        };
        self.last_received = Instant::now();
        self.asked = None;
        match message {
            CopyData::XLogData { data, .. } => {
                let message = pgoutput::decode(&data).map_err(|e| e.to_string())?;
                self.handle(message)
            }
            CopyData::Keepalive {
                wal_end,
                reply_requested,
            } => {
                // Everything before `wal_end` has been sent: between transactions, the
                // position moves there even when no change concerned a published table.
                if self.open.is_none() && wal_end > self.submitted {
                    let mut changes = changes::Changes::default();
                    changes.reach(wal_end);
                    self.gather(changes);
                    self.submitted = wal_end;
                }
                if reply_requested {
                    self.send_status(false)?;
                }
                Ok(())
            }
        }
    }

    /// Asks PostgreSQL about the slot and the publication's tables; warns (once) when the
    /// slot's log is no longer guaranteed, and names each served table the publication does
    /// not cover.
    fn check_slot(&mut self) -> Result<(), String> {
        self.last_slot_check = Some(Instant::now());
        let served = crate::pg::schema::of(self.feed.source).served_tables();
        let (slot, publication) = (self.record.slot.clone(), self.publication.clone());
        let catalog = self.catalog()?;
        let state = match slot::inspect(catalog, &slot, &publication, &served) {
            Ok(state) => state,
            Err(e) => {
                self.catalog = None;
                return Err(format!(
                    "cannot read the slot's state: {}",
                    crate::pg::errors::describe(&e)
                ));
            }
        };
        let replication = &self.feed.replication;
        let mut status = replication.status.lock().unwrap();
        let was = status.slot.as_ref().map(|s| s.wal_status.clone());
        if let Some(state) = &state {
            if state.wal_status == "unreserved" && was.as_deref() != Some("unreserved") {
                redis_module::logging::log_warning(format!(
                    "pgcache: replication slot {slot} keeps more log than max_wal_size and \
                     max_slot_wal_keep_size guarantee (wal_status unreserved): PostgreSQL may \
                     give it up, and pgcache would then start over with a flush"
                ));
            }
            if !state.ddl_followed && !replication.ddl_advised.swap(true, Ordering::Relaxed) {
                redis_module::logging::log_notice(
                    "pgcache: DDL is not followed: pgcache's event trigger (pgcache_ddl) is not \
                     installed; run examples/ddl_trigger.sql as a superuser. Until then views, \
                     functions, partitioned tables and parents are answered by PostgreSQL, \
                     uncached, and PGCACHE.FLUSH <table> is needed after DDL that changes a \
                     plain table's rows",
                );
            }
            let mut warned = replication.unpublished_warned.lock().unwrap();
            for (table, _) in &state.unpublished {
                if warned.insert(table.display()) {
                    redis_module::logging::log_warning(format!(
                        "pgcache: table {} is served but publication {publication} does not \
                         cover it: nothing invalidates its entries but their TTL (run SELECT \
                         pgcache_watch('{}'))",
                        table.display(),
                        table.display()
                    ));
                }
            }
        }
        status.slot = state;
        Ok(())
    }

    fn check_caught_up(&mut self) {
        if self.caught_up {
            return;
        }
        if self
            .feed
            .position
            .applied()
            .is_some_and(|applied| applied.lsn >= self.target)
        {
            self.caught_up = true;
            self.feed.apply.caught_up();
        }
    }

    /// Confirms the stored position when it moved (and every `STATUS_INTERVAL`), and asks
    /// a silent server to answer; a server silent past `LIVENESS_PATIENCE` is given up.
    fn report(&mut self) -> Result<(), String> {
        if self
            .last_observed
            .is_none_or(|at| at.elapsed() >= durability::OBSERVE_EVERY)
        {
            durability::request(&self.feed.durability);
            self.last_observed = Some(Instant::now());
        }
        let confirmable = self.confirmable();
        let since = self.last_status.elapsed();
        if (Some(confirmable) != self.confirmed && since >= STATUS_SOON) || since >= STATUS_INTERVAL
        {
            self.send_status(false)?;
        }
        let ping_every = if self.caught_up {
            LIVENESS_INTERVAL
        } else {
            CATCH_UP_PING
        };
        match self.asked {
            Some(at) if at.elapsed() >= LIVENESS_PATIENCE => {
                crate::stats::of(self.feed.source)
                    .pg_silent_connections
                    .inc();
                Err(format!(
                    "PostgreSQL did not answer within {} ms (the network may be dropping \
                     packets); the connection was given up",
                    LIVENESS_PATIENCE.as_millis()
                ))
            }
            None if self.last_received.elapsed() >= ping_every => {
                self.send_status(true)?;
                self.asked = Some(Instant::now());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The position the slot may be confirmed to: the one the keyspace holds, once a
    /// restart or a failover of this server would still find it there (`durability`).
    fn confirmable(&self) -> Lsn {
        match self.feed.durability.durable() {
            Some(durable)
                if durable.system == self.record.system && durable.slot == self.record.slot =>
            {
                durable.lsn.max(self.record.lsn)
            }
            _ => self.record.lsn,
        }
    }

    fn send_status(&mut self, reply: bool) -> Result<(), String> {
        let confirmable = self.confirmable();
        self.replication
            .send_status(confirmable, reply, EXCHANGE_LIMIT)
            .map_err(|e: Failure| e.to_string())?;
        self.confirmed = Some(confirmable);
        self.last_status = Instant::now();
        self.feed.replication.status.lock().unwrap().confirmed = Some(confirmable);
        Ok(())
    }

    fn handle(&mut self, message: Message) -> Result<(), String> {
        match message {
            Message::Begin { .. } => self.open = Some(Transaction::default()),
            Message::Relation(relation) => {
                self.relations.insert(relation.id, relation);
            }
            Message::Insert { relation, new } => {
                let relation = self.relation(relation)?;
                self.transaction().changed(&relation, &[&new], true);
                let source = self.feed.source;
                self.transaction()
                    .written(source, &relation, transaction::How::Inserted, &new);
            }
            Message::Update { relation, old, new } => {
                let relation = self.relation(relation)?;
                let rows: Vec<_> = old.iter().chain([&new]).collect();
                self.transaction().changed(&relation, &rows, false);
                let how = transaction::How::Updated { old: old.as_ref() };
                let source = self.feed.source;
                self.transaction().written(source, &relation, how, &new);
            }
            Message::Delete { relation, old } => {
                let relation = self.relation(relation)?;
                self.transaction().changed(&relation, &[&old], false);
            }
            Message::Truncate { relations } => {
                for id in relations {
                    let relation = self.relation(id)?;
                    self.transaction().flush(&relation);
                }
            }
            Message::Logical {
                transactional,
                prefix,
                content,
                ..
            } if prefix == ddl::MESSAGE_PREFIX => {
                let text = String::from_utf8_lossy(&content).into_owned();
                if transactional {
                    self.transaction().ddl.push(text);
                } else {
                    let mut alone = Transaction::default();
                    alone.ddl.push(text);
                    self.submit(alone, None)?;
                }
            }
            Message::Logical {
                transactional,
                prefix,
                content,
                ..
            } if prefix == FLUSH_PREFIX => {
                let table = String::from_utf8_lossy(&content).into_owned();
                if transactional {
                    self.transaction().flush_named(table);
                } else {
                    let mut flush = Transaction::default();
                    flush.flush_named(table);
                    self.submit(flush, None)?;
                }
            }
            Message::Commit {
                end_lsn,
                commit_time_us,
                ..
            } => {
                let transaction = self.open.take().unwrap_or_default();
                self.pace.committed(commit_time_us);
                self.submit(transaction, Some((end_lsn, postgres_time(commit_time_us))))?;
            }
            Message::Logical { .. } | Message::Other(_) => {}
        }
        Ok(())
    }

    fn relation(&self, id: u32) -> Result<Relation, String> {
        self.relations
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("PostgreSQL sent a change of relation {id} it never described"))
    }

    fn transaction(&mut self) -> &mut Transaction {
        self.open.get_or_insert_with(Transaction::default)
    }

    /// Hands a transaction's changes to the main thread, with the position they bring the
    /// cache to.
    fn submit(
        &mut self,
        mut transaction: Transaction,
        committed: Option<(Lsn, SystemTime)>,
    ) -> Result<(), String> {
        let mut changes = changes::Changes::default();
        for text in std::mem::take(&mut transaction.ddl) {
            match ddl::of(&text) {
                Some(Ok(ddl)) => ddl::add(self.feed.source, &mut changes, ddl),
                Some(Err(e)) => ddl::unreadable(self.feed.source, &mut changes, &e),
                None => ddl::unreadable(
                    self.feed.source,
                    &mut changes,
                    &crate::error::Error::invalid("not a DDL report"),
                ),
            }
        }
        let payloads = transaction.into_payloads();
        if !payloads.is_empty() {
            changes.arrived_at(Instant::now());
            let source = self.feed.source;
            let catalog = self.catalog()?;
            for payload in payloads {
                translate::add(
                    source,
                    catalog,
                    &mut changes,
                    payload,
                    "a replicated change",
                );
            }
            if catalog.is_closed() {
                self.catalog = None;
                return Err("the catalog connection broke".into());
            }
        }
        changes.collapse_bulk();
        if let Some((lsn, at)) = committed {
            changes.reach(lsn);
            changes.committed_at(at);
            self.submitted = self.submitted.max(lsn);
        }
        self.gather(changes);
        Ok(())
    }

    /// Adds a transaction's changes (or a position) to those handed over next; hands them
    /// over at once past `HAND_OVER_KEYS` deletions.
    fn gather(&mut self, changes: changes::Changes) {
        let pending = match self.pending.take() {
            Some(mut pending) => {
                pending.absorb(changes);
                pending
            }
            None => changes,
        };
        let full = pending.deletions() >= HAND_OVER_KEYS;
        self.pending = Some(pending);
        if full {
            self.hand_over();
        }
    }

    /// Hands the gathered changes to the main thread, in commit order; whether there were
    /// any.
    fn hand_over(&mut self) -> bool {
        let Some(pending) = self.pending.take() else {
            return false;
        };
        self.feed.apply.submit(pending);
        true
    }

    fn catalog(&mut self) -> Result<&mut Catalog, String> {
        if self.catalog.is_none() {
            let connection = self
                .pool
                .connect_dedicated(EXCHANGE_LIMIT, CATALOG_APPLICATION_NAME)
                .map_err(|e| e.message().to_string())?;
            self.catalog = Some(connection);
        }
        Ok(self.catalog.as_mut().expect("just connected"))
    }
}

/// A time PostgreSQL sends: microseconds since 2000-01-01.
fn postgres_time(us: i64) -> SystemTime {
    const POSTGRES_EPOCH_UNIX_SECONDS: u64 = 946_684_800;
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(POSTGRES_EPOCH_UNIX_SECONDS);
    if us >= 0 {
        epoch + Duration::from_micros(us as u64)
    } else {
        epoch - Duration::from_micros(us.unsigned_abs())
    }
}

/// The prefix of the logical message `pgcache_flush()` writes (its content: the table).
const FLUSH_PREFIX: &str = "pgcache.flush";
