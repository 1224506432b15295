//! What callers hand the worker pool: the closures and lookups a worker runs, and what each
//! gives back for the main thread.

use crate::cache::fill::{FillTicket, Outcome};
use crate::error::Error;
use crate::model::key::CanonicalPk;
use crate::model::lsn::Lsn;
use crate::model::tags::Tags;
use crate::pg::pool::{Connection, PooledClient, ReadOnlyRun, RunResult};
use crate::pg::schema::TableSchema;
use crate::requests::blocked::Completion;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs on a worker with a pooled connection.
pub type Work = Box<dyn FnOnce(&mut PooledClient<'_>) -> Result<Completion, Error> + Send>;
/// Rows fetched by one part of a split request.
pub type Rows = Vec<Option<String>>;
/// One part of a split request.
pub type Part = Box<dyn FnOnce(&mut PooledClient<'_>) -> Result<Rows, Error> + Send>;
/// Builds the completion from every part's rows, in part order.
pub type Combine = Box<dyn FnOnce(Vec<Rows>) -> Completion + Send>;

/// One row to fetch, and what to do with the result (None: no such row): called on the
/// worker with the lookup's schema and pk (handed back, not cloned), it returns the
/// completion for the main thread.
pub struct RowLookup {
    pub schema: Arc<TableSchema>,
    pub pk: CanonicalPk,
    /// The position a standby must have replayed to answer it (`cache::applied::needed`;
    /// None: the primary only).
    pub needed: Option<Lsn>,
    pub then: ThenLookup,
}

/// What a row lookup's answer comes to on the main thread.
pub type ThenLookup = Box<dyn FnOnce(Outcome, Arc<TableSchema>, CanonicalPk) -> Completion + Send>;

/// A job that must ask PostgreSQL which key it reads before it can join a fill of that key
/// in flight (the first READ of a table spelling, or a key only PostgreSQL can spell).
pub type KeyedWork = Box<dyn FnOnce(&mut PooledClient<'_>) -> Result<Keyed, Error> + Send>;

/// What a `KeyedWork` found.
pub enum Keyed {
    /// The row must be fetched.
    Fill(KeyedFill),
    /// The answer is known without PostgreSQL (the cache had it).
    Answer(Completion),
}

/// What a `KeyedWork` found: the row of `pk` is needed. The worker waits for a fill of its
/// key in flight, or leads one (fetching on the same worker and connection), `then` making
/// the completion from the outcome, the ticket, and the schema and pk handed back.
pub struct KeyedFill {
    pub schema: Arc<TableSchema>,
    pub pk: CanonicalPk,
    /// Lead a fill of its own, never join one in flight (which may have started before the
    /// client's own write: `AFTER`).
    pub fresh: bool,
    /// The tags its completion gives the entry (a tagged read is `fresh`).
    pub tags: Tags,
    pub then:
        Box<dyn FnOnce(Outcome, FillTicket, Arc<TableSchema>, CanonicalPk) -> Completion + Send>,
}

/// A job whose statements a worker may send in one round trip with other such jobs' (a
/// QUERY miss: `worker::submit_run`).
pub trait Pipelined: Send {
    /// What to send: statements each run in a READ ONLY transaction of its own. Called once,
    /// when a worker takes the job up.
    fn runs(&mut self) -> Vec<ReadOnlyRun>;
    /// The latest deadline of other clients the job answers too (misses that joined it),
    /// if any: a job whose own client timed out in the queue still runs for them.
    fn awaited_until(&self) -> Option<Instant>;
    /// Whether what its runs came to can only be finished on a worker's connection (a run
    /// PostgreSQL refused that `finish` would try again another way): a connection the
    /// event loop speaks on hands such a job to the workers, to be run afresh.
    fn needs_worker(&self, results: &[RunResult]) -> bool;
    /// The completion for the job's client, from what its runs came to.
    fn finish(self: Box<Self>, sent: Sent<'_>) -> Completion;
    /// A row of its answer was too long for the event loop to read: what it runs is read
    /// by the workers from now on.
    fn answered_too_large(&self);
    /// The position a standby must have replayed to answer it (None: the primary only);
    /// after `runs`, that of every miss it answers.
    fn needed(&self) -> Option<Lsn>;
    /// How many misses it answers (after `runs`: its own and those that joined it).
    fn misses(&self) -> usize;
}

/// What a pipelined job's runs came to.
pub enum Sent<'a> {
    /// Each run's rows or failure, in order; `share`: PostgreSQL's time for the job's runs,
    /// the round trip shared out among every job's by their count of runs (an upper bound on
    /// a fast statement's time where a slow one shared it); `conn`: for a run to be tried
    /// again alone (None where the runs went out from the event loop, which first asks
    /// `needs_worker`).
    Ran {
        results: Vec<RunResult>,
        share: Duration,
        conn: Option<&'a mut Connection>,
    },
    /// Nothing ran: no connection, a lost session, or the job refused in the queue.
    Failed(Error),
}

/// What a round trip to PostgreSQL found: how long it took, and the session's TimeZone
/// (the zone PostgreSQL shows a timestamptz in, for a session that sets none).
pub struct Probed {
    pub rtt: Duration,
    pub timezone: String,
}

/// Turns a PostgreSQL round trip (or why it failed) into the completion.
pub type Probe = Box<dyn FnOnce(Result<Probed, Error>) -> Completion + Send>;
