//! One job sent on a connection the event loop speaks on: the requests its runs became, the
//! results as they arrive, and how it ends: finished as a worker would finish it, or handed
//! to the workers. Every flight ends exactly once (it is consumed), and every end answers
//! its client or passes the client on.

use crate::cache::worker::{self, Pipelined, RowLookup, Sent};
use crate::error::Error;
use crate::error::panic::catch;
use crate::pg::fetch;
use crate::pg::pool::{RunParam, RunResult};
use crate::pg::row::Row;
use crate::pg::session::Failure;
use crate::pg::wire::backend::{ServerError, TextRow};
use crate::pg::wire::conn::Token;
use crate::pg::wire::frontend::Param;
use crate::requests::blocked::{BlockedClient, contained, error_completion};
use crate::stats;
use std::collections::VecDeque;
use std::time::Instant;

/// What a flight carries.
pub enum Job {
    /// A QUERY miss's runs.
    Run(Box<dyn Pipelined>),
    /// A READ or GET miss's row (`select_one_sql`).
    Lookup(RowLookup),
}

impl Job {
    /// What it sends: each request's SQL, parameter types and values.
    pub fn requests(&mut self) -> Vec<(String, Vec<u32>, Vec<Param>)> {
        match self {
            // A job that cannot say what to run runs nothing; `finish` reports it.
            Job::Run(run) => catch(|| run.runs())
                .unwrap_or_default()
                .into_iter()
                .map(|run| {
                    let params = run.params.iter().map(param).collect();
                    (run.sql, run.types, params)
                })
                .collect(),
            Job::Lookup(lookup) => {
                let sql = lookup.schema.select_one_sql(&lookup.pk.columns);
                let params = lookup
                    .pk
                    .columns
                    .iter()
                    .map(|(_, value)| Param::Text(value.to_string()))
                    .collect();
                vec![(sql.into_owned(), Vec::new(), params)]
            }
        }
    }
}

fn param(p: &RunParam) -> Param {
    match p {
        RunParam::Text(value) => Param::Text(value.0.clone()),
        RunParam::Texts(values) => Param::TextArray(values.iter().cloned().map(Some).collect()),
    }
}

pub struct Flight {
    client: BlockedClient,
    deadline: Instant,
    job: Job,
    /// Each run's result, in run order; None until it came.
    results: Vec<Option<RunResult>>,
    /// The requests still to be answered, in the order PostgreSQL answers them, each with
    /// the run it answers.
    awaited: VecDeque<(Token, usize)>,
    /// When its first request was handed to the connection.
    pub sent_at: Instant,
}

impl Flight {
    /// A flight of `runs` runs; `expect` or `settle` says what became of each.
    pub fn new(client: BlockedClient, deadline: Instant, job: Job, runs: usize) -> Flight {
        Flight {
            client,
            deadline,
            job,
            results: (0..runs).map(|_| None).collect(),
            awaited: VecDeque::with_capacity(runs),
            sent_at: Instant::now(),
        }
    }

    /// Run `run` went out as the request `token`.
    pub fn expect(&mut self, token: Token, run: usize) {
        self.awaited.push_back((token, run));
    }

    /// Run `run` has its result without going out (it could not be encoded).
    pub fn settle(&mut self, run: usize, result: RunResult) {
        self.results[run] = Some(result);
    }

    /// The request the next answer of this connection must be for, if this flight awaits it.
    pub fn next_awaited(&self) -> Option<Token> {
        self.awaited.front().map(|(token, _)| *token)
    }

    /// The answer to the request at the front of `awaited`.
    pub fn answered(&mut self, rows: Vec<TextRow>) {
        if let Some((_, run)) = self.awaited.pop_front() {
            let rows = rows.iter().map(|row| Row::Text(row.to_strings())).collect();
            self.results[run] = Some(Ok(rows));
        }
    }

    /// PostgreSQL's refusal of the request at the front of `awaited`.
    pub fn refused(&mut self, error: ServerError) {
        if let Some((_, run)) = self.awaited.pop_front() {
            self.results[run] = Some(Err(Failure::Server(error)));
        }
    }

    /// Whether every request has its answer.
    pub fn complete(&self) -> bool {
        self.awaited.is_empty()
    }

    /// Ends a complete flight: finished here, or run afresh by a worker where what came back
    /// needs a worker's connection (`Pipelined::needs_worker`). `share`: PostgreSQL's time
    /// for it. Main thread, outside the fleet's borrow.
    pub fn land(self, share: std::time::Duration) {
        let Flight {
            client,
            deadline,
            job,
            results,
            ..
        } = self;
        let mut results: Vec<RunResult> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Failure::Lost("a result went missing".into()))))
            .collect();
        match job {
            // (A panic there counts as needing one: the worker's `finish` contains it.)
            Job::Run(job) if catch(|| job.needs_worker(&results)).unwrap_or(true) => {
                stats::MISSES_LOOP_TO_WORKERS.inc();
                worker::resubmit_run(client, deadline, job);
            }
            Job::Run(job) => {
                let sent = Sent::Ran {
                    results,
                    share,
                    conn: None,
                };
                client.answer(contained(|| Ok(job.finish(sent))));
            }
            Job::Lookup(RowLookup { schema, pk, then }) => {
                let outcome = match results.pop() {
                    Some(Ok(rows)) => fetch::the_row(rows, &schema, &pk),
                    Some(Err(failure)) => Err(fetch::failed(failure, &schema)),
                    None => Err(Error::internal("a lookup's result went missing")),
                };
                client.answer(contained(|| Ok(then(outcome, schema, pk))));
            }
        }
    }

    /// Ends a flight whose connection broke before every answer came: a worker runs it
    /// afresh while its client still waits (reads run twice come to the same: each is one
    /// statement in a READ ONLY transaction, and a fill's ticket, taken before the first
    /// send, still judges the later answer); else its client has the error.
    pub fn divert(self, why: &str) {
        if Instant::now() < self.deadline {
            return Flight::unsent(self.client, self.deadline, self.job);
        }
        let failed = Error::postgres(format!("PostgreSQL unavailable: {why}"));
        match self.job {
            Job::Run(job) => {
                let failed = Sent::Failed(failed);
                self.client.answer(contained(|| Ok(job.finish(failed))));
            }
            // The lookup's fill (in `then`) is dropped, which answers its waiters.
            Job::Lookup(_) => self.client.answer(error_completion(failed)),
        }
    }

    /// Ends a flight never sent, or to be sent again: a worker runs it.
    pub fn unsent(client: BlockedClient, deadline: Instant, job: Job) {
        stats::MISSES_LOOP_TO_WORKERS.inc();
        match job {
            Job::Run(job) => worker::resubmit_run(client, deadline, job),
            Job::Lookup(lookup) => worker::resubmit_lookup(client, deadline, lookup),
        }
    }
}
