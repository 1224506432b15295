//! The circuit to PostgreSQL: once a connect fails or PostgreSQL stops answering, it is
//! *open* and requests that need PostgreSQL fail at once, saying since when and why, instead
//! of each waiting for its own timeout. Meanwhile PostgreSQL is checked by the freshness
//! prober (`invalidation::horizon`, one probe at a time, backing off up to a second with
//! jitter) and by the requests themselves: one request at a time is let through as the check,
//! `CHECK_EVERY` after the last failed (`admit`; issue #70 item 6: a restart of PostgreSQL cost up
//! to the prober's second of refused misses after PostgreSQL accepted connections again).
//! The first success of either (any new session's) closes the circuit. While it is open, hits may be served
//! past `max_staleness_ms` within `stale_if_error_ms` (`cache::freshness`): PostgreSQL cannot
//! answer them anyway.
//!
//! One circuit per source (`of`): a source's circuit hears only of its own database, so a
//! healthy source's answers never keep a frozen one's closed, nor does one's outage refuse
//! another's misses (design/53 §1.2). A session reports to the circuit of the pool or
//! opener that made it.

use crate::model::source::{PartRef, Parts, SourceId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Every source's circuit; the default source's inline, so a stale hit reads it as it read
/// the statics before.
static CIRCUITS: Parts<Circuit> = Parts::new(Circuit::new());

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    CIRCUITS.install(id, Circuit::new());
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    CIRCUITS.forget_named(id);
}

/// Runs `f` on every installed source's circuit, with its source.
pub fn each(f: impl FnMut(SourceId, &Circuit)) {
    CIRCUITS.each(f);
}

/// The circuit of source `id`.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, Circuit> {
    CIRCUITS.of(id)
}

/// The circuit to one source's PostgreSQL.
pub struct Circuit {
    open: AtomicBool,
    outage: Mutex<Option<Outage>>,
    /// How many outages there have been: a session opened before the last one began may be
    /// dead or silent, and is not lent out again (`pool`).
    outages: AtomicU64,
    /// How many times PostgreSQL was found answering (`succeeded`): a failure seen before
    /// the last of them is no news (`pool`'s fast failure after a slow connect).
    successes: AtomicU64,
    /// Stale hits were announced in this outage (`first_stale_hit`).
    stale_announced: AtomicBool,
    /// A stale hit of this outage waits to be announced (`take_stale_announcement`).
    stale_to_announce: AtomicBool,
    /// When PostgreSQL was last checked in this outage (a failure reported, or a request let
    /// through as the check), in microseconds since `EPOCH`.
    last_check_us: AtomicU64,
    /// From when a request may be let through as the next check (`admit`): `CHECK_EVERY`
    /// after a failure, `CHECK_PATIENCE` after a check began (one check at a time: a frozen
    /// PostgreSQL holds its connect for pg_connect_timeout_ms, and nobody else waits meanwhile).
    next_check_us: AtomicU64,
    /// When PostgreSQL last answered anything on any of the source's connections, in
    /// microseconds since `EPOCH`: a connection that goes silent while others are answered
    /// is a slow or stuck session, not an outage (a busy server may keep one query waiting;
    /// a frozen one answers nobody).
    last_answer_us: AtomicU64,
}

/// What is known of an outage under way.
#[derive(Debug, Clone)]
pub struct Outage {
    /// When the first failure of this outage happened.
    pub since: SystemTime,
    /// What the last one was.
    pub reason: String,
}

/// How old the last check of an open circuit's PostgreSQL must be for a request to be let
/// through as the next check (`Circuit::admit`): PostgreSQL back is found within this, and
/// a database that stays down gets one connect attempt per this from all requests together.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The longest a request let through as a circuit's check is waited for before another
/// may go (`Circuit::admit`): one that reports neither success nor failure (a hit after all)
/// must not end the checks; the prober's go on regardless.
pub const CHECK_PATIENCE: Duration = Duration::from_secs(30);

/// The moment answers are timed from, one for the server (only differences are compared).
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn since_epoch_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

impl Circuit {
    /// Closed, no outage yet (const, so a `static` holds the default source's).
    pub const fn new() -> Circuit {
        Circuit {
            open: AtomicBool::new(false),
            outage: Mutex::new(None),
            outages: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            stale_announced: AtomicBool::new(false),
            stale_to_announce: AtomicBool::new(false),
            last_check_us: AtomicU64::new(0),
            next_check_us: AtomicU64::new(0),
            last_answer_us: AtomicU64::new(0),
        }
    }

    /// Whether PostgreSQL is known to be unreachable now.
    #[inline]
    pub fn open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// The outage under way, if any.
    pub fn outage(&self) -> Option<Outage> {
        self.outage.lock().unwrap().clone()
    }

    /// PostgreSQL could not be reached (`reason`: a refused or timed-out connect, a silent
    /// connection): the circuit opens (logged), or stays open with the new failure. Whether
    /// it opened now.
    pub fn failed(&self, reason: &str) -> bool {
        let opened = self.open_with(reason);
        if opened {
            redis_module::logging::log_warning(format!(
                "pgcache: PostgreSQL cannot be reached ({reason}): requests that need it fail \
                 at once until it answers again, and hits are served within stale_if_error_ms"
            ));
        }
        opened
    }

    fn open_with(&self, reason: &str) -> bool {
        let now = SystemTime::now();
        let mut outage = self.outage.lock().unwrap();
        let opened = outage.is_none();
        let since = outage.as_ref().map_or(now, |o| o.since);
        *outage = Some(Outage {
            since,
            reason: reason.to_string(),
        });
        if opened {
            self.outages.fetch_add(1, Ordering::SeqCst);
            self.stale_announced.store(false, Ordering::SeqCst);
        }
        let now = since_epoch_us();
        self.last_check_us.store(now, Ordering::SeqCst);
        self.next_check_us
            .store(now + CHECK_EVERY.as_micros() as u64, Ordering::SeqCst);
        self.open.store(true, Ordering::SeqCst);
        opened
    }

    /// Whether a request that needs PostgreSQL goes to it now: Ok while the circuit is closed,
    /// and during an outage for the first request once the last failure is `CHECK_EVERY` old
    /// and no check is under way (that request is the check: a connect that succeeds closes
    /// the circuit, one that fails keeps it open). Every other request gets the refusal at
    /// once. One check at a time, the next `CHECK_EVERY` after the last failed, however many
    /// requests come.
    pub fn admit(&self) -> Result<(), String> {
        if !self.open() {
            return Ok(());
        }
        self.admit_at(since_epoch_us())
    }

    /// `admit` of an open circuit at `now` (µs since `EPOCH`).
    fn admit_at(&self, now: u64) -> Result<(), String> {
        let next = self.next_check_us.load(Ordering::SeqCst);
        let until = now + CHECK_PATIENCE.as_micros() as u64;
        if now >= next
            && self
                .next_check_us
                .compare_exchange(next, until, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.last_check_us.store(now, Ordering::SeqCst);
            return Ok(());
        }
        self.refusal().map_or(Ok(()), Err)
    }

    /// PostgreSQL answered an exchange (a row, an error of its own, a notification, a
    /// message of the replication stream). Any thread.
    #[inline]
    pub fn answered(&self) {
        self.last_answer_us
            .store(since_epoch_us(), Ordering::Relaxed);
    }

    /// A connection got no answer for `limit`: the circuit opens only when no connection
    /// got one for as long (see `last_answer_us`). Whether it opened now.
    pub fn went_silent(&self, reason: &str, limit: Duration) -> bool {
        self.nothing_answered_for(limit) && self.failed(reason)
    }

    fn nothing_answered_for(&self, limit: Duration) -> bool {
        let last = self.last_answer_us.load(Ordering::Relaxed);
        let silent_us = since_epoch_us().saturating_sub(last);
        silent_us >= limit.as_micros() as u64
    }

    /// How many times PostgreSQL was found answering (see `successes`).
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::SeqCst)
    }

    /// The number of outages so far (see `outages`).
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::SeqCst)
    }

    /// PostgreSQL answered (a probe, or any new session): the circuit closes (logged).
    /// Whether it was open.
    pub fn succeeded(&self) -> bool {
        self.successes.fetch_add(1, Ordering::SeqCst);
        match self.close() {
            Some(outage) => {
                redis_module::logging::log_notice(format!(
                    "pgcache: PostgreSQL answers again after {:.1} s; misses go to it again",
                    outage.since.elapsed().unwrap_or_default().as_secs_f64()
                ));
                true
            }
            None => false,
        }
    }

    /// Forgets any outage (at unload: a module loaded again starts afresh).
    pub fn reset(&self) {
        self.close();
    }

    /// Closes the circuit; the outage it ends, if it was open.
    fn close(&self) -> Option<Outage> {
        if !self.open() {
            return None;
        }
        let ended = self.outage.lock().unwrap().take();
        self.open.store(false, Ordering::SeqCst);
        ended
    }

    /// Whether a hit served past its freshness bound is the first of this outage (to be
    /// announced once).
    pub fn first_stale_hit(&self) -> bool {
        let first = !self.stale_announced.swap(true, Ordering::SeqCst);
        if first {
            self.stale_to_announce.store(true, Ordering::SeqCst);
        }
        first
    }

    /// Whether a first stale hit waits to be announced; the announcer takes it.
    pub fn take_stale_announcement(&self) -> bool {
        self.stale_to_announce.swap(false, Ordering::SeqCst)
    }

    /// The error a request that needs PostgreSQL gets while the circuit is open.
    pub fn refusal(&self) -> Option<String> {
        if !self.open() {
            return None;
        }
        let outage = self.outage()?;
        let ago = |at: SystemTime| at.elapsed().unwrap_or_default().as_secs_f64();
        let checked = since_epoch_us().saturating_sub(self.last_check_us.load(Ordering::SeqCst));
        Some(format!(
            "PostgreSQL unavailable for {:.1} s (last checked {:.1} s ago: {}); pgcache checks \
             it again {} ms after each failed check and answers misses once it answers",
            ago(outage.since),
            Duration::from_micros(checked).as_secs_f64(),
            outage.reason,
            CHECK_EVERY.as_millis()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_opens_the_circuit_and_a_success_closes_it() {
        let circuit = Circuit::new();
        assert!(circuit.refusal().is_none());
        assert!(circuit.open_with("connection refused"));
        assert!(!circuit.open_with("timed out"), "already open");
        assert_eq!(circuit.outages(), 1, "one outage");
        assert!(
            circuit.first_stale_hit() && !circuit.first_stale_hit(),
            "announced once"
        );
        let refusal = circuit.refusal().unwrap();
        assert!(
            refusal.contains("PostgreSQL unavailable") && refusal.contains("timed out"),
            "{refusal}"
        );
        assert_eq!(circuit.admit(), Err(refusal), "checked just now: refused");
        assert!(circuit.close().is_some());
        assert!(!circuit.open() && circuit.outage().is_none() && circuit.close().is_none());
    }

    #[test]
    fn a_silent_connection_is_an_outage_only_when_nothing_else_was_answered() {
        let circuit = Circuit::new();
        circuit.answered();
        assert!(!circuit.nothing_answered_for(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(circuit.nothing_answered_for(Duration::from_millis(1)));
    }

    /// During an outage one request at a time goes to PostgreSQL as the check, the first once
    /// the last failure is `CHECK_EVERY` old; the others are refused.
    #[test]
    fn an_open_circuit_lets_one_request_through_as_its_check_after_the_last_failure() {
        let circuit = Circuit::new();
        assert_eq!(circuit.admit(), Ok(()), "closed");
        circuit.open_with("connection refused");
        assert!(circuit.admit().is_err(), "just checked");
        let failed = circuit.last_check_us.load(Ordering::SeqCst);
        let every = CHECK_EVERY.as_micros() as u64;
        let patience = CHECK_PATIENCE.as_micros() as u64;
        assert!(
            circuit.admit_at(failed + every - 1).is_err(),
            "not old enough"
        );
        let checking = failed + every;
        assert_eq!(circuit.admit_at(checking), Ok(()), "the check");
        assert!(
            circuit.admit_at(checking + 2 * every).is_err(),
            "one check at a time"
        );
        assert_eq!(
            circuit.admit_at(checking + patience),
            Ok(()),
            "a check that never reported is not waited for past CHECK_PATIENCE"
        );
    }

    /// Answers reported to one source's circuit never keep another's closed: a frozen
    /// database is an outage however busily another answers; and one circuit's outage
    /// leaves the other closed.
    #[test]
    fn circuit_silence_is_per_circuit() {
        let (answering, frozen) = (Circuit::new(), Circuit::new());
        answering.answered();
        std::thread::sleep(Duration::from_millis(5));
        answering.answered();
        assert!(!answering.nothing_answered_for(Duration::from_millis(1)));
        assert!(
            frozen.nothing_answered_for(Duration::from_millis(1)),
            "another circuit's answers kept this one from going silent"
        );
        assert!(frozen.open_with("PostgreSQL stopped answering"));
        assert!(frozen.open() && !answering.open());
        assert!(answering.refusal().is_none() && frozen.refusal().is_some());
        assert_eq!((answering.outages(), frozen.outages()), (0, 1));
    }
}
