//! A job on its way: the requests it became on one connection, the results as they arrive
//! (in the order PostgreSQL answers them), and, once all are in, its end (`Job::land`).

use super::job::Job;
use crate::pg::pool::RunResult;
use crate::pg::row::Row;
use crate::pg::session::Failure;
use crate::pg::wire::backend::{ServerError, TextRow};
use crate::pg::wire::conn::Token;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub struct Flight {
    job: Job,
    /// Each request's result, in request order; None until it came.
    results: Vec<Option<RunResult>>,
    /// The requests still to be answered, in the order PostgreSQL answers them, each with
    /// its place in `results`.
    awaited: VecDeque<(Token, usize)>,
    /// When its requests were handed to the connection.
    pub sent_at: Instant,
}

impl Flight {
    /// A flight of `requests` requests; `expect` or `settle` says what became of each.
    pub fn new(job: Job, requests: usize) -> Flight {
        Flight {
            job,
            results: (0..requests).map(|_| None).collect(),
            awaited: VecDeque::with_capacity(requests),
            sent_at: Instant::now(),
        }
    }

    /// Request `i` went out as `token`.
    pub fn expect(&mut self, token: Token, i: usize) {
        self.awaited.push_back((token, i));
    }

    /// Request `i` has its result without going out (it could not be encoded).
    pub fn settle(&mut self, i: usize, result: RunResult) {
        self.results[i] = Some(result);
    }

    /// The request the connection's next answer must be for, if this flight awaits one.
    pub fn next_awaited(&self) -> Option<Token> {
        self.awaited.front().map(|(token, _)| *token)
    }

    /// The answer to the request at the front of `awaited`.
    pub fn answered(&mut self, rows: Vec<TextRow>) {
        if let Some((_, i)) = self.awaited.pop_front() {
            let rows = rows.iter().map(|row| Row::Text(row.to_strings())).collect();
            self.results[i] = Some(Ok(rows));
        }
    }

    /// PostgreSQL's refusal of the request at the front of `awaited`.
    pub fn refused(&mut self, error: ServerError) {
        if let Some((_, i)) = self.awaited.pop_front() {
            self.results[i] = Some(Err(Failure::Server(error)));
        }
    }

    /// A row of the answer awaited next was too long to read here.
    pub fn answered_too_large(&self) {
        self.job.answered_too_large();
    }

    /// Whether every request has its answer.
    pub fn complete(&self) -> bool {
        self.awaited.is_empty()
    }

    /// Ends a complete flight (`share`: PostgreSQL's time for it). Main thread, outside the
    /// fleet's borrow.
    pub fn land(self, share: Duration) {
        let results = self
            .results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Failure::Lost("a result went missing".into()))))
            .collect();
        self.job.land(results, share);
    }

    /// Ends a flight whose connection broke before every answer came.
    pub fn divert(self, why: &str) {
        self.job.divert(why);
    }
}
