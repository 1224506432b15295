//! What the event loop sends for a miss, and how each kind ends: a QUERY miss's runs
//! (finished as a worker finishes them), or READ and GET misses' row lookups (one key alone,
//! or the keys of one table read in one turn together, as a worker batches them). Every end
//! answers each client once, or hands it to the workers.

use crate::cache::worker::{self, Pipelined, RowLookup, Sent};
use crate::error::Error;
use crate::error::panic::catch;
use crate::pg::fetch;
use crate::pg::pool::{RunParam, RunResult};
use crate::pg::row::Row;
use crate::pg::wire::frontend::Param;
use crate::requests::blocked::{BlockedClient, contained, error_completion};
use crate::stats;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most keys one batched lookup reads (as a worker's, `worker::MAX_BATCH`).
pub const MAX_KEYS: usize = 128;

/// One READ or GET miss.
pub struct Lookup {
    pub client: BlockedClient,
    pub deadline: Instant,
    pub lookup: RowLookup,
}

pub enum Job {
    /// A QUERY miss's runs.
    Run {
        client: BlockedClient,
        deadline: Instant,
        run: Box<dyn Pipelined>,
    },
    /// Row lookups of one table: one (`select_one_sql`), or several keys of the same
    /// columns read in one statement (`select_many_sql`).
    Lookups(Vec<Lookup>),
}

/// One request: its SQL, parameter types and values.
pub type Request = (String, Vec<u32>, Vec<Param>);

impl Job {
    /// Notes that each client's job is under way (its queue stage ends).
    pub fn picked(&mut self) {
        match self {
            Job::Run { client, .. } => client.picked(),
            Job::Lookups(lookups) => lookups.iter_mut().for_each(|l| l.client.picked()),
        }
    }

    /// Whether `lookup` may join this job's statement: a lookup job of the same table and
    /// key columns, batchable, with room.
    pub fn joins(&self, lookup: &RowLookup) -> bool {
        let Job::Lookups(lookups) = self else {
            return false;
        };
        let first = &lookups[0].lookup;
        Arc::ptr_eq(&first.schema, &lookup.schema)
            && first.schema.batchable
            && lookups.len() < MAX_KEYS
            && first.pk.columns.len() == lookup.pk.columns.len()
            && (first.pk.columns.iter())
                .zip(&lookup.pk.columns)
                .all(|((a, _), (b, _))| a == b)
    }

    /// What it sends.
    pub fn requests(&mut self) -> Vec<Request> {
        match self {
            // A job that cannot say what to run runs nothing; `finish` reports it.
            Job::Run { run, .. } => catch(|| run.runs())
                .unwrap_or_default()
                .into_iter()
                .map(|run| {
                    let params = run.params.iter().map(param).collect();
                    (run.sql, run.types, params)
                })
                .collect(),
            Job::Lookups(lookups) if lookups.len() == 1 => {
                let RowLookup { schema, pk, .. } = &lookups[0].lookup;
                let sql = schema.select_one_sql(&pk.columns).into_owned();
                let params = pk
                    .columns
                    .iter()
                    .map(|(_, value)| Param::Text(value.to_string()))
                    .collect();
                vec![(sql, Vec::new(), params)]
            }
            Job::Lookups(lookups) => {
                let first = &lookups[0].lookup;
                let sql = first.schema.select_many_sql(&first.pk.columns).into_owned();
                // One text[] per key column, element i of each forming key i (duplicates
                // are read once each: the answer is placed by ordinal).
                let params = (0..first.pk.columns.len())
                    .map(|c| {
                        Param::TextArray(
                            lookups
                                .iter()
                                .map(|l| Some(l.lookup.pk.columns[c].1.to_string()))
                                .collect(),
                        )
                    })
                    .collect();
                vec![(sql, Vec::new(), params)]
            }
        }
    }

    /// Ends a job whose every result came: finished here, or run afresh by a worker where
    /// what came back needs one (`Pipelined::needs_worker`, a batched lookup refused).
    /// `share`: PostgreSQL's time for it. Main thread, outside the fleet's borrow.
    pub fn land(self, mut results: Vec<RunResult>, share: Duration) {
        match self {
            // (A panic there counts as needing one: the worker's `finish` contains it.)
            Job::Run {
                client,
                deadline,
                run,
            } if catch(|| run.needs_worker(&results)).unwrap_or(true) => {
                Job::Run {
                    client,
                    deadline,
                    run,
                }
                .hand_to_workers();
            }
            Job::Run { client, run, .. } => {
                let sent = Sent::Ran {
                    results,
                    share,
                    conn: None,
                };
                client.answer(contained(|| Ok(run.finish(sent))));
            }
            Job::Lookups(mut lookups) if lookups.len() == 1 => {
                let Lookup { client, lookup, .. } = lookups.pop().expect("one lookup");
                let RowLookup { schema, pk, then } = lookup;
                let outcome = match results.pop() {
                    Some(Ok(rows)) => fetch::the_row(rows, &schema, &pk),
                    Some(Err(failure)) => Err(fetch::failed(failure, &schema)),
                    None => Err(Error::internal("a lookup's result went missing")),
                };
                client.answer(contained(|| Ok(then(outcome, schema, pk))));
            }
            Job::Lookups(lookups) => match results.pop() {
                Some(Ok(rows)) => land_batch(lookups, rows),
                // Refused (one key's value is not of its column's type, say): a worker
                // reads each key alone, so that only its own request fails.
                _ => Job::Lookups(lookups).hand_to_workers(),
            },
        }
    }

    /// Ends a job whose connection broke before every answer came: a worker runs it afresh
    /// while its client still waits (reads run twice come to the same: each is one
    /// statement in a READ ONLY transaction, and a fill's ticket, taken before the first
    /// send, still judges the later answer); a client past its deadline has the error.
    pub fn divert(self, why: &str) {
        let now = Instant::now();
        let failed = || Error::postgres(format!("PostgreSQL unavailable: {why}"));
        match self {
            Job::Run {
                client,
                deadline,
                run,
            } if now < deadline => Job::Run {
                client,
                deadline,
                run,
            }
            .hand_to_workers(),
            Job::Run { client, run, .. } => {
                let failed = Sent::Failed(failed());
                client.answer(contained(|| Ok(run.finish(failed))));
            }
            Job::Lookups(lookups) => {
                for l in lookups {
                    if now < l.deadline {
                        Job::Lookups(vec![l]).hand_to_workers();
                    } else {
                        // The lookup's fill (in `then`) is dropped, which answers its waiters.
                        l.client.answer(error_completion(failed()));
                    }
                }
            }
        }
    }

    /// Hands the job to the workers (never sent, or to be sent again there).
    pub fn hand_to_workers(self) {
        stats::MISSES_LOOP_TO_WORKERS.inc();
        match self {
            Job::Run {
                client,
                deadline,
                run,
            } => worker::resubmit_run(client, deadline, run),
            Job::Lookups(lookups) => {
                for Lookup {
                    client,
                    deadline,
                    lookup,
                } in lookups
                {
                    worker::resubmit_lookup(client, deadline, lookup);
                }
            }
        }
    }
}

/// Answers each lookup of a batch from `select_many_sql`'s rows: (ordinal, row JSON).
fn land_batch(lookups: Vec<Lookup>, rows: Vec<Row>) {
    let mut found: Vec<Result<Option<String>, Error>> =
        (0..lookups.len()).map(|_| Ok(None)).collect();
    for mut row in rows {
        let placed = row.int8(0).and_then(|ordinal| {
            let slot = usize::try_from(ordinal - 1)
                .ok()
                .filter(|slot| *slot < found.len())
                .ok_or_else(|| Error::internal("a batched lookup's ordinal is out of range"))?;
            Ok((slot, row.take_string(1)?))
        });
        match placed {
            Ok((slot, json)) => {
                let key = &lookups[slot].lookup;
                found[slot] = match found[slot] {
                    Ok(None) => Ok(Some(json)),
                    _ => Err(fetch::too_many_rows(&key.schema, &key.pk.json)),
                };
            }
            Err(e) => found.iter_mut().for_each(|f| *f = Err(e.clone())),
        }
    }
    for (Lookup { client, lookup, .. }, outcome) in lookups.into_iter().zip(found) {
        let RowLookup { schema, pk, then } = lookup;
        client.answer(contained(|| Ok(then(outcome, schema, pk))));
    }
}

fn param(p: &RunParam) -> Param {
    match p {
        RunParam::Text(value) => Param::Text(value.0.clone()),
        RunParam::Texts(values) => Param::TextArray(values.iter().cloned().map(Some).collect()),
    }
}
