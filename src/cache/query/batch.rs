//! Where QUERY's misses reach the workers. Misses of one statement run together: while a
//! worker job for a statement waits in the queue, further misses of it (other parameters)
//! join that job instead of queueing their own, and the worker runs them all in one
//! statement (`Statement::batch_sql`: the parameter sets joined LATERALly), one round trip
//! and one snapshot for all. If the batch fails, each runs alone, so one bad parameter fails
//! only its own call.

use super::complete::{Fill, completion};
use super::job::{Job, Ready};
use super::run::{Run, execute, failed, ran};
use crate::cache::worker;
use crate::config::current;
use crate::error::Error;
use crate::error::panic::catch;
use crate::pg::pool::Connection;
use crate::pg::session::Failure;
use crate::query::Statement;
use crate::requests::blocked::BlockedClient;
use crate::requests::reply::Reply;
use redis_module::Context;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_postgres::error::SqlState;

/// Most parameter sets one statement runs with at once.
const MAX_BATCH: usize = 128;

/// A miss that joined a queued job of its statement.
struct Joined {
    client: BlockedClient,
    params: Vec<String>,
    fill: Option<Fill>,
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
        } if statement.batch_sql.is_some() => run(ctx, statement, params, fill),
        job => worker::submit(
            ctx,
            Box::new(move |conn| {
                let (statement, params, fill) = match job.ready(conn)? {
                    Ready::Run(statement, params, fill) => (statement, params, fill),
                    Ready::Answered(completion) => return Ok(completion),
                };
                let outcome = execute(conn, &statement, &params);
                Ok(completion(statement, outcome, fill))
            }),
        ),
    }
}

/// Runs `statement` (one that batches) with `params` on a worker, joining a job of the same
/// statement already queued when there is one; with a ticket, the result is cached for
/// `ttl` seconds under its key.
fn run(ctx: &Context, statement: Arc<Statement>, params: Vec<String>, fill: Option<Fill>) -> Reply {
    let id = Arc::as_ptr(&statement) as usize;
    if let Err(refusal) = worker::may_wait(ctx) {
        return refusal;
    }
    // Joining and the worker's taking of the joined happen under one lock: a miss joins a
    // job that has not started yet, or queues its own.
    let own = with_waiting(|w| match w.get_mut(&id) {
        Some(joined) => {
            joined.push(Joined {
                client: BlockedClient::block(ctx, current::request_timeout_ms()),
                params,
                fill,
            });
            None
        }
        None => {
            w.insert(id, Vec::new());
            Some((params, fill))
        }
    });
    let Some((params, fill)) = own else {
        return Reply::Blocked;
    };
    let job_statement = statement.clone();
    let reply = worker::submit(
        ctx,
        Box::new(move |conn| {
            let statement = job_statement;
            let mut joined = with_waiting(|w| w.remove(&id)).unwrap_or_default();
            for j in &mut joined {
                j.client.picked();
            }
            let mut sets = vec![params];
            sets.extend(joined.iter_mut().map(|j| std::mem::take(&mut j.params)));
            // Every joined client gets its answer, even from a panic (else it would wait for
            // its deadline).
            let outcomes = catch(|| execute_all(conn, &statement, &sets))
                .unwrap_or_else(|e| vec![Err(e); sets.len()]);
            let mut outcomes = outcomes.into_iter();
            let own = outcomes.next().unwrap_or_else(|| Err(lost()));
            for (j, outcome) in joined.into_iter().zip(outcomes) {
                j.client
                    .answer(completion(statement.clone(), outcome, j.fill));
            }
            Ok(completion(statement, own, fill))
        }),
    );
    if !matches!(reply, Reply::Blocked) {
        // Refused (a full queue, an outage): no job will take the entry; nothing joined it,
        // as only the main thread joins.
        with_waiting(|w| w.remove(&id));
    }
    reply
}

fn lost() -> Error {
    Error::internal("a batched statement's result went missing")
}

/// The result for each parameter set, in order: batched where the statement allows it,
/// MAX_BATCH sets at a time, each set alone where a batch failed.
fn execute_all(conn: &mut Connection, statement: &Statement, sets: &[Vec<String>]) -> Vec<Run> {
    let Some(batch_sql) = statement.batch_sql.as_deref().filter(|_| sets.len() > 1) else {
        return sets.iter().map(|p| execute(conn, statement, p)).collect();
    };
    sets.chunks(MAX_BATCH)
        .flat_map(
            |chunk| match execute_batch(conn, statement, batch_sql, chunk) {
                Ok(runs) => runs,
                // PostgreSQL refused the batch (one set's value is not of its type, say): each
                // set alone finds which.
                Err(failure) if refused_one(&failure) => {
                    chunk.iter().map(|p| execute(conn, statement, p)).collect()
                }
                // Out of time or out of reach: every set would be too.
                Err(failure) => vec![Err(failed(statement, &failure)); chunk.len()],
            },
        )
        .collect()
}

/// Whether PostgreSQL itself refused the statement for what it was given (not a cancel
/// for statement_timeout, not a lost connection).
fn refused_one(failure: &Failure) -> bool {
    failure
        .as_db_error()
        .is_some_and(|db| *db.code() != SqlState::QUERY_CANCELED && !failure.session_lost())
}

/// One statement for `sets`: one text array per parameter.
fn execute_batch(
    conn: &mut Connection,
    statement: &Statement,
    batch_sql: &str,
    sets: &[Vec<String>],
) -> Result<Vec<Run>, Failure> {
    let width = sets[0].len();
    let arrays: Vec<Vec<&str>> = (0..width)
        .map(|i| sets.iter().map(|set| set[i].as_str()).collect())
        .collect();
    let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = arrays
        .iter()
        .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = conn.query_read_only(batch_sql, &values)?;
    let mut runs: Vec<Run> = rows.iter().map(|row| ran(statement, row)).collect();
    runs.resize_with(sets.len(), || Err(lost()));
    Ok(runs)
}
