//! Hot standbys of a source's PostgreSQL (issue #53, design/53 §3): the `standbys` setting
//! lists them, and a prober thread per source asks each, every `PROBE_EVERY`, whether it is
//! still a standby (`pg_is_in_recovery()`) and how far it has replayed the log
//! (`pg_last_wal_replay_lsn()`), on a connection of its own. HEALTH shows what it saw. A
//! standby that cannot be reached is `failing`, one that is no longer in recovery (promoted,
//! or a primary listed by mistake) is `refused`: neither may answer a miss.
//!
//! Each standby has a pool of its own, with a circuit of its own: a standby down is no outage
//! of the source.

use crate::config::{PgSettings, Settings, StandbyAddress};
use crate::error::Error;
use crate::model::lsn::Lsn;
use crate::model::source::{PartRef, Parts, SourceId};
use crate::pg::pool::{Connection, Pool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often each standby is asked.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// A probe's connect, and each exchange, are given up after this long: a standby that is
/// slow to answer is left out as one that fails.
const PATIENCE: Duration = Duration::from_secs(1);
const APPLICATION_NAME: &str = "pgcache-standby";

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
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Serving => "serving",
            State::Failing => "failing",
            State::Refused => "refused",
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
}

struct Standby {
    pool: Pool,
    seen: Mutex<Seen>,
}

/// A source's standbys and their prober.
pub struct Part {
    standbys: Mutex<Vec<Arc<Standby>>>,
    stop: AtomicBool,
    prober: Mutex<Option<JoinHandle<()>>>,
}

impl Part {
    const fn new() -> Part {
        Part {
            standbys: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            prober: Mutex::new(None),
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
            }),
        }));
    }
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
    part.standbys.lock().unwrap().clear();
}

/// What the prober last saw of each standby of `source`, in the order listed.
pub fn seen(source: SourceId) -> Vec<Seen> {
    (of(source).standbys.lock().unwrap().iter())
        .map(|standby| standby.seen.lock().unwrap().clone())
        .collect()
}

fn probe_all(source: SourceId, standbys: &[Arc<Standby>]) {
    let mut connections: Vec<Option<Connection>> = standbys.iter().map(|_| None).collect();
    while !of(source).stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        for (standby, connection) in standbys.iter().zip(connections.iter_mut()) {
            let (state, replay, why) = match probe(standby, connection) {
                Ok((true, replay)) => (State::Serving, replay, None),
                Ok((false, _)) => (
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
            seen.state = state;
            seen.why = why;
        }
        pause_until(source, started + PROBE_EVERY);
    }
}

/// Asks one standby whether it is in recovery, and how far it replayed.
fn probe(
    standby: &Standby,
    connection: &mut Option<Connection>,
) -> Result<(bool, Option<Lsn>), String> {
    if connection.is_none() {
        let mut fresh = (standby.pool)
            .connect_dedicated(PATIENCE, APPLICATION_NAME)
            .map_err(|e| e.message().to_string())?;
        fresh.set_patience(PATIENCE);
        *connection = Some(fresh);
    }
    let conn = connection.as_mut().expect("just connected");
    let rows = conn
        .query(
            "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_wal_replay_lsn()::text",
            &[],
        )
        .map_err(|e| e.to_string())?;
    let row = rows.first().ok_or("the standby answered no row")?;
    let in_recovery: bool = row.get(0);
    let replay: Option<String> = row.get(1);
    Ok((in_recovery, replay.and_then(|text| Lsn::parse(&text).ok())))
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
