//! One connection the event loop speaks PostgreSQL on: its socket's registration, its
//! protocol state (`pg::wire::Conn`) and the flights it carries, in the order PostgreSQL
//! answers them. Writing what waits, reading within a budget, landing the flights whose
//! answers are complete; a broken connection says why, and its owner closes it.

use super::CONTINUE;
use super::flight::Flight;
use crate::pg::socket::transport::{Io, Transport};
use crate::pg::wire::conn::{Broken, Conn, Event};
use crate::redis::fds::Watched;
use redis_module::logging::log_notice;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bytes one callback reads before it lets other clients run (the rest: `CONTINUE`).
const READ_BUDGET: usize = 256 << 10;
const READ_CHUNK: usize = 64 << 10;
/// A connection with this much not yet written takes no more jobs.
const MAX_UNSENT: usize = 1 << 20;
/// A connection whose oldest request has waited this long takes no more jobs until it is
/// answered: PostgreSQL runs a connection's requests one after another.
const STUCK: Duration = Duration::from_millis(20);

pub struct Looped {
    /// First, so that it is dropped (out of the event loop) before the socket closes: a
    /// descriptor number reused must not inherit the registration.
    watched: Watched,
    transport: Transport,
    pub conn: Conn,
    pub flights: VecDeque<Flight>,
    pub token: u64,
    /// The session's statement_timeout, fixed at start-up: another one retires it.
    pub statement_timeout_ms: u64,
    /// `Circuit::outages` when it opened: an outage since retires it (it may be silent).
    pub outages: u64,
    /// When its last answer came: a flight's PostgreSQL time runs from the later of this
    /// and its send (the ones ahead of it ran first).
    last_answer: Instant,
    /// A callback stopped at its budget with input left (`CONTINUE` reads on).
    pub more: bool,
    /// Takes no more jobs; closed once its flights landed.
    pub retiring: bool,
}

impl Looped {
    pub fn new(
        watched: Watched,
        transport: Transport,
        conn: Conn,
        token: u64,
        statement_timeout_ms: u64,
        outages: u64,
    ) -> Looped {
        Looped {
            watched,
            transport,
            conn,
            flights: VecDeque::new(),
            token,
            statement_timeout_ms,
            outages,
            last_answer: Instant::now(),
            more: false,
            retiring: false,
        }
    }

    /// Whether it takes another job: not retiring, not backed up with unsent bytes, and not
    /// stuck behind a request PostgreSQL has held for `STUCK` (a lock wait, a slow view's
    /// row, a slow statement's first run): what would queue behind it goes elsewhere.
    pub fn usable(&self) -> bool {
        !self.retiring
            && self.conn.output().len() < MAX_UNSENT
            && self
                .flights
                .front()
                .is_none_or(|f| f.sent_at.elapsed() < STUCK)
    }

    /// Since when PostgreSQL has owed its oldest request an answer, if it owes one: from the
    /// later of its send and the answer before it (the requests ahead ran first).
    pub fn waiting_since(&self) -> Option<Instant> {
        (self.flights.front()).map(|f| f.sent_at.max(self.last_answer))
    }

    /// Writes what the socket takes; asks for the writable event while output is left.
    pub fn write_out(&mut self) -> Result<(), String> {
        while !self.conn.output().is_empty() {
            match self.transport.write_from(self.conn.output()) {
                Ok(Io::Moved(n)) => self.conn.wrote(n),
                Ok(Io::WantsWrite) => {
                    self.watched.want_writable(true);
                    return Ok(());
                }
                // TLS must read first: the readable callback writes on.
                Ok(Io::WantsRead) => return Ok(()),
                Ok(Io::Ended) => return Err("PostgreSQL closed the connection".into()),
                Err(e) => return Err(format!("writing to PostgreSQL failed: {e}")),
            }
        }
        self.watched.want_writable(false);
        Ok(())
    }

    /// Writes what is waiting, reads what arrived (within the budget) and moves the flights
    /// whose answers are complete to `landed`, each with its share of PostgreSQL's time.
    pub fn serve(&mut self, landed: &mut Vec<(Flight, Duration)>) -> Result<(), String> {
        self.write_out()?;
        self.read_in()?;
        loop {
            let event = match self.conn.step() {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(()),
                Err(broken) => {
                    if let Broken::TooBig { token, .. } = &broken
                        && let Some(flight) = self.flights.front()
                        && flight.next_awaited() == Some(*token)
                    {
                        flight.answered_too_large();
                    }
                    return Err(broken_why(broken));
                }
            };
            let (token, answer) = match event {
                Event::Answered { token, rows } => (token, Ok(rows)),
                Event::Refused { token, error } => (token, Err(error)),
                Event::Setting { .. } => continue,
            };
            let Some(flight) = self.flights.front_mut() else {
                return Err("PostgreSQL answered a request nobody sent".into());
            };
            if flight.next_awaited() != Some(token) {
                return Err("PostgreSQL's answers came out of order".into());
            }
            match answer {
                Ok(rows) => flight.answered(rows),
                Err(error) => flight.refused(error),
            }
            if flight.complete() {
                let flight = self.flights.pop_front().expect("the front flight");
                let now = Instant::now();
                let share = now.saturating_duration_since(flight.sent_at.max(self.last_answer));
                self.last_answer = now;
                landed.push((flight, share));
            }
        }
    }

    /// Reads what the socket has, up to the budget; past it, `CONTINUE` reads on next turn.
    fn read_in(&mut self) -> Result<(), String> {
        let mut read = 0;
        loop {
            if read >= READ_BUDGET {
                self.more = true;
                CONTINUE.request();
                return Ok(());
            }
            match self.transport.read_into(self.conn.input(), READ_CHUNK) {
                // Less than asked: the socket is drained (a read more would only hear so).
                Ok(Io::Moved(n))
                    if n < READ_CHUNK && !self.transport.short_read_may_leave_more() =>
                {
                    return Ok(());
                }
                Ok(Io::Moved(n)) => read += n,
                // Decrypted bytes OpenSSL holds: no readable event would come for them.
                Ok(Io::WantsRead) if self.transport.buffered() > 0 => {}
                Ok(Io::WantsRead) => return Ok(()),
                Ok(Io::WantsWrite) => {
                    self.watched.want_writable(true);
                    return Ok(());
                }
                Ok(Io::Ended) => return Err("PostgreSQL closed the connection".into()),
                Err(e) => return Err(format!("reading from PostgreSQL failed: {e}")),
            }
        }
    }

    /// Takes the connection out of the event loop and closes it; the flights it carried,
    /// unanswered.
    pub fn close(mut self, why: &str) -> VecDeque<Flight> {
        let flights = std::mem::take(&mut self.flights);
        if !flights.is_empty() {
            log_notice(format!(
                "pgcache: a PostgreSQL connection of the event loop ended ({why}); its {} \
                 requests go to the workers",
                flights.len()
            ));
        }
        self.transport.shut_down();
        flights
    }
}

fn broken_why(broken: Broken) -> String {
    match broken {
        Broken::Fatal(e) => format!("{} (SQLSTATE {})", e.message, e.code),
        Broken::Protocol(what) => format!("PostgreSQL protocol error: {what}"),
        Broken::TooBig { len, .. } => format!("a result row of {len} bytes is too large"),
    }
}
