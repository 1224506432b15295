//! The circuit to PostgreSQL: once a connect fails or PostgreSQL stops answering, it is
//! *open* and requests that need PostgreSQL fail at once, saying since when and why, instead
//! of each waiting for its own timeout; meanwhile the freshness prober alone checks
//! PostgreSQL (`invalidation::horizon`, one probe at a time, backing off up to a second with
//! jitter), and its first success (or any new session's) closes the circuit. While it is open, hits may be served
//! past `max_staleness_ms` within `stale_if_error_ms` (`cache::freshness`): PostgreSQL cannot
//! answer them anyway.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

static OPEN: AtomicBool = AtomicBool::new(false);
static OUTAGE: Mutex<Option<Outage>> = Mutex::new(None);
/// How many outages there have been: a session opened before the last one began may be
/// dead or silent, and is not lent out again (`pool`).
static OUTAGES: AtomicU64 = AtomicU64::new(0);
/// Stale hits were announced in this outage (`first_stale_hit`).
static STALE_ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// What is known of an outage under way.
#[derive(Debug, Clone)]
pub struct Outage {
    /// When the first failure of this outage happened.
    pub since: SystemTime,
    /// When the last one did, and what it was.
    pub last_failure: SystemTime,
    pub reason: String,
}

/// Whether PostgreSQL is known to be unreachable now.
#[inline]
pub fn open() -> bool {
    OPEN.load(Ordering::Relaxed)
}

/// The outage under way, if any.
pub fn outage() -> Option<Outage> {
    OUTAGE.lock().unwrap().clone()
}

/// PostgreSQL could not be reached (`reason`: a refused or timed-out connect, a silent
/// connection): the circuit opens (logged), or stays open with the new failure. Whether it
/// opened now.
pub fn failed(reason: &str) -> bool {
    let opened = open_with(reason);
    if opened {
        redis_module::logging::log_warning(format!(
            "pgcache: PostgreSQL cannot be reached ({reason}): requests that need it fail at \
             once until it answers again, and hits are served within stale_if_error_ms"
        ));
    }
    opened
}

fn open_with(reason: &str) -> bool {
    let now = SystemTime::now();
    let mut outage = OUTAGE.lock().unwrap();
    let opened = outage.is_none();
    let since = outage.as_ref().map_or(now, |o| o.since);
    *outage = Some(Outage {
        since,
        last_failure: now,
        reason: reason.to_string(),
    });
    if opened {
        OUTAGES.fetch_add(1, Ordering::SeqCst);
        STALE_ANNOUNCED.store(false, Ordering::SeqCst);
    }
    OPEN.store(true, Ordering::SeqCst);
    opened
}

/// When PostgreSQL last answered anything on any connection, in microseconds since `EPOCH`:
/// a connection that goes silent while others are answered is a slow or stuck session, not
/// an outage (a busy server may keep one query waiting; a frozen one answers nobody).
static LAST_ANSWER_US: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn since_epoch_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// PostgreSQL answered an exchange (a row, an error of its own, a notification, a message
/// of the replication stream). Any thread.
#[inline]
pub fn answered() {
    LAST_ANSWER_US.store(since_epoch_us(), Ordering::Relaxed);
}

/// A connection got no answer for `limit`: the circuit opens only when no connection got
/// one for as long (see `LAST_ANSWER_US`). Whether it opened now.
pub fn went_silent(reason: &str, limit: Duration) -> bool {
    nothing_answered_for(limit) && failed(reason)
}

fn nothing_answered_for(limit: Duration) -> bool {
    let silent_us = since_epoch_us().saturating_sub(LAST_ANSWER_US.load(Ordering::Relaxed));
    silent_us >= limit.as_micros() as u64
}

/// The number of outages so far (see `OUTAGES`).
pub fn outages() -> u64 {
    OUTAGES.load(Ordering::SeqCst)
}

/// PostgreSQL answered (a probe, or any new session): the circuit closes (logged). Whether
/// it was open.
pub fn succeeded() -> bool {
    match close() {
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
pub fn reset() {
    close();
}

/// Closes the circuit; the outage it ends, if it was open.
fn close() -> Option<Outage> {
    if !open() {
        return None;
    }
    let ended = OUTAGE.lock().unwrap().take();
    OPEN.store(false, Ordering::SeqCst);
    ended
}

/// Whether a hit served past its freshness bound is the first of this outage (to be
/// announced once).
pub fn first_stale_hit() -> bool {
    !STALE_ANNOUNCED.swap(true, Ordering::SeqCst)
}

/// The error a request that needs PostgreSQL gets while the circuit is open.
pub fn refusal() -> Option<String> {
    if !open() {
        return None;
    }
    let outage = outage()?;
    let ago = |at: SystemTime| at.elapsed().unwrap_or_default().as_secs_f64();
    Some(format!(
        "PostgreSQL unavailable for {:.1} s (last failure {:.1} s ago: {}); pgcache checks it \
         again at least every second and answers misses once it does",
        ago(outage.since),
        ago(outage.last_failure),
        outage.reason
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_opens_the_circuit_and_a_success_closes_it() {
        close();
        assert!(refusal().is_none());
        let before = outages();
        assert!(open_with("connection refused"));
        assert!(!open_with("timed out"), "already open");
        assert_eq!(outages(), before + 1, "one outage");
        assert!(first_stale_hit() && !first_stale_hit(), "announced once");
        let refusal = refusal().unwrap();
        assert!(
            refusal.contains("PostgreSQL unavailable") && refusal.contains("timed out"),
            "{refusal}"
        );
        assert!(close().is_some());
        assert!(!open() && outage().is_none() && close().is_none());
    }

    #[test]
    fn a_silent_connection_is_an_outage_only_when_nothing_else_was_answered() {
        answered();
        assert!(!nothing_answered_for(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(nothing_answered_for(Duration::from_millis(1)));
    }
}
