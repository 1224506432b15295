//! The event loop's connections and this turn's jobs, one fleet per source: which connection
//! takes a job, sending the turn's jobs, serving each socket's events, and how many
//! connections there are (`loop_connections`; opened by the fleet's `opener`, retired when
//! no longer wanted or trusted).
//!
//! Every change happens inside one borrow of the thread-local `FLEETS`; what ends a job
//! (finishing it, unblocking its client, handing it to the workers) happens after the borrow
//! is released (`Ends`), so nothing it calls can find the fleets borrowed.

use super::HANDED_OVER;
use super::flight::Flight;
use super::job::{Job, Lookup};
use super::looped::Looped;
use super::opener::{BACKOFF_MAX, Opener};
use crate::cache::drain;
use crate::config::{PgSettings, current};
use crate::error::Error;
use crate::model::source::SourceId;
use crate::pg::circuit;
use crate::pg::pool::patience;
use crate::pg::prepared;
use crate::pg::session::Failure;
use crate::pg::socket::setup::Opened;
use crate::pg::wire::conn::Conn;
use crate::pg::wire::frontend::Request;
use crate::redis::fds::{Ready, Watched};
use crate::stats;
use redis_module::Context;
use redis_module::logging::log_warning;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Jobs in flight on one connection at most: PostgreSQL runs them one after another, so the
/// last waits for all before it (as a worker's pipeline, `worker::MAX_PIPELINE`).
const MAX_IN_FLIGHT: usize = 16;

/// One source's connections: a source's misses go out only on connections to its own
/// database, opened with its own settings, counted in its own figures and circuit.
struct Fleet {
    source: SourceId,
    slots: Vec<Option<Looped>>,
    /// This turn's jobs, sent by `flush`.
    turn: Vec<Job>,
    opener: Opener,
}

/// Every source's fleet, at its fleet number: the number is in each connection's token, so
/// the socket's callback finds its fleet without a search. A stopped source leaves its
/// number empty (`None`) rather than moving the fleets after it, whose connections' tokens
/// hold their numbers. Standbys (design/53 step 13) add fleets of their own, one per
/// (source, target): the number then names the pair, and the token need not change.
#[derive(Default)]
struct Fleets {
    fleets: Vec<Option<Fleet>>,
    /// Tells a connection from an earlier one in the same slot (`token`). One count for
    /// every fleet, so a fleet number used again cannot meet an old connection's token.
    generation: u64,
}

/// A connection's token, which the event loop hands back to its callback: the generation
/// above bit 32, the fleet number in bits 16-31, the slot in the low 16.
fn token(generation: u64, fleet: usize, slot: usize) -> u64 {
    debug_assert!(fleet <= 0xFFFF && slot <= 0xFFFF);
    (generation << 32) | ((fleet as u64) << 16) | slot as u64
}

/// The fleet number and slot a token names.
fn fleet_and_slot(token: u64) -> (usize, usize) {
    (((token >> 16) & 0xFFFF) as usize, (token & 0xFFFF) as usize)
}

/// What ends after a borrow of the fleet: flights that landed, flights of closed
/// connections, jobs no connection took.
#[derive(Default)]
struct Ends {
    landed: Vec<(Flight, Duration)>,
    diverted: Vec<(Flight, String)>,
    unsent: Vec<Job>,
}

impl Ends {
    fn closed(&mut self, looped: Looped, why: &str) {
        let flights = looped.close(why);
        self.diverted
            .extend(flights.into_iter().map(|f| (f, why.to_string())));
    }

    fn run(self) {
        for (flight, share) in self.landed {
            flight.land(share);
        }
        for (flight, why) in self.diverted {
            flight.divert(&why);
        }
        for job in self.unsent {
            job.hand_to_workers();
        }
    }
}

thread_local! {
    static FLEETS: RefCell<Fleets> = RefCell::new(Fleets::default());
}

/// Runs `f` on the fleets, then what it ended. Also when `f` panics: what it had ended by
/// then is still ended (its clients answered, its jobs handed to the workers) before the
/// panic goes on to the callback's own containment; dropped, their clients would wait for
/// their request timeout.
fn with_all<R>(f: impl FnOnce(&mut Fleets, &mut Ends) -> R) -> R {
    let mut ends = Ends::default();
    let result = catch_unwind(AssertUnwindSafe(|| {
        FLEETS.with(|fleets| f(&mut fleets.borrow_mut(), &mut ends))
    }));
    ends.run();
    result.unwrap_or_else(|panic| resume_unwind(panic))
}

/// Runs `f` on the fleet of `source`, if it has one (as `with_all`).
fn with<R>(source: SourceId, f: impl FnOnce(&mut Fleet, &mut Ends) -> R) -> Option<R> {
    with_all(|fleets, ends| fleets.of(source).map(|fleet| f(fleet, ends)))
}

/// Runs `f` on each fleet in turn, each in a borrow of its own (as `with_all`): a panic
/// on one fleet leaves the others served, and goes on once they were.
fn each(f: impl Fn(&mut Fleet, &mut Ends)) {
    let count = FLEETS.with(|fleets| fleets.borrow().fleets.len());
    let mut panicked = None;
    for number in 0..count {
        let served = catch_unwind(AssertUnwindSafe(|| {
            with_all(|fleets, ends| {
                if let Some(Some(fleet)) = fleets.fleets.get_mut(number) {
                    f(fleet, ends);
                }
            })
        }));
        if let Err(panic) = served {
            panicked.get_or_insert(panic);
        }
    }
    if let Some(panic) = panicked {
        resume_unwind(panic);
    }
}

impl Fleets {
    fn of(&mut self, source: SourceId) -> Option<&mut Fleet> {
        self.fleets
            .iter_mut()
            .flatten()
            .find(|f| f.source == source)
    }
}

/// `PGCACHE.DEBUG PANIC SEND`: the event loop's next send of misses panics before any goes
/// out, to show its jobs still reach the workers.
static PANIC_NEXT_SEND: AtomicBool = AtomicBool::new(false);

pub fn panic_next_send() {
    PANIC_NEXT_SEND.store(true, Ordering::Relaxed);
}

/// `PGCACHE.DEBUG SENDS HOLD`: the turns' jobs wait unsent, so misses of one statement that
/// arrive meanwhile join one job, as those of one turn do (until `SENDS RELEASE`).
static SENDS_HELD: AtomicBool = AtomicBool::new(false);

pub fn hold_sends(held: bool) {
    SENDS_HELD.store(held, Ordering::Relaxed);
}

/// Gives `source` its fleet, with the connection settings its opener uses (a fleet of its
/// already there, from a load before, takes them afresh).
pub fn start(source: SourceId, settings: &PgSettings) -> Result<(), Error> {
    with_all(|fleets, _| {
        if let Some(fleet) = fleets.of(source) {
            return fleet.opener.start(settings);
        }
        let mut fleet = Fleet {
            source,
            slots: Vec::new(),
            turn: Vec::new(),
            opener: Opener::new(source),
        };
        fleet.opener.start(settings)?;
        match fleets.fleets.iter().position(Option::is_none) {
            Some(free) => fleets.fleets[free] = Some(fleet),
            None => fleets.fleets.push(Some(fleet)),
        }
        Ok(())
    })
}

/// Opener threads of fleets removed while the server ran (`retire`), still to end before
/// the library may be unloaded.
static DETACHED: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

pub fn may_stop() -> Result<(), Error> {
    let busy = with_all(|fleets, _| fleets.fleets.iter().flatten().any(|f| f.opener.busy()));
    let mut detached = DETACHED.lock().unwrap();
    detached.retain(|thread| !thread.is_finished());
    if busy || !detached.is_empty() {
        return Err(Error::invalid(
            "a PostgreSQL connection for the event loop is being opened; retry shortly",
        ));
    }
    Ok(())
}

/// Closes the fleet of `source` and gives up its number.
pub fn stop(source: SourceId) {
    close(source, |opener| opener.stop());
}

/// Closes the fleet of `source` while the server runs (PGCACHE.SOURCE DEL): as `stop`, but
/// an opener thread connecting now is not waited for on the event loop; unload waits for it.
pub fn retire(source: SourceId) {
    close(source, |opener| {
        if let Some(thread) = opener.detach() {
            DETACHED.lock().unwrap().push(thread);
        }
    });
}

fn close(source: SourceId, stop_opener: impl FnOnce(&mut Opener)) {
    with_all(|fleets, ends| {
        let Some(entry) =
            (fleets.fleets.iter_mut()).find(|f| f.as_ref().is_some_and(|f| f.source == source))
        else {
            return;
        };
        let mut f = entry.take().expect("the fleet found");
        stop_opener(&mut f.opener);
        for looped in f.slots.drain(..).flatten() {
            ends.closed(looped, "pgcache is unloading");
        }
        ends.unsent.append(&mut f.turn);
    });
}

/// Whether a connection of the fleet of `source` can take one more job now (and, on the
/// way, opens the connections `loop_connections` asks for and retires those it no longer
/// wants or trusts). No fleet, no: its misses go to the workers.
pub fn takes_a_job(source: SourceId) -> bool {
    with(source, |f, ends| {
        f.tend(ends);
        let room: usize = f
            .slots
            .iter()
            .flatten()
            .filter(|l| l.usable())
            .map(|l| MAX_IN_FLIGHT - l.flights.len().min(MAX_IN_FLIGHT))
            .sum();
        room > f.turn.len()
    })
    .unwrap_or(false)
}

/// Queues a job in its source's fleet (`takes_a_job` said it has room).
pub fn queue(job: Job) {
    with_all(|fleets, ends| match fleets.of(job.source()) {
        Some(f) => f.turn.push(job),
        None => ends.unsent.push(job),
    });
}

/// Queues a lookup: with the turn's lookup of the same table and key columns, if any.
pub fn queue_lookup(lookup: Lookup) {
    let source = lookup.lookup.schema.source;
    with_all(|fleets, ends| {
        let Some(f) = fleets.of(source) else {
            ends.unsent.push(Job::Lookups(vec![lookup]));
            return;
        };
        match f.turn.iter_mut().find(|job| job.joins(&lookup.lookup)) {
            Some(Job::Lookups(lookups)) => lookups.push(lookup),
            _ => f.turn.push(Job::Lookups(vec![lookup])),
        }
    });
}

/// Sends this turn's jobs of every fleet, each on the connection of its fleet with the
/// fewest in flight.
pub fn flush() {
    if SENDS_HELD.load(Ordering::Relaxed) {
        return;
    }
    each(|f, ends| {
        // The turn waits among the unsent until each job is sent: a panic on the way leaves
        // the rest to the workers. Reversed, so that popping sends them in their order.
        ends.unsent = std::mem::take(&mut f.turn);
        ends.unsent.reverse();
        if PANIC_NEXT_SEND.swap(false, Ordering::Relaxed) {
            panic!("PGCACHE.DEBUG panic while sending misses from the event loop");
        }
        // Once no connection has room, none will in this turn: the rest stay unsent.
        while let Some(looped) = f.least_busy() {
            let Some(mut job) = ends.unsent.pop() else {
                break;
            };
            job.picked();
            looped.conn.follow_catalog(prepared::catalog());
            let requests = job.requests();
            let mut flight = Flight::new(job, requests.len());
            for (i, sent) in requests.iter().enumerate() {
                let request = Request {
                    sql: &sent.sql,
                    param_oids: &sent.param_oids,
                    params: &sent.params,
                    parsing: sent.parsing,
                    effects: sent.effects,
                };
                match looped.conn.send(&request) {
                    Ok(token) => flight.expect(token, i),
                    Err(e) => flight.settle(i, Err(Failure::Lost(e.to_string()))),
                }
            }
            if flight.complete() {
                ends.landed.push((flight, Duration::ZERO));
            } else {
                looped.flights.push_back(flight);
            }
        }
        ends.unsent.reverse();
        for slot in &mut f.slots {
            if let Some(Err(why)) = slot.as_mut().map(Looped::write_out) {
                ends.closed(slot.take().expect("the slot written to"), &why);
            }
        }
    });
}

/// The event loop's callback for a connection's socket.
fn on_event(token: u64, _ready: Ready) {
    service(token);
}

fn service(token: u64) {
    with_all(|fleets, ends| {
        let (fleet, slot) = fleet_and_slot(token);
        let Some(Some(f)) = fleets.fleets.get_mut(fleet) else {
            return;
        };
        let Some(entry) = f.slots.get_mut(slot) else {
            return;
        };
        let Some(looped) = entry.as_mut().filter(|l| l.token == token) else {
            return;
        };
        match looped.serve(&mut ends.landed) {
            Err(why) => ends.closed(entry.take().expect("the slot served"), &why),
            Ok(()) if looped.retiring && looped.conn.idle() => {
                ends.closed(entry.take().expect("the slot served"), "retired");
            }
            Ok(()) => {}
        }
    });
}

/// From the server's cron, whether misses come or not: closes the connections PostgreSQL
/// went silent on (their requests' clients must not wait for the next miss to find them
/// out), and while a drain before an unload is under way every connection once its
/// requests are answered.
pub fn look_after() {
    each(|f, ends| {
        f.close_silent(ends);
        if drain::remaining(f.source).is_some() {
            f.retire_all(ends);
        }
    });
}

/// Reads on for every connection whose callback stopped at its budget.
pub fn continue_reading(_ctx: &Context) -> bool {
    let tokens: Vec<u64> = with_all(|fleets, _| {
        (fleets.fleets.iter_mut().flatten())
            .flat_map(|f| f.slots.iter_mut().flatten())
            .filter_map(|l| std::mem::take(&mut l.more).then_some(l.token))
            .collect()
    });
    for token in tokens {
        service(token);
    }
    false
}

/// Takes the connections (and failures) each fleet's opener thread handed over.
pub fn take_handed(_ctx: &Context) -> bool {
    with_all(|fleets, _| {
        for (number, entry) in fleets.fleets.iter_mut().enumerate() {
            let Some(f) = entry else {
                continue;
            };
            for handed in f.opener.take_handed() {
                match handed.opened {
                    Ok(opened) => {
                        fleets.generation += 1;
                        let generation = fleets.generation;
                        f.adopt(number, generation, opened, handed.statement_timeout_ms);
                    }
                    Err(failure) => f.opener.failed(&failure),
                }
            }
        }
    });
    false
}

impl Fleet {
    /// Opens what `loop_connections` asks for; retires what it no longer wants, and what an
    /// outage or a new statement_timeout made untrustworthy; closes a silent one.
    fn tend(&mut self, ends: &mut Ends) {
        let settings = current::of(self.source);
        let wanted = settings.loop_connections();
        let timeout_ms = settings.statement_timeout_ms();
        let outages = circuit::of(self.source).outages();
        self.close_silent(ends);
        let mut kept = 0;
        for slot in &mut self.slots {
            let Some(looped) = slot.as_mut() else {
                continue;
            };
            if kept >= wanted
                || looped.statement_timeout_ms != timeout_ms
                || looped.outages != outages
            {
                looped.retiring = true;
            }
            if looped.retiring {
                if looped.conn.idle() {
                    ends.closed(slot.take().expect("the slot tended"), "retired");
                }
                continue;
            }
            kept += 1;
        }
        // No new connection while a drain before an unload is under way.
        if kept < wanted && drain::remaining(self.source).is_none() {
            self.opener.open(wanted - kept, &HANDED_OVER);
        }
    }

    /// Closes each connection whose oldest request has waited past `patience` (PostgreSQL's
    /// statement_timeout and then some): a network that dropped it says nothing.
    fn close_silent(&mut self, ends: &mut Ends) {
        let now = Instant::now();
        let patience = patience(self.source);
        for slot in &mut self.slots {
            let silent = (slot.as_ref().and_then(Looped::waiting_since))
                .is_some_and(|since| now.saturating_duration_since(since) > patience);
            if silent {
                stats::of(self.source).pg_silent_connections.inc();
                let why = Failure::Silent(patience).to_string();
                ends.closed(slot.take().expect("the slot looked at"), &why);
            }
        }
    }

    /// Takes no more jobs on any connection; closes those with none in flight (the others
    /// close as their last answer lands, `service`).
    fn retire_all(&mut self, ends: &mut Ends) {
        for slot in &mut self.slots {
            let Some(looped) = slot.as_mut() else {
                continue;
            };
            looped.retiring = true;
            if looped.conn.idle() {
                let why = "draining for MODULE UNLOAD";
                ends.closed(slot.take().expect("the slot retired"), why);
            }
        }
    }

    /// Takes a connection its opener handed over, whose session started with
    /// `statement_timeout_ms` (`tend` retires it if the setting moved since), as the
    /// `generation`th connection of every fleet; `number`: this fleet's.
    fn adopt(&mut self, number: usize, generation: u64, opened: Opened, statement_timeout_ms: u64) {
        self.opener.opened();
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let token = token(generation, number, slot);
        let Opened {
            transport,
            parameters,
            input,
        } = opened;
        let watched = match Watched::add(transport.fd(), token, on_event) {
            Ok(watched) => watched,
            Err(e) => {
                // Past maxclients + 128 descriptors, say: the workers keep every miss.
                log_warning(format!(
                    "pgcache: the event loop refused a PostgreSQL connection's socket ({e}); \
                     misses stay with the workers"
                ));
                self.opener.later(BACKOFF_MAX);
                return;
            }
        };
        let mut conn = Conn::new(&parameters);
        conn.input().extend_from_slice(&input);
        stats::of(self.source).loop_connections_opened.inc();
        self.slots[slot] = Some(Looped::new(
            watched,
            transport,
            conn,
            token,
            statement_timeout_ms,
            circuit::of(self.source).outages(),
        ));
    }

    /// The usable connection with the fewest jobs in flight, if one has room.
    fn least_busy(&mut self) -> Option<&mut Looped> {
        self.slots
            .iter_mut()
            .flatten()
            .filter(|l| l.usable() && l.flights.len() < MAX_IN_FLIGHT)
            .min_by_key(|l| l.flights.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token gives back the fleet and slot it was made for, whatever the generation, and
    /// a later connection in the same slot of the same fleet has another token.
    #[test]
    fn a_token_names_its_fleet_and_slot() {
        for (generation, fleet, slot) in [
            (1, 0, 0),
            (7, 3, 65_535),
            (u64::from(u32::MAX), 65_535, 12),
            (1 << 31, 1, 1),
        ] {
            let made = token(generation, fleet, slot);
            assert_eq!(fleet_and_slot(made), (fleet, slot), "{made:#x}");
            assert_eq!(made >> 32, generation);
            assert_ne!(made, token(generation + 1, fleet, slot));
        }
        assert_ne!(token(5, 0, 1), token(5, 1, 1));
    }
}
