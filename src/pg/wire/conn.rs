//! One query connection's protocol state, without IO: requests in, bytes out; bytes in,
//! events out. The Redis event loop owns the socket and moves bytes between it and a `Conn`;
//! everything PostgreSQL's extended protocol asks of a pipelining client is kept here, where
//! it can be tested against any chunking of the stream:
//! - each request is Parse (the first time the connection runs that SQL), Bind, Execute,
//!   Sync, and ends at its ReadyForQuery; after an ErrorResponse PostgreSQL skips to the Sync,
//!   so one request's failure is that request's alone;
//! - READ ONLY as the worker path keeps it (`pg::session`): a request goes alone only when
//!   nothing is ahead of it and the session last reported `default_transaction_read_only`
//!   on; otherwise inside `BEGIN READ ONLY` ... `COMMIT` (three ReadyForQuery). A function
//!   the statement ahead calls could turn the default off before this one runs. A request
//!   whose effects are undone (`pg::undo`) is always inside `BEGIN READ ONLY` and ends with
//!   `ROLLBACK; SELECT pg_advisory_unlock_all()`;
//! - prepared names: remembered from the Parse on (requests behind it reuse the name before
//!   ParseComplete arrives), forgotten when the Parse fails; requests queued behind a failed
//!   Parse get PostgreSQL's 26000 as their refusal, and their resend parses again. At most
//!   `MAX_PREPARED` names: the least recently used is closed first, in the same write;
//!   every name once DDL was applied (`follow_catalog`, `pg::prepared::catalog`). A
//!   request parsed for itself alone (`Parsing::EachRun`) uses the unnamed statement.

use super::backend::{Backend, ServerError, TextRow, next_len, take_message};
use super::frontend::{self, Parsing, Request, Unsendable};
use crate::pg::undo::{self, Effects};
use bytes::{Buf, BytesMut};
use std::collections::{HashMap, VecDeque};

/// Names one request; returned by `send`, echoed by its event. Increases with each send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The request ran: its rows, in order.
    Answered { token: Token, rows: Vec<TextRow> },
    /// PostgreSQL refused the request (its statement, or the BEGIN or COMMIT around it);
    /// the requests behind it go on.
    Refused { token: Token, error: ServerError },
    /// PostgreSQL reported a setting (already applied to the wrap rule).
    Setting { name: String, value: String },
}

/// Why the connection cannot go on: drop it; requests in flight were not answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Broken {
    /// PostgreSQL ends the session (FATAL, PANIC), or refused with nothing in flight.
    Fatal(ServerError),
    /// PostgreSQL sent what this protocol state does not allow.
    Protocol(String),
    /// A row of `token`'s result is longer than the cap (`set_row_cap`); it was not read.
    TooBig { token: Token, len: usize },
}

/// Prepared statements kept per connection before the least recently used is closed.
pub const MAX_PREPARED: usize = 256;

/// The largest DataRow read by default (its length as the header says).
pub const DEFAULT_ROW_CAP: usize = 64 << 20;

const READ_ONLY_SETTING: &str = "default_transaction_read_only";

pub struct Conn {
    /// Encoded requests not yet written.
    out: BytesMut,
    /// Bytes read and not yet taken as messages.
    inp: BytesMut,
    /// Requests sent (or about to be), oldest first: PostgreSQL answers in order.
    queue: VecDeque<InFlight>,
    names: Names,
    read_only_default: bool,
    next_token: u64,
    row_cap: usize,
    /// Where a request's Parse and Bind are encoded before anything is committed.
    scratch: BytesMut,
}

/// A request sent and not yet answered.
#[derive(Debug)]
struct InFlight {
    token: Token,
    /// What is still to arrive, one part per ReadyForQuery.
    parts: VecDeque<Part>,
    rows: Vec<TextRow>,
    /// The first error of any part: the request's refusal.
    error: Option<ServerError>,
}

#[derive(Debug)]
struct Part {
    kind: Kind,
    /// An ErrorResponse arrived: only ReadyForQuery may follow.
    failed: bool,
}

#[derive(Debug)]
enum Kind {
    /// `BEGIN READ ONLY`, `COMMIT` or `undo::UNDO`: waiting for the CommandComplete of each
    /// of its statements (the rows of one are read past).
    Simple { statements_left: usize },
    /// Close*, Parse?, Bind, Execute, Sync.
    Statement {
        /// Names closed ahead of the statement, their CloseComplete still to come.
        closes: VecDeque<String>,
        /// The name parsed for the statement, its ParseComplete still to come.
        parse: Option<String>,
        bound: bool,
        done: bool,
    },
}

impl Kind {
    fn statement(closes: Vec<String>, parse: Option<String>) -> Kind {
        Kind::Statement {
            closes: closes.into(),
            parse,
            bound: false,
            done: false,
        }
    }

    fn done(&self) -> bool {
        match self {
            Kind::Simple { statements_left } => *statements_left == 0,
            Kind::Statement { done, .. } => *done,
        }
    }
}

impl Conn {
    /// A connection whose start-up reported `parameters` (ParameterStatus).
    pub fn new(parameters: &[(String, String)]) -> Conn {
        let read_only_default = parameters
            .iter()
            .rev()
            .find(|(name, _)| name == READ_ONLY_SETTING)
            .is_some_and(|(_, value)| value == "on");
        Conn {
            out: BytesMut::new(),
            inp: BytesMut::new(),
            queue: VecDeque::new(),
            names: Names::default(),
            read_only_default,
            next_token: 0,
            row_cap: DEFAULT_ROW_CAP,
            scratch: BytesMut::new(),
        }
    }

    /// Under `catalog` (`pg::prepared::catalog`): when DDL was applied since the names were
    /// prepared, every one is closed ahead of the next request, and each statement is
    /// parsed again (PostgreSQL would not re-parse one a new table came to shadow).
    pub fn follow_catalog(&mut self, catalog: u64) {
        self.names.follow_catalog(catalog);
    }

    /// Queues `request`'s messages for writing. An error leaves the connection as it was.
    pub fn send(&mut self, request: &Request) -> Result<Token, Unsendable> {
        // Everything the request's own data can refuse is encoded first, so a refusal
        // changes nothing.
        self.scratch.clear();
        let kept = request.parsing == Parsing::Kept;
        let known = kept
            .then(|| self.names.find(request.sql, request.param_oids))
            .flatten();
        let name = match &known {
            Some(name) => name.clone(),
            None if kept => self.names.next_name(),
            // The unnamed statement: the next Parse replaces it.
            None => String::new(),
        };
        if known.is_none() {
            frontend::parse(&name, request, &mut self.scratch)?;
        }
        frontend::bind_execute_sync(&name, request.params, &mut self.scratch)?;
        if known.is_none() && kept {
            self.names
                .add(request.sql, request.param_oids, name.clone());
        }
        let closes = std::mem::take(&mut self.names.to_close);
        let undone = request.effects == Effects::Undone;
        let wrapped = undone || !(self.queue.is_empty() && self.read_only_default);
        let mut parts = VecDeque::with_capacity(3);
        if wrapped {
            frontend::simple_query(undo::BEGIN, &mut self.out);
            parts.push_back(Part::simple(1));
        }
        for closed in &closes {
            frontend::close(closed, &mut self.out);
        }
        self.out.extend_from_slice(&self.scratch);
        let parse = known.is_none().then_some(name);
        parts.push_back(Part::new(Kind::statement(closes, parse)));
        if undone {
            frontend::simple_query(undo::UNDO, &mut self.out);
            parts.push_back(Part::simple(undo::UNDO_STATEMENTS));
        } else if wrapped {
            frontend::simple_query("COMMIT", &mut self.out);
            parts.push_back(Part::simple(1));
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        self.queue.push_back(InFlight {
            token,
            parts,
            rows: Vec::new(),
            error: None,
        });
        Ok(token)
    }

    /// The bytes to write.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of `output` were written.
    pub fn wrote(&mut self, n: usize) {
        self.out.advance(n);
    }

    /// Where the caller appends the bytes it read.
    pub fn input(&mut self) -> &mut BytesMut {
        &mut self.inp
    }

    /// Requests sent and not yet answered.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Nothing to write and nothing awaited.
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && self.out.is_empty()
    }

    /// Whether the session last reported `default_transaction_read_only` on.
    #[cfg(test)]
    pub fn read_only_default(&self) -> bool {
        self.read_only_default
    }

    /// Rows longer than `cap` bytes break the connection instead of being buffered.
    #[cfg(test)]
    pub fn set_row_cap(&mut self, cap: usize) {
        self.row_cap = cap;
    }

    /// Prepared names the connection keeps (Parse sent and not failed).
    #[cfg(test)]
    pub fn prepared(&self) -> usize {
        self.names.count
    }

    /// The next event the buffered input holds; None when more bytes are needed.
    pub fn step(&mut self) -> Result<Option<Event>, Broken> {
        loop {
            if let Some((b'D', len)) = next_len(&self.inp)
                && len > self.row_cap
            {
                let Some(front) = self.queue.front() else {
                    return Err(Broken::Protocol(
                        "PostgreSQL sent a row with nothing in flight".into(),
                    ));
                };
                return Err(Broken::TooBig {
                    token: front.token,
                    len,
                });
            }
            let Some(message) = take_message(&mut self.inp).map_err(Broken::Protocol)? else {
                return Ok(None);
            };
            if let Some(event) = self.take(message)? {
                return Ok(Some(event));
            }
        }
    }

    fn take(&mut self, message: Backend) -> Result<Option<Event>, Broken> {
        // What may arrive between any two messages.
        match message {
            Backend::Notice(_) | Backend::Other(b'A') => return Ok(None),
            Backend::ParameterStatus { name, value } => {
                if name == READ_ONLY_SETTING {
                    self.read_only_default = value == "on";
                }
                return Ok(Some(Event::Setting { name, value }));
            }
            Backend::Error(e) if e.is_fatal() => return Err(Broken::Fatal(e)),
            _ => {}
        }
        let Some(front) = self.queue.front_mut() else {
            return Err(match message {
                Backend::Error(e) => Broken::Fatal(e),
                other => unexpected(&other, "with nothing in flight"),
            });
        };
        let part = front
            .parts
            .front_mut()
            .expect("a request in flight has a part to come");
        match message {
            Backend::ReadyForQuery(status) => {
                if !part.failed && !part.kind.done() {
                    return Err(unexpected(&message, "before the request's result"));
                }
                front.parts.pop_front();
                if !front.parts.is_empty() {
                    return Ok(None);
                }
                if status != b'I' {
                    // pgcache's requests never leave a transaction open: the session is not
                    // the one the wrap rule assumes.
                    return Err(Broken::Protocol(format!(
                        "the session is still in a transaction (status {}) after a request",
                        char::from(status)
                    )));
                }
                let done = self.queue.pop_front().expect("the front request");
                Ok(Some(match done.error {
                    Some(error) => Event::Refused {
                        token: done.token,
                        error,
                    },
                    None => Event::Answered {
                        token: done.token,
                        rows: done.rows,
                    },
                }))
            }
            _ if part.failed => Err(unexpected(&message, "after an error")),
            Backend::Error(e) => {
                part.failed = true;
                if let Kind::Statement { closes, parse, .. } = &mut part.kind {
                    // Skipped Closes left their names on the server: close them later.
                    self.names.to_close.extend(closes.drain(..));
                    // A Parse that failed (or was skipped) left no statement behind.
                    if let Some(name) = parse.take() {
                        self.names.failed(&name);
                    }
                }
                front.error.get_or_insert(e);
                Ok(None)
            }
            message => {
                let accepted = match (&mut part.kind, &message) {
                    (Kind::Simple { statements_left }, Backend::CommandComplete(_))
                        if *statements_left > 0 =>
                    {
                        *statements_left -= 1;
                        true
                    }
                    // `undo::UNDO`'s unlock answers a row: read past.
                    (
                        Kind::Simple { statements_left },
                        Backend::Other(b'T') | Backend::DataRow(_),
                    ) if *statements_left > 0 => return Ok(None),
                    (Kind::Statement { closes, .. }, Backend::CloseComplete) => {
                        closes.pop_front().is_some()
                    }
                    (Kind::Statement { closes, parse, .. }, Backend::ParseComplete) => {
                        closes.is_empty() && parse.take().is_some()
                    }
                    (
                        Kind::Statement {
                            closes,
                            parse,
                            bound,
                            ..
                        },
                        Backend::BindComplete,
                    ) if closes.is_empty() && parse.is_none() && !*bound => {
                        *bound = true;
                        true
                    }
                    (Kind::Statement { bound, done, .. }, Backend::DataRow(_))
                        if *bound && !*done =>
                    {
                        true
                    }
                    (
                        Kind::Statement { bound, done, .. },
                        Backend::CommandComplete(_) | Backend::EmptyQueryResponse,
                    ) if *bound && !*done => {
                        *done = true;
                        true
                    }
                    _ => false,
                };
                if !accepted {
                    return Err(unexpected(&message, "out of turn"));
                }
                if let Backend::DataRow(row) = message {
                    front.rows.push(row);
                }
                Ok(None)
            }
        }
    }
}

impl Part {
    fn new(kind: Kind) -> Part {
        Part {
            kind,
            failed: false,
        }
    }

    /// A simple query of `statements` statements.
    fn simple(statements: usize) -> Part {
        Part::new(Kind::Simple {
            statements_left: statements,
        })
    }
}

fn unexpected(message: &Backend, when: &str) -> Broken {
    Broken::Protocol(format!("PostgreSQL sent {message:?} {when}"))
}

/// The prepared statements of one connection: SQL and parameter types → name.
#[derive(Debug, Default)]
struct Names {
    by_sql: HashMap<String, Vec<Prepared>>,
    count: usize,
    /// Numbers names (`pgc_<n>`); never reused on a connection, so a name always means one
    /// Parse.
    numbered: u64,
    /// Orders uses, for closing the least recently used.
    clock: u64,
    /// Names to close ahead of the next request's Parse.
    to_close: Vec<String>,
    /// The `follow_catalog` the names were prepared under.
    catalog: u64,
}

#[derive(Debug)]
struct Prepared {
    oids: Vec<u32>,
    name: String,
    used: u64,
}

impl Names {
    fn find(&mut self, sql: &str, oids: &[u32]) -> Option<String> {
        let prepared = self
            .by_sql
            .get_mut(sql)?
            .iter_mut()
            .find(|p| p.oids == oids)?;
        self.clock += 1;
        prepared.used = self.clock;
        Some(prepared.name.clone())
    }

    /// Closes every name (with the next request) unless they were prepared under `catalog`.
    fn follow_catalog(&mut self, catalog: u64) {
        if self.catalog == catalog {
            return;
        }
        self.catalog = catalog;
        for (_, entries) in self.by_sql.drain() {
            self.to_close.extend(entries.into_iter().map(|p| p.name));
        }
        self.count = 0;
    }

    fn next_name(&self) -> String {
        format!("pgc_{}", self.numbered)
    }

    /// Remembers `name` (from `next_name`), closing the least recently used past the cap.
    fn add(&mut self, sql: &str, oids: &[u32], name: String) {
        if self.count >= MAX_PREPARED
            && let Some(oldest) = self.remove_where(|oldest, p| oldest.is_none_or(|o| p.used < o))
        {
            self.to_close.push(oldest);
        }
        self.numbered += 1;
        self.clock += 1;
        self.count += 1;
        self.by_sql
            .entry(sql.to_string())
            .or_default()
            .push(Prepared {
                oids: oids.to_vec(),
                name,
                used: self.clock,
            });
    }

    /// Forgets `name`, whose Parse failed.
    fn failed(&mut self, name: &str) {
        let _ = self.remove_where(|found, p| found.is_none() && p.name == name);
    }

    /// Removes the entry `pick` chooses (scanning every entry with the best so far: its
    /// `used`), returning its name. Linear, but only on evictions and failed Parses.
    fn remove_where(&mut self, pick: impl Fn(Option<u64>, &Prepared) -> bool) -> Option<String> {
        let mut best: Option<(u64, &str, usize)> = None;
        for (sql, entries) in &self.by_sql {
            for (i, p) in entries.iter().enumerate() {
                if pick(best.map(|b| b.0), p) {
                    best = Some((p.used, sql, i));
                }
            }
        }
        let (_, sql, i) = best?;
        let sql = sql.to_string();
        let entries = self.by_sql.get_mut(&sql).expect("found above");
        let removed = entries.swap_remove(i);
        if entries.is_empty() {
            self.by_sql.remove(&sql);
        }
        self.count -= 1;
        Some(removed.name)
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
