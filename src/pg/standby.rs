//! Hot standbys of a source's PostgreSQL (issue #53, design/53 §3): the `standbys` setting
//! lists them, and a prober thread per source asks each, every `PROBE_EVERY`, whether it is
//! still a standby (`pg_is_in_recovery()`) and how far it has replayed the log
//! (`pg_last_wal_replay_lsn()`), on a connection of its own. HEALTH shows what it saw. A
//! standby that cannot be reached is `failing`, one that is no longer in recovery (promoted,
//! or a primary listed by mistake) is `refused`: neither may answer a miss.
//!
//! Each standby has a pool of its own, with a circuit of its own: a standby down is no outage
//! of the source.
//!
//! A miss goes to a standby (`pick`) that is serving and either was last seen past the
//! position the miss needs (`cache::applied::needed`) or has not fallen short of one since
//! it was last seen caught up: under steady writes that position moves every few
//! milliseconds, further than a probe every 100 ms keeps up with, while a streaming standby
//! replays a commit long before the cache has applied it, so waiting to have seen it there
//! left a quarter of the misses on the primary (BENCHMARKS.md section 19). The workers read
//! the miss on that standby after a check of how far it replayed, on the same session
//! (`CHECK_SQL`, first in the read's pipeline): replay never moves back within a session,
//! and each statement after the check takes a newer snapshot, so a check that passed makes
//! the answer as exact as the primary's. A check short of it, or any failure there, sends
//! the read to the primary (`Chosen::rerouted`), and a standby found short is left out
//! until it is seen past the position it fell short of, or for `SHORT_FOR`.
//!
//! A position means something only in one history of the log: the standby must be of the
//! source's PostgreSQL (its system identifier, asked once per probe connection) and on the
//! timeline the change feed streams (asked by every probe and every check). After a
//! failover, a standby that went on replaying the old primary's log past the fork has
//! positions beyond the cache's without the new primary's commits; one that follows the new
//! primary serves again once its control file says the new timeline (PostgreSQL tells an
//! unprivileged session a standby's timeline only from there: its last restartpoint's, or
//! the minimum recovery point's, whichever is newer). The check is one-sided: a standby
//! already replaying the new timeline while its control file still says the old one, and
//! the change feed still streams the old primary (a split brain, or before its connection
//! is found dead), passes it.

use crate::config::{PgSettings, Settings, StandbyAddress};
use crate::error::Error;
use crate::model::lsn::Lsn;
use crate::model::source::{PartRef, Parts, SourceId};
use crate::pg::pool::{Connection, Pool};
use crate::stats;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often each standby is asked.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long a standby a check found short is left out unless seen past that position
/// sooner: under steady writes a streaming standby trails the cache by a commit or two now
/// and then, and leaving it out until the next probe sent a fifth of the misses to the
/// primary (BENCHMARKS.md section 19).
const SHORT_FOR: Duration = Duration::from_millis(10);
/// A probe's connect, and each exchange, are given up after this long: a standby that is
/// slow to answer is left out as one that fails.
const PATIENCE: Duration = Duration::from_secs(1);
const APPLICATION_NAME: &str = "pgcache-standby";

/// How far the standby a read goes to replayed, asked first on the read's own session.
/// NULL once it is no longer in recovery: a promoted standby keeps answering the position it
/// last replayed, which would pass.
pub const CHECK_SQL: &str = "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() \
     THEN pg_catalog.pg_last_wal_replay_lsn()::text || ' ' || \
     GREATEST((SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()), \
              (SELECT min_recovery_end_timeline FROM pg_catalog.pg_control_recovery()))::text \
     END";

/// The longest a miss waits for a connection to a standby: past it, the primary reads it
/// (a standby that hangs on connect must not take the client's whole request time).
const CONNECT_BUDGET: Duration = Duration::from_millis(200);

/// Until when a read on a standby waits for a connection, for a client awaited until
/// `deadline`.
pub fn connect_deadline(deadline: Instant) -> Instant {
    deadline.min(Instant::now() + CONNECT_BUDGET)
}

/// What the last probe of a standby found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not probed yet.
    Starting,
    /// In recovery, replaying the log up to `Seen::replay_lsn`.
    Serving,
    /// Could not be asked (connect refused, timed out, the session lost).
    Failing,
    /// Answers, but is no standby: not in recovery.
    Refused,
    /// Serving, but the check before a miss found it short of the position the cache
    /// needed, and it has not been seen past it since: misses go to the primary until it is
    /// (or, under steady writes, `SHORT_FOR` passes and a miss tries it again).
    Lagging,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Serving => "serving",
            State::Failing => "failing",
            State::Refused => "refused",
            State::Lagging => "lagging",
        }
    }
}

/// One standby as the prober last saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `host:port`.
    pub address: String,
    pub state: State,
    /// The position it had replayed at the last probe that answered.
    pub replay_lsn: Option<Lsn>,
    /// Why it is not serving, when it is not.
    pub why: Option<String>,
    /// Misses it answered.
    pub misses: u64,
    /// Misses sent to it that the primary answered instead (its check fell short, or it
    /// failed).
    pub rerouted: u64,
}

struct Standby {
    pool: Pool,
    seen: Mutex<Seen>,
    /// Serving at the last probe, and no miss failed on it since.
    serving: AtomicBool,
    /// How far it replayed, as the last probe or check saw (a hint for `pick`: the check
    /// before each read is what makes an answer exact).
    replayed: AtomicU64,
    /// The position a check last found it short of, until it is seen past it (0: none).
    short_of: AtomicU64,
    /// When it was found short (`since_start`'s microseconds).
    short_at: AtomicU64,
    misses: AtomicU64,
    rerouted: AtomicU64,
}

/// A source's standbys and their prober.
pub struct Part {
    standbys: Mutex<Vec<Arc<Standby>>>,
    /// The source's PostgreSQL's system identifier, once its feed has asked (`primary_is`).
    primary_system: Mutex<Option<String>>,
    /// The timeline its feed streams (0: not known yet).
    primary_timeline: AtomicU32,
    /// How many are listed: none, and a miss asks nothing more.
    listed: AtomicUsize,
    /// Where `pick`'s round goes on from.
    next: AtomicUsize,
    stop: AtomicBool,
    prober: Mutex<Option<JoinHandle<()>>>,
}

impl Part {
    const fn new() -> Part {
        Part {
            standbys: Mutex::new(Vec::new()),
            primary_system: Mutex::new(None),
            primary_timeline: AtomicU32::new(0),
            listed: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            prober: Mutex::new(None),
        }
    }
}

/// How far the server behind `conn` replayed the log (`CHECK_SQL`; None: it is not in
/// recovery), asked on the session the read that follows goes out on: a worker's
/// connection retries only its first exchange after idling, so that read cannot move to
/// another session.
pub fn replayed(conn: &mut Connection) -> Result<Option<String>, Error> {
    let rows = (conn.query(CHECK_SQL, &[]))
        .map_err(|e| Error::postgres(crate::pg::errors::describe(&e)).caused_by(e))?;
    Ok(rows.first().and_then(|row| row.get(0)))
}

/// What `CHECK_SQL` found on a standby: how far it replayed, on which timeline.
#[derive(Debug, PartialEq, Eq)]
struct Replayed {
    lsn: Lsn,
    timeline: u32,
}

impl Replayed {
    /// `CHECK_SQL`'s text, `<lsn> <timeline>`.
    fn parse(text: &str) -> Option<Replayed> {
        let (lsn, timeline) = text.split_once(' ')?;
        Some(Replayed {
            lsn: Lsn::parse(lsn).ok()?,
            timeline: timeline.parse().ok()?,
        })
    }
}

/// A standby chosen for a miss: its pool lends the connection the read goes out on.
pub struct Chosen {
    source: SourceId,
    standby: Arc<Standby>,
}

impl Chosen {
    pub fn pool(&self) -> &Pool {
        &self.standby.pool
    }

    /// What the check before the read found (`CHECK_SQL`'s value; None: no longer in
    /// recovery): whether the standby replayed `needed` on the feed's timeline, so that the
    /// read after it may answer.
    pub fn checked(&self, replayed: Option<&str>, needed: Lsn) -> bool {
        let timeline = of(self.source).primary_timeline.load(Ordering::SeqCst);
        match replayed.and_then(Replayed::parse) {
            Some(replayed) if replayed.timeline != timeline => {
                // Another history of the log: left out until a probe finds it on the feed's.
                self.standby.serving.store(false, Ordering::SeqCst);
                false
            }
            Some(Replayed { lsn, .. }) => {
                self.standby.seen_at(lsn);
                if lsn < needed {
                    self.standby.short_of.fetch_max(needed.0, Ordering::SeqCst);
                    (self.standby.short_at).store(since_start(), Ordering::SeqCst);
                }
                lsn >= needed
            }
            // Promoted, or not a standby: left out until a probe says otherwise.
            _ => {
                self.standby.serving.store(false, Ordering::SeqCst);
                false
            }
        }
    }

    /// The standby answered `misses` misses.
    pub fn answered(&self, misses: usize) {
        self.standby
            .misses
            .fetch_add(misses as u64, Ordering::Relaxed);
        stats::of(self.source).misses_on_standbys.add(misses as u64);
    }

    /// The primary answers `misses` misses instead; `failed`: the standby failed them (it
    /// is left out until a probe finds it serving again).
    pub fn rerouted(&self, misses: usize, failed: bool) {
        if failed {
            self.standby.serving.store(false, Ordering::SeqCst);
        }
        self.standby
            .rerouted
            .fetch_add(misses as u64, Ordering::Relaxed);
        stats::of(self.source).standby_rerouted.add(misses as u64);
    }
}

/// Whether a standby of `source` may take a miss that needs `needed` (None: the miss may
/// only go to the primary). Cheap where none is listed.
pub fn could_take(source: SourceId, needed: Option<Lsn>) -> bool {
    let Some(needed) = needed else {
        return false;
    };
    let part = of(source);
    part.listed.load(Ordering::Relaxed) > 0
        && (part.standbys.lock().unwrap().iter()).any(|standby| standby.takes(needed))
}

/// The standby of `source` a miss that needs `needed` goes to: the next in turn of those
/// serving that were seen past it or have not fallen short since they were seen caught up.
pub fn pick(source: SourceId, needed: Option<Lsn>) -> Option<Chosen> {
    let needed = needed?;
    let part = of(source);
    if part.listed.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let standbys = part.standbys.lock().unwrap();
    let start = part.next.fetch_add(1, Ordering::Relaxed);
    (0..standbys.len())
        .map(|i| &standbys[(start + i) % standbys.len()])
        .find(|standby| standby.takes(needed))
        .map(|standby| Chosen {
            source,
            standby: Arc::clone(standby),
        })
}

impl Standby {
    fn takes(&self, needed: Lsn) -> bool {
        self.serving.load(Ordering::SeqCst)
            && (self.short_of.load(Ordering::SeqCst) == 0
                || self.replayed.load(Ordering::SeqCst) >= needed.0
                || since_start().saturating_sub(self.short_at.load(Ordering::SeqCst))
                    >= SHORT_FOR.as_micros() as u64)
    }

    /// A probe or check found it replayed up to `lsn`: past what it fell short of, it
    /// takes misses again.
    fn seen_at(&self, lsn: Lsn) {
        self.replayed.store(lsn.0, Ordering::SeqCst);
        let short_of = self.short_of.load(Ordering::SeqCst);
        if short_of != 0 && lsn.0 >= short_of {
            let _ =
                (self.short_of).compare_exchange(short_of, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

static STANDBYS: Parts<Part> = Parts::new(Part::new());

fn of(source: SourceId) -> PartRef<'static, Part> {
    STANDBYS.of(source)
}

/// Installs named source `id`'s part (`source::parts`).
pub fn add_part(id: SourceId) {
    STANDBYS.install(id, Part::new());
}

/// Drops named source `id`'s part (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    STANDBYS.forget_named(id);
}

/// The connection settings of standby `address` of a source configured by `settings`: the
/// source's, another host and port.
fn settings_of(settings: &Settings, (host, port): &StandbyAddress) -> PgSettings {
    let mut pg = settings.pg.clone();
    pg.host = host.clone();
    pg.port = port.unwrap_or(settings.pg.port);
    pg
}

/// Starts watching the standbys `settings` lists for `source` (none: nothing starts).
pub fn start(source: SourceId, settings: &Settings) -> Result<(), Error> {
    let part = of(source);
    let mut standbys = Vec::new();
    for address in &settings.standbys {
        let pg = settings_of(settings, address);
        let shown = format!("{}:{}", pg.host, pg.port);
        standbys.push(Arc::new(Standby {
            pool: Pool::apart(source, pg, settings.pool_size)?,
            seen: Mutex::new(Seen {
                address: shown,
                state: State::Starting,
                replay_lsn: None,
                why: None,
                misses: 0,
                rerouted: 0,
            }),
            serving: AtomicBool::new(false),
            replayed: AtomicU64::new(0),
            short_of: AtomicU64::new(0),
            short_at: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rerouted: AtomicU64::new(0),
        }));
    }
    part.listed.store(standbys.len(), Ordering::SeqCst);
    *part.standbys.lock().unwrap() = standbys.clone();
    part.stop.store(false, Ordering::SeqCst);
    if standbys.is_empty() {
        return Ok(());
    }
    let thread = std::thread::Builder::new()
        .name("pgcache-standby".into())
        .spawn(move || probe_all(source, &standbys))
        .map_err(|e| Error::internal(format!("cannot start the standby prober: {e}")))?;
    *part.prober.lock().unwrap() = Some(thread);
    Ok(())
}

/// Stops the prober of `source`, its thread handed to `end` (to wait for it, at most a
/// probe's patience, or leave it to end on its own), and forgets its standbys.
pub fn stop(source: SourceId, end: &dyn Fn(JoinHandle<()>)) {
    let part = of(source);
    part.stop.store(true, Ordering::SeqCst);
    if let Some(thread) = part.prober.lock().unwrap().take() {
        end(thread);
    }
    part.listed.store(0, Ordering::SeqCst);
    part.standbys.lock().unwrap().clear();
}

/// What the prober last saw of each standby of `source`, in the order listed; a serving
/// one a check found short of a position, not seen past it since, is `Lagging`.
pub fn seen(source: SourceId) -> Vec<Seen> {
    (of(source).standbys.lock().unwrap().iter())
        .map(|standby| {
            let mut seen = Seen {
                misses: standby.misses.load(Ordering::Relaxed),
                rerouted: standby.rerouted.load(Ordering::Relaxed),
                ..standby.seen.lock().unwrap().clone()
            };
            let short_of = standby.short_of.load(Ordering::SeqCst);
            if seen.state == State::Serving && short_of != 0 {
                seen.state = State::Lagging;
                seen.why = Some(format!(
                    "replayed to {}, short of {} the cache needed for a miss",
                    Lsn(standby.replayed.load(Ordering::SeqCst)),
                    Lsn(short_of)
                ));
            }
            seen
        })
        .collect()
}

/// The source's PostgreSQL's system identifier and the timeline its feed streams (the
/// replication feed's IDENTIFY_SYSTEM), which every standby's must equal: a standby of
/// another PostgreSQL would answer misses with another database's rows, and one on another
/// timeline with another history of the log, however far it replayed. Called on the feed's
/// thread at each connection.
pub fn primary_is(source: SourceId, system: &str, timeline: u32) {
    let part = of(source);
    // Both under the identifier's lock: a probe reads them together.
    let mut ours = part.primary_system.lock().unwrap();
    part.primary_timeline.store(timeline, Ordering::SeqCst);
    *ours = Some(system.to_string());
}

/// Whether a standby whose system identifier is `theirs`, replaying timeline `timeline`,
/// may serve `source`; why not.
fn same_history(source: SourceId, theirs: &str, timeline: u32) -> Result<(), (State, String)> {
    let part = of(source);
    let system = part.primary_system.lock().unwrap();
    let ours = part.primary_timeline.load(Ordering::SeqCst);
    match system.as_deref() {
        None => Err((
            State::Starting,
            "the source's system identifier is not known yet (its change feed has not \
             connected)"
                .to_string(),
        )),
        Some(ours) if ours != theirs => Err((
            State::Refused,
            format!(
                "a standby of another PostgreSQL: its system identifier is {theirs}, the \
                 source's {ours}"
            ),
        )),
        Some(_) if timeline != ours => Err((
            State::Refused,
            format!(
                "on timeline {timeline}, the source's change feed on {ours}: a standby that \
                 did not follow a failover, or (after one) has had no restartpoint on the new \
                 timeline yet"
            ),
        )),
        Some(_) => Ok(()),
    }
}

fn probe_all(source: SourceId, standbys: &[Arc<Standby>]) {
    let mut connections: Vec<Option<(Connection, String)>> =
        standbys.iter().map(|_| None).collect();
    while !of(source).stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        for (standby, connection) in standbys.iter().zip(connections.iter_mut()) {
            let probed = probe(standby, connection).map(|(in_recovery, replay, timeline)| {
                let system = &connection.as_ref().expect("probed on it").1;
                (in_recovery, replay, same_history(source, system, timeline))
            });
            let (state, replay, why) = match probed {
                Ok((true, replay, Ok(()))) => (State::Serving, replay, None),
                Ok((true, replay, Err((state, why)))) => (state, replay, Some(why)),
                Ok((false, _, _)) => (
                    State::Refused,
                    None,
                    Some("not in recovery: promoted, or not a standby".to_string()),
                ),
                Err(why) => {
                    *connection = None;
                    (State::Failing, None, Some(why))
                }
            };
            let mut seen = standby.seen.lock().unwrap();
            // A standby that fails keeps the position it was last seen at; one that is no
            // standby has none.
            if replay.is_some() || state == State::Refused {
                seen.replay_lsn = replay;
            }
            if let Some(lsn) = replay {
                standby.seen_at(lsn);
            }
            (standby.serving).store(state == State::Serving, Ordering::SeqCst);
            seen.state = state;
            seen.why = why;
        }
        pause_until(source, started + PROBE_EVERY);
    }
}

/// Asks one standby whether it is in recovery, how far it replayed and on which timeline;
/// on a new connection, first its system identifier (kept with the connection).
fn probe(
    standby: &Standby,
    connection: &mut Option<(Connection, String)>,
) -> Result<(bool, Option<Lsn>, u32), String> {
    if connection.is_none() {
        let mut fresh = (standby.pool)
            .connect_dedicated(PATIENCE, APPLICATION_NAME)
            .map_err(|e| e.message().to_string())?;
        fresh.set_patience(PATIENCE);
        let rows = fresh
            .query(
                "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
                &[],
            )
            .map_err(|e| e.to_string())?;
        let system: String = rows.first().ok_or("the standby answered no row")?.get(0);
        *connection = Some((fresh, system));
    }
    let conn = &mut connection.as_mut().expect("just connected").0;
    let rows = conn
        .query(
            "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_wal_replay_lsn()::text, \
             GREATEST((SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()), \
                      (SELECT min_recovery_end_timeline FROM pg_catalog.pg_control_recovery()))",
            &[],
        )
        .map_err(|e| e.to_string())?;
    let row = rows.first().ok_or("the standby answered no row")?;
    let in_recovery: bool = row.get(0);
    let replay: Option<String> = row.get(1);
    let timeline: i32 = row.get(2);
    Ok((
        in_recovery,
        replay.and_then(|text| Lsn::parse(&text).ok()),
        timeline as u32,
    ))
}

/// Microseconds since this module first asked: a time an atomic holds.
fn since_start() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Sleeps until `until`, waking early when asked to stop.
fn pause_until(source: SourceId, until: Instant) {
    while !of(source).stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(10)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_reads_the_position_and_the_timeline() {
        assert_eq!(
            Replayed::parse("0/3000148 2"),
            Some(Replayed {
                lsn: Lsn::parse("0/3000148").unwrap(),
                timeline: 2
            })
        );
        for refused in ["0/3000148", "0/3000148 x", "nonsense 1", ""] {
            assert_eq!(Replayed::parse(refused), None, "{refused:?}");
        }
    }
}
