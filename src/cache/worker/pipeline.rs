//! Pipelined runs: the QUERY misses of different statements that a worker took at once are
//! sent to PostgreSQL in one round trip on one connection, each in a READ ONLY transaction
//! of its own (`Connection::query_read_only_pipelined`), so that under load misses cost a
//! round trip per batch, not one each, whatever statements they are of.
//!
//! Runs a standby can answer go there first (`pg::standby`), behind a check of how far it
//! replayed, in the same round trip; when it falls short, or the standby fails, the
//! primary runs them.

use super::hold;
use super::jobs::{Pipelined, Sent};
use crate::error::Error;
use crate::error::panic::{catch, catch_result};
use crate::model::lsn::Lsn;
use crate::model::source::SourceId;
use crate::pg::errors::statement_error;
use crate::pg::pool::{self, Connection, ReadOnlyRun, RunResult};
use crate::pg::prepared::Parsing;
use crate::pg::standby;
use crate::pg::undo::Effects;
use crate::requests::blocked::{BlockedClient, contained};
use crate::stats;
use std::time::{Duration, Instant};

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
    let needed = (answers.iter())
        .map(|(_, job)| catch(|| job.needed()).ok().flatten())
        .collect::<Option<Vec<Lsn>>>()
        .and_then(|needed| needed.into_iter().max());
    if let Some(chosen) = standby::pick(source, needed) {
        let needed = needed.expect("picked for a position");
        let misses = (answers.iter())
            .map(|(_, job)| catch(|| job.misses()).unwrap_or(1))
            .sum();
        // A panic here must not end the worker thread, nor leave any client unanswered.
        let sent = catch_result(|| {
            let mut conn = chosen.pool().get(standby::connect_deadline(deadline))?;
            let sent = on_standby(&mut conn, &chosen, needed, &runs)?;
            Ok(sent.map(|(results, took)| (results, took, conn)))
        });
        match sent {
            Ok(Some((results, took, mut conn))) => {
                hold::stall_point(deadline);
                chosen.answered(misses);
                return answer_all(source, answers, ends, results, took, &mut conn);
            }
            Ok(None) => chosen.rerouted(misses, false),
            Err(_) => chosen.rerouted(misses, true),
        }
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
    answer_all(source, answers, ends, results, took, &mut conn);
}

/// `runs` on a standby's connection, behind the check of how far it replayed: their
/// results and time where it replayed `needed` and every run succeeded there, else None
/// (the primary runs them: one refused there may be refused for being on a standby).
fn on_standby(
    conn: &mut Connection,
    chosen: &standby::Chosen,
    needed: Lsn,
    runs: &[ReadOnlyRun],
) -> Result<Option<(Vec<RunResult>, Duration)>, Error> {
    let check = ReadOnlyRun {
        sql: standby::CHECK_SQL.to_string(),
        types: Vec::new(),
        params: Vec::new(),
        parsing: Parsing::Kept,
        effects: Effects::None,
    };
    let checked_runs: Vec<&ReadOnlyRun> = std::iter::once(&check).chain(runs).collect();
    let (mut results, took) = conn
        .query_read_only_pipelined(&checked_runs)
        .map_err(|failure| statement_error(&failure))?;
    let replayed = match results.remove(0) {
        Ok(rows) => (rows.first())
            .map(|row| row.text(0).map(|text| text.map(str::to_string)))
            .transpose()?
            .flatten(),
        Err(failure) => return Err(statement_error(&failure)),
    };
    if !chosen.checked(replayed.as_deref(), needed) || results.iter().any(Result::is_err) {
        return Ok(None);
    }
    Ok(Some((results, took)))
}

/// Answers each job's client from what its runs came to.
fn answer_all(
    source: SourceId,
    answers: Vec<(BlockedClient, Box<dyn Pipelined>)>,
    ends: Vec<usize>,
    results: Vec<RunResult>,
    took: Duration,
    conn: &mut Connection,
) {
    if answers.len() > 1 {
        stats::of(source).query_pipelined.add(answers.len() as u64);
    }
    let all_runs = ends.last().copied().unwrap_or(0).max(1) as u32;
    let mut results = results.into_iter();
    let mut start = 0;
    for ((client, job), end) in answers.into_iter().zip(ends) {
        let own: Vec<_> = results.by_ref().take(end - start).collect();
        start = end;
        let sent = Sent::Ran {
            share: took * own.len() as u32 / all_runs,
            results: own,
            conn: Some(&mut *conn),
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
