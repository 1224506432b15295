//! Where QUERY's misses reach the workers. Misses of one statement run together: while a
//! worker job for a statement waits in the queue, further misses of it (other parameters)
//! join that job instead of queueing their own, and the worker runs them all in one
//! statement (`Statement::batch_sql`: the parameter sets joined LATERALly), one snapshot
//! for all. (A statement without a batch form queues a job per miss: one after another on
//! one connection, its misses would wait for each other while other workers idle.) A worker also takes the jobs of other
//! statements queued with it and sends them all in one round trip (`worker::pipeline`). If a
//! batch fails for what some of its sets may have caused alone (one bad parameter, or the time
//! they took together), each set runs alone, so every call is answered as it would be alone.

use super::complete::{Fill, completion};
use super::job::{Job, Ready};
use super::run::{
    Run, batch_failure_may_be_partial, execute, failed, first, ran, refused, reruns_alone,
};
use crate::cache::onloop;
use crate::cache::worker::{self, Pipelined, Sent};
use crate::config::current;
use crate::error::Error;
use crate::model::lsn::Lsn;
use crate::pg::pool::{Connection, ReadOnlyRun, RunParam, RunResult};
use crate::pg::prepared::Parsing;
use crate::pg::text_value::TextValue;
use crate::query::Statement;
use crate::requests::blocked::{BlockedClient, Completion, error_completion};
use crate::requests::reply::Reply;
use redis_module::Context;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most parameter sets one statement runs with at once.
const MAX_BATCH: usize = 128;

/// A miss that joined a queued job of its statement.
struct Joined {
    client: BlockedClient,
    params: Vec<String>,
    fill: Option<Fill>,
    needed: Option<Lsn>,
    parsing: Parsing,
}

/// The misses waiting for each statement's queued job, by the statement's address (its
/// `Arc` is held by the job, so the address is not reused while the entry exists).
static WAITING: Mutex<Option<HashMap<usize, Vec<Joined>>>> = Mutex::new(None);

fn with_waiting<R>(f: impl FnOnce(&mut HashMap<usize, Vec<Joined>>) -> R) -> R {
    let mut guard = WAITING.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// Hands `job` to a worker: a known statement's run joins a queued job of the same
/// statement when there is one. Main thread.
pub(super) fn submit(ctx: &Context, job: Job) -> Reply {
    match job {
        Job::Run {
            statement,
            params,
            fill,
            needed,
            parsing,
        } => run(ctx, statement, params, fill, needed, parsing),
        job => worker::submit(
            ctx,
            job.source(),
            Box::new(move |conn| {
                let (statement, params, fill, parsing) = match job.ready(conn)? {
                    Ready::Run(statement, params, fill, parsing) => {
                        (statement, params, fill, parsing)
                    }
                    Ready::Answered(completion) => return Ok(completion),
                };
                let started = Instant::now();
                let outcome = execute(conn, &statement, &params, parsing);
                // The first run's time says whether the next ones may share a round trip.
                statement.figures.ran_for(started.elapsed());
                Ok(completion(statement, outcome, fill))
            }),
        ),
    }
}

/// Runs `statement` with `params` on a worker, joining a job of the same statement already
/// queued when there is one; with a ticket, the result is cached under its key.
fn run(
    ctx: &Context,
    statement: Arc<Statement>,
    params: Vec<String>,
    fill: Option<Fill>,
    needed: Option<Lsn>,
    parsing: Parsing,
) -> Reply {
    let id = Arc::as_ptr(&statement) as usize;
    let checked = match worker::may_wait(ctx, statement.source) {
        Ok(checked) => checked,
        Err(refusal) => return refusal,
    };
    let joins = statement.batch_sql.is_some();
    // Joining and the worker's taking of the joined happen under one lock: a miss joins a
    // job that has not started yet, or queues its own.
    let own = with_waiting(|w| match w.get_mut(&id).filter(|_| joins) {
        Some(joined) => {
            joined.push(Joined {
                client: BlockedClient::block(ctx, statement.source, current::request_timeout_ms()),
                params,
                fill,
                needed,
                parsing,
            });
            None
        }
        None => {
            if joins {
                w.insert(id, Vec::new());
            }
            Some((params, fill))
        }
    });
    let Some((params, fill)) = own else {
        return Reply::Blocked;
    };
    let pipelines = statement.figures.pipelines();
    let on_loop = statement.figures.kept_off_the_loop().is_none();
    let source = statement.source;
    let job = StatementRun {
        id,
        statement,
        sets: vec![params],
        fill,
        needed,
        parsing,
        joined: Vec::new(),
        taken: !joins,
        split: AtomicBool::new(false),
    };
    // Refused (a full queue), the job is dropped, and its entry with it (`Drop`).
    onloop::submit_run(ctx, checked, source, Box::new(job), pipelines, on_loop)
}

/// A statement's queued run: its own miss's parameters, then those of the misses that
/// joined it.
struct StatementRun {
    id: usize,
    statement: Arc<Statement>,
    /// Every parameter set to run: the job's own first.
    sets: Vec<Vec<String>>,
    fill: Option<Fill>,
    /// The position a standby must have replayed to answer every miss it answers (None:
    /// the primary only).
    needed: Option<Lsn>,
    /// How its runs are parsed: afresh if any miss among them must be (`run::parsing_for`).
    parsing: Parsing,
    /// The misses that joined, once taken from `WAITING`.
    joined: Vec<Joined>,
    /// Whether they were taken (from then on no more can join, and a new miss of the
    /// statement queues a job of its own, under the same `id`); from the start for a
    /// statement whose misses do not join.
    taken: bool,
    /// Its batch failed on the event loop where each set alone may not
    /// (`batch_failure_may_be_partial`): the worker it goes to runs the sets one by one,
    /// rather than the batch again (a batch canceled for its time would wait it out twice).
    split: AtomicBool,
}

impl StatementRun {
    /// Whether its sets go as batches of `batch_sql`: several, of a statement that has one,
    /// not split. Decided once the joined misses were taken (`runs`), after which the sets
    /// stay put, and once more when a batch on the loop split it.
    fn batched(&self) -> bool {
        self.statement.batch_sql.is_some()
            && self.sets.len() > 1
            && !self.split.load(Ordering::Relaxed)
    }

    /// Takes the misses that joined (once): from here on, misses queue a job of their own.
    fn take_joined(&mut self) {
        if std::mem::replace(&mut self.taken, true) {
            return;
        }
        let mut joined = with_waiting(|w| w.remove(&self.id)).unwrap_or_default();
        for j in &mut joined {
            j.client.picked();
            self.sets.push(std::mem::take(&mut j.params));
            self.needed = self
                .needed
                .zip(j.needed)
                .map(|(own, theirs)| own.max(theirs));
            if j.parsing == Parsing::EachRun {
                self.parsing = Parsing::EachRun;
            }
        }
        self.joined = joined;
    }

    /// Answers the joined misses in order, and makes the job's own completion.
    fn answer(mut self, outcomes: Vec<Run>) -> Completion {
        let mut outcomes = outcomes.into_iter();
        let own = outcomes.next().unwrap_or_else(|| Err(lost()));
        for j in std::mem::take(&mut self.joined) {
            let outcome = outcomes.next().unwrap_or_else(|| Err(lost()));
            j.client
                .answer(completion(self.statement.clone(), outcome, j.fill));
        }
        completion(self.statement.clone(), own, self.fill.take())
    }

    /// The result of each set from what its runs came to.
    /// (`conn`: None only where `needs_worker` said no.)
    fn outcomes(&self, results: Vec<RunResult>, mut conn: Option<&mut Connection>) -> Vec<Run> {
        let statement = &self.statement;
        if !self.batched() {
            return results
                .into_iter()
                .zip(&self.sets)
                .map(|(rows, params)| match rows {
                    Ok(rows) => first(rows).and_then(|row| ran(statement, row)),
                    Err(failure) => refused(
                        conn.as_deref_mut(),
                        statement,
                        params,
                        &failure,
                        self.parsing,
                    ),
                })
                .collect();
        }
        self.sets
            .chunks(MAX_BATCH)
            .zip(results)
            .flat_map(|(chunk, rows)| match rows {
                Ok(rows) => {
                    let mut runs: Vec<Run> =
                        rows.into_iter().map(|row| ran(statement, row)).collect();
                    runs.resize_with(chunk.len(), || Err(lost()));
                    runs
                }
                // PostgreSQL refused the batch (one set's value is not of its type, say) or
                // canceled it (the sets together took too long): each set alone is answered
                // as it would have been alone.
                Err(failure) if batch_failure_may_be_partial(&failure) => {
                    match conn.as_deref_mut() {
                        Some(conn) => chunk
                            .iter()
                            .map(|p| execute(conn, statement, p, self.parsing))
                            .collect(),
                        None => vec![Err(failed(statement, &failure)); chunk.len()],
                    }
                }
                // Out of reach, or the tables changed under it: every set would be too.
                Err(failure) => vec![Err(failed(statement, &failure)); chunk.len()],
            })
            .collect()
    }
}

impl Pipelined for StatementRun {
    fn needed(&self) -> Option<Lsn> {
        self.needed
    }

    fn misses(&self) -> usize {
        self.sets.len()
    }

    fn answered_too_large(&self) {
        let figures = &self.statement.figures;
        (figures.too_large_for_loop).store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn runs(&mut self) -> Vec<ReadOnlyRun> {
        self.take_joined();
        let statement = &self.statement;
        match statement.batch_sql.as_deref() {
            Some(batch_sql) if self.batched() => self
                .sets
                .chunks(MAX_BATCH)
                .map(|chunk| batch_run(statement, batch_sql, chunk, self.parsing))
                .collect(),
            _ => self
                .sets
                .iter()
                .map(|set| ReadOnlyRun {
                    sql: statement.run_sql.clone(),
                    types: statement.param_oids(),
                    parsing: self.parsing,
                    effects: statement.effects,
                    params: set
                        .iter()
                        .map(|p| RunParam::Text(TextValue(p.clone())))
                        .collect(),
                })
                .collect(),
        }
    }

    fn awaited_until(&self) -> Option<Instant> {
        let joined = |j: &Vec<Joined>| j.iter().map(|j| j.client.deadline()).max();
        if self.taken {
            joined(&self.joined)
        } else {
            with_waiting(|w| w.get(&self.id).and_then(joined))
        }
    }

    fn needs_worker(&self, results: &[RunResult]) -> bool {
        let batched = self.batched();
        let split = results.iter().any(|result| match result {
            Err(failure) => batched && batch_failure_may_be_partial(failure),
            Ok(_) => false,
        });
        if split {
            self.split.store(true, Ordering::Relaxed);
            return true;
        }
        results.iter().any(|result| match result {
            Err(failure) => reruns_alone(&self.statement, failure),
            Ok(_) => false,
        })
    }

    fn finish(mut self: Box<Self>, sent: Sent<'_>) -> Completion {
        self.take_joined();
        let outcomes = match sent {
            Sent::Ran {
                results,
                share,
                conn,
            } => {
                self.statement.figures.ran_for(share);
                let expected = if self.batched() {
                    self.sets.len().div_ceil(MAX_BATCH)
                } else {
                    self.sets.len()
                };
                if results.len() == expected {
                    self.outcomes(results, conn)
                } else {
                    vec![Err(lost()); self.sets.len()]
                }
            }
            Sent::Failed(e) => vec![Err(e); self.sets.len()],
        };
        self.answer(outcomes)
    }
}

// A job dropped unrun (refused by the queue, or by a worker's panic, even in `finish`)
// must not leave the misses that joined it waiting, nor its entry for later misses to join.
impl Drop for StatementRun {
    fn drop(&mut self) {
        if !self.taken {
            self.joined = with_waiting(|w| w.remove(&self.id)).unwrap_or_default();
        }
        for j in self.joined.drain(..) {
            j.client.answer(error_completion(lost()));
        }
    }
}

fn lost() -> Error {
    Error::internal("a batched statement's result went missing")
}

/// One run of `statement`'s `batch_sql` for `sets`: one text array per parameter.
fn batch_run(
    statement: &Statement,
    batch_sql: &str,
    sets: &[Vec<String>],
    parsing: Parsing,
) -> ReadOnlyRun {
    let width = sets[0].len();
    ReadOnlyRun {
        sql: batch_sql.to_string(),
        types: Vec::new(),
        parsing,
        effects: statement.effects,
        params: (0..width)
            .map(|i| RunParam::Texts(sets.iter().map(|set| set[i].clone()).collect()))
            .collect(),
    }
}
