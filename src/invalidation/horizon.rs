//! The freshness prober: a thread that moves the cache's freshness horizon
//! (`cache::freshness`) by asking PostgreSQL, every `PROBE_EVERY`, for a mark the change feed
//! must carry past, at a known moment:
//! - replication: the log's insert position, read on a connection of its own. Once the
//!   stream has applied the log through it, every transaction committed before the moment
//!   of the read has been applied. (A logical walsender's keepalive reports what it has
//!   *sent*, not the server's end of log: a stuck decoder would look caught up, so the mark
//!   must come from the server itself.) The insert position, not the flushed one: with
//!   `synchronous_commit = off` a commit is acknowledged before it is flushed.
//! - notify: a heartbeat notification on the invalidation channel. PostgreSQL delivers
//!   notifications in commit order, so once the listener's heartbeat has been applied, every
//!   notification of a transaction committed before it was sent has been too.
//!
//! A feed that stalls (a stopped walsender, a silenced listener, a decoder busy with a huge
//! transaction, PostgreSQL unreachable) reaches no mark: the horizon ages, and reads bounded
//! by `max_staleness_ms` are answered from PostgreSQL until it moves again.

use super::feed::prober::Prober;
use super::feed::{self, Feed};
use super::position;
use crate::cache::freshness::{self, Mark};
use crate::config::current;
use crate::model::lsn::Lsn;
use crate::model::source::SourceId;
use crate::pg::circuit;
use crate::pg::pool::{self, Connection, Pool};
use crate::redis::{clock, main_thread};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a mark is taken: a healthy feed keeps the horizon at most about this old (plus
/// the feed's lag), far below the default `max_staleness_ms`.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);
/// A probe unanswered this long gives its connection up (PostgreSQL frozen or cut off); the
/// horizon ages meanwhile, as it must.
const PATIENCE: Duration = Duration::from_secs(1);
/// Not longer than the pool's own connect timeout is ever waited (`pg_connect_timeout_ms`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const APPLICATION_NAME: &str = "pgcache-horizon";

impl Prober {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn log_failure(&self, why: &str) {
        let mut last = self.last_failure.lock().unwrap();
        if last.as_deref() != Some(why) {
            redis_module::logging::log_warning(format!(
                "pgcache: freshness probe failed ({why}); reads bounded by max_staleness_ms go \
                 to PostgreSQL until the change feed vouches for the cache again"
            ));
            *last = Some(why.to_string());
        }
    }
}

/// Starts the prober of `source`, on its pool; heartbeats (notify mode) go to `channel`.
pub fn start(source: SourceId, channel: String) -> std::io::Result<()> {
    let pool = pool::of(source).map_err(|e| std::io::Error::other(e.message().to_string()))?;
    let feed = feed::of(source);
    feed.prober.stop.store(false, Ordering::SeqCst);
    feed.heartbeats.draw(clock::now_us(), source);
    let thread = feed.clone();
    let handle = std::thread::Builder::new()
        .name("pgcache-horizon".into())
        .spawn(move || run(source, &thread, &pool, &channel))?;
    *feed.prober.thread.lock().unwrap() = Some(handle);
    Ok(())
}

/// Stops the prober of `source`, its thread handed to `end` (to wait for it, or leave it to
/// end on its own); nothing vouches for the cache afterwards, and no outage of the source is
/// known (a module loaded again starts afresh).
pub fn stop(source: SourceId, end: &dyn Fn(JoinHandle<()>)) {
    let prober = &feed::of(source).prober;
    prober.stop.store(true, Ordering::SeqCst);
    if let Some(handle) = prober.thread.lock().unwrap().take() {
        end(handle);
    }
    freshness::of(source).untrack();
    circuit::of(source).reset();
}

/// What a probe can take a mark from now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    Log,
    Notifications,
    /// A replica in replication mode: its primary applies the log, and its deletions reach
    /// this server through Redis replication, followed by the position key that covers
    /// them: a mark is reached once the replicated position passes it.
    Primary,
    /// Invalidation is off (`listen no`): entries live by their TTL alone.
    Off,
    /// Nothing connected yet, or a feed that cannot be probed: the horizon ages.
    Stalled,
}

/// The probe `feed` of `source` can take now.
fn probe(source: SourceId, feed: &Feed) -> Probe {
    let replication = &feed.replication;
    if !current::of(source).listening() {
        Probe::Off
    } else if replication.standing_by() {
        Probe::Primary
    } else if replication.active() {
        if replication.connected() {
            Probe::Log
        } else {
            Probe::Stalled
        }
    } else if feed.listener.connected() {
        Probe::Notifications
    } else {
        Probe::Stalled
    }
}

fn run(source: SourceId, feed: &Feed, pool: &Pool, channel: &str) {
    let circuit = circuit::of(source);
    let prober = &feed.prober;
    let mut connection: Option<Connection> = None;
    let mut heartbeat = 0u64;
    let mut failures = 0u32;
    while !prober.stopping() {
        let started = Instant::now();
        let probe = probe(source, feed);
        if probe == Probe::Off {
            freshness::of(source).untrack();
        } else {
            freshness::of(source).track();
        }
        let connection = &mut connection;
        let probed = match probe {
            Probe::Log => with_connection(prober, pool, connection, |c| probe_log(source, c)),
            Probe::Primary => with_connection(prober, pool, connection, |c| {
                probe_replicated(source, feed, c)
            }),
            Probe::Notifications => {
                heartbeat += 1;
                with_connection(prober, pool, connection, |c| {
                    probe_notifications(feed, c, channel, heartbeat)
                })
            }
            // Without a feed to probe, PostgreSQL is still checked while the feed is down
            // (the first sign of an outage) and during an outage (only a probe closes the
            // circuit).
            Probe::Off | Probe::Stalled if probe == Probe::Stalled || circuit.open() => {
                with_connection(prober, pool, connection, |c| {
                    c.batch_execute("SELECT 1").map_err(|e| e.to_string())
                })
            }
            Probe::Off | Probe::Stalled => Ok(()),
        };
        match probed {
            Ok(()) => {
                failures = 0;
                circuit.succeeded();
            }
            // A probe that failed opens the circuit only as the pool judges it (a refused or
            // timed-out connect; silence while no other connection is answered either): a
            // slow answer under load, or PostgreSQL's refusal of the probe's query, is no
            // outage.
            Err(why) => {
                failures = failures.saturating_add(1);
                prober.log_failure(&why);
            }
        }
        pause_until(source, feed, started + interval(failures), probe);
    }
    freshness::of(source).untrack();
}

/// How long after a probe the next one starts: `PROBE_EVERY`, and during an outage twice as
/// long after each failure up to `OUTAGE_PROBE_MAX`, less a random part of up to a fifth, so
/// that servers sharing one PostgreSQL do not probe it in step.
fn interval(failures: u32) -> Duration {
    if failures == 0 {
        return PROBE_EVERY;
    }
    let backoff = PROBE_EVERY
        .saturating_mul(1 << failures.min(8))
        .min(OUTAGE_PROBE_MAX);
    let jitter = clock::now_us() % (backoff.as_micros() as u64 / 5 + 1);
    backoff - Duration::from_micros(jitter)
}

/// The longest pause between two probes of an unreachable PostgreSQL.
const OUTAGE_PROBE_MAX: Duration = Duration::from_secs(1);

/// Runs `probe` on the prober's connection, connecting first if it has none; a connection
/// that fails is dropped and the probe tried once on a new one (PostgreSQL restarted: its
/// old sessions are gone, and that alone is no outage).
fn with_connection(
    prober: &Prober,
    pool: &Pool,
    connection: &mut Option<Connection>,
    mut probe: impl FnMut(&mut Connection) -> Result<(), String>,
) -> Result<(), String> {
    let had_one = connection.is_some();
    let result = try_on(prober, pool, connection, &mut probe);
    if result.is_err() && had_one {
        return try_on(prober, pool, connection, &mut probe);
    }
    result
}

fn try_on(
    prober: &Prober,
    pool: &Pool,
    connection: &mut Option<Connection>,
    probe: &mut impl FnMut(&mut Connection) -> Result<(), String>,
) -> Result<(), String> {
    if connection.is_none() {
        let mut fresh = pool
            .connect_dedicated(CONNECT_TIMEOUT, APPLICATION_NAME)
            .map_err(|e| e.message().to_string())?;
        fresh.set_patience(PATIENCE);
        *connection = Some(fresh);
    }
    let conn = connection.as_mut().expect("just connected");
    let result = probe(conn);
    if result.is_err() || conn.is_closed() {
        *connection = None;
    } else {
        *prober.last_failure.lock().unwrap() = None;
    }
    result
}

/// Takes the log's insert position as a mark; reached at once when the stream already
/// applied it (an idle database).
fn probe_log(source: SourceId, connection: &mut Connection) -> Result<(), String> {
    take_log_mark(source, connection)?;
    freshness::of(source).applied(Mark::Lsn(position::applied_lsn_of(source)));
    Ok(())
}

/// On a replica: takes the log's insert position as a mark, and looks at the position its
/// primary's replicated key holds (the primary writes it after the deletions it covers, at
/// least every 100 ms while it moves), which reaches the marks taken before.
fn probe_replicated(
    source: SourceId,
    feed: &Feed,
    connection: &mut Connection,
) -> Result<(), String> {
    take_log_mark(source, connection)?;
    let held = main_thread::ask(move |ctx| position::held(ctx, source), REPLICA_LOOK_LIMIT);
    if let Some(Some(record)) = held {
        freshness::of(source).applied(Mark::Lsn(record.lsn));
        if freshness::of(source).vouched_now(current::of(source).max_staleness_ms())
            && feed.replication.standing_by()
        {
            feed.apply.vouched_by_primary();
        }
    }
    Ok(())
}

/// How long a replica's probe waits for the main thread to read the position key.
const REPLICA_LOOK_LIMIT: Duration = Duration::from_millis(100);

/// Reads the log's insert position and registers it as a probe's mark, taken now.
fn take_log_mark(source: SourceId, connection: &mut Connection) -> Result<(), String> {
    let at_us = clock::now_us();
    let rows = connection
        .query("SELECT pg_catalog.pg_current_wal_insert_lsn()::text", &[])
        .map_err(|e| e.to_string())?;
    let text: Option<String> = rows.first().and_then(|row| row.get(0));
    let lsn = text
        .as_deref()
        .and_then(|t| Lsn::parse(t).ok())
        .ok_or("PostgreSQL sent no log position")?;
    freshness::of(source).probe_sent(Mark::Lsn(record_end(lsn)), at_us);
    Ok(())
}

/// The WAL page size PostgreSQL is built with almost always, and the sizes of a page's
/// header (the first page of a segment has the long one).
const WAL_PAGE: u64 = 8192;
const LONG_PAGE_HEADER: u64 = 40;

/// Where the last record ends, given the insert position: past a page boundary the insert
/// position points after the new page's header, while the stream's positions (a record's
/// end) stop at the boundary itself. No record ends inside a page header.
fn record_end(insert: Lsn) -> Lsn {
    let offset = insert.0 % WAL_PAGE;
    if offset > 0 && offset <= LONG_PAGE_HEADER {
        Lsn(insert.0 - offset)
    } else {
        insert
    }
}

/// Sends heartbeat `number` on the invalidation channel; reached when the listener's apply
/// of it comes through (`apply`). Registered before it is sent, since it may arrive first.
fn probe_notifications(
    feed: &Feed,
    connection: &mut Connection,
    channel: &str,
    number: u64,
) -> Result<(), String> {
    freshness::of(feed.source).probe_sent(Mark::Heartbeat(number), clock::now_us());
    let payload = feed.heartbeats.payload(number);
    connection
        .query("SELECT pg_catalog.pg_notify($1, $2)", &[&channel, &payload])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Waits until `until`, or until the probe taken last (`was`) changes: a feed that
/// connects is probed at once, so the cache is vouched for as soon as it can be.
fn pause_until(source: SourceId, feed: &Feed, until: Instant, was: Probe) {
    while !feed.prober.stopping() && probe(source, feed) == was {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(5)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_just_past_a_page_header_is_the_end_of_the_record_before_it() {
        assert_eq!(record_end(Lsn(0x016B_3748)), Lsn(0x016B_3748));
        assert_eq!(record_end(Lsn(3 * WAL_PAGE + 24)), Lsn(3 * WAL_PAGE));
        assert_eq!(
            record_end(Lsn(16 * 1024 * 1024 + 40)),
            Lsn(16 * 1024 * 1024)
        );
        assert_eq!(record_end(Lsn(3 * WAL_PAGE)), Lsn(3 * WAL_PAGE));
        assert_eq!(record_end(Lsn(3 * WAL_PAGE + 41)), Lsn(3 * WAL_PAGE + 41));
    }
}
