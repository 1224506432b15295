//! Pipelined runs: the QUERY misses of different statements that a worker took at once are
//! sent to PostgreSQL in one round trip on one connection, each in a READ ONLY transaction
//! of its own (`Connection::query_read_only_pipelined`), so that under load misses cost a
//! round trip per batch, not one each, whatever statements they are of.

use super::hold;
use super::jobs::{Pipelined, Sent};
use crate::error::Error;
use crate::error::panic::{catch, catch_result};
use crate::model::source::SourceId;
use crate::pg::errors::statement_error;
use crate::pg::pool::{self, ReadOnlyRun};
use crate::requests::blocked::{BlockedClient, contained};
use crate::stats;
use std::time::Instant;

pub type PendingRun = (BlockedClient, Instant, Box<dyn Pipelined>);

/// Sends every job's runs in one round trip to `source`'s database and answers each job's
/// client.
pub fn run(source: SourceId, jobs: Vec<PendingRun>) {
    // The latest deadline: a connection that frees up after an earlier one still serves
    // the others (a client past its deadline has had its timeout reply).
    let Some(deadline) = jobs.iter().map(|(_, d, _)| *d).max() else {
        return;
    };
    let mut answers: Vec<(BlockedClient, Box<dyn Pipelined>)> = Vec::with_capacity(jobs.len());
    let mut runs: Vec<ReadOnlyRun> = Vec::new();
    let mut ends: Vec<usize> = Vec::with_capacity(jobs.len());
    for (client, _, mut job) in jobs {
        // A job that cannot say what to run runs nothing; `finish` reports it.
        runs.extend(catch(|| job.runs()).unwrap_or_default());
        ends.push(runs.len());
        answers.push((client, job));
    }
    let pool = match pool::of(source) {
        Ok(pool) => pool,
        Err(e) => return answer_all_failed(answers, e),
    };
    // A panic here must not end the worker thread, nor leave any client unanswered.
    let sent = catch_result(|| {
        let mut conn = pool.get(deadline)?;
        let (results, took) = conn
            .query_read_only_pipelined(&runs)
            .map_err(|failure| statement_error(&failure))?;
        Ok((results, took, conn))
    });
    hold::stall_point(deadline);
    let (results, took, mut conn) = match sent {
        Ok(sent) => sent,
        Err(e) => return answer_all_failed(answers, e),
    };
    if answers.len() > 1 {
        stats::of(source).query_pipelined.add(answers.len() as u64);
    }
    let all_runs = runs.len().max(1) as u32;
    let mut results = results.into_iter();
    let mut start = 0;
    for ((client, job), end) in answers.into_iter().zip(ends) {
        let own: Vec<_> = results.by_ref().take(end - start).collect();
        start = end;
        let sent = Sent::Ran {
            share: took * own.len() as u32 / all_runs,
            results: own,
            conn: Some(&mut conn),
        };
        client.answer(contained(|| Ok(job.finish(sent))));
    }
}

fn answer_all_failed(answers: Vec<(BlockedClient, Box<dyn Pipelined>)>, e: Error) {
    for (client, job) in answers {
        let failed = Sent::Failed(e.clone());
        client.answer(contained(|| Ok(job.finish(failed))));
    }
}
