//! What the event loop sends for a miss, and how each kind ends: a QUERY miss's runs
//! (finished as a worker finishes them), or READ and GET misses' row lookups (one key alone,
//! or the keys of one table read in one turn together, as a worker batches them). Every end
//! answers each client once, or hands it to the workers.

use crate::cache::worker::{self, Pipelined, RowLookup, Sent};
use crate::error::Error;
use crate::error::panic::catch;
use crate::model::key::CanonicalPk;
use crate::model::source::SourceId;
use crate::pg::fetch;
use crate::pg::pool::{RunParam, RunResult};
use crate::pg::row::Row;
use crate::pg::schema::TableSchema;
use crate::pg::wire::frontend::{Effects, Param, Parsing};
use crate::requests::blocked::{BlockedClient, Completion, contained, error_completion};
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

/// What a batch of keys' rows come to: each key's row, in order (None: no such row).
pub type Rows = Result<Vec<Option<String>>, Error>;

/// Makes a MULTIREAD's or MGET's completion from its keys' rows.
pub type ThenRows = Box<dyn FnOnce(Rows) -> Completion + Send>;

pub enum Job {
    /// A QUERY miss's runs.
    Run {
        client: BlockedClient,
        deadline: Instant,
        source: SourceId,
        run: Box<dyn Pipelined>,
    },
    /// Row lookups of one table: one (`select_one_sql`), or several keys of the same
    /// columns read in one statement (`select_many_sql`).
    Lookups(Vec<Lookup>),
    /// A MULTIREAD's or MGET's missed keys of one table, read in one statement.
    Many {
        client: BlockedClient,
        deadline: Instant,
        schema: Arc<TableSchema>,
        keys: Arc<[CanonicalPk]>,
        then: ThenRows,
    },
}

/// One request: its SQL, parameter types and values, and how it is parsed.
pub struct Request {
    pub sql: String,
    pub param_oids: Vec<u32>,
    pub params: Vec<Param>,
    pub parsing: Parsing,
    pub effects: Effects,
}

impl Job {
    /// The source whose database answers it.
    pub fn source(&self) -> SourceId {
        match self {
            Job::Run { source, .. } => *source,
            Job::Lookups(lookups) => lookups[0].lookup.schema.source,
            Job::Many { schema, .. } => schema.source,
        }
    }

    /// Notes that each client's job is under way (its queue stage ends).
    pub fn picked(&mut self) {
        match self {
            Job::Run { client, .. } | Job::Many { client, .. } => client.picked(),
            Job::Lookups(lookups) => lookups.iter_mut().for_each(|l| l.client.picked()),
        }
    }

    /// A row of its answer was longer than the event loop reads: its statement, or its
    /// table's lookups, go to the workers from now on (the job itself goes there with its
    /// connection's other jobs, `divert`).
    pub fn answered_too_large(&self) {
        let mark = |schema: &TableSchema| {
            (schema.stats.large_rows).store(true, std::sync::atomic::Ordering::Relaxed);
        };
        match self {
            Job::Run { run, .. } => run.answered_too_large(),
            Job::Lookups(lookups) => lookups.iter().for_each(|l| mark(&l.lookup.schema)),
            Job::Many { schema, .. } => mark(schema),
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
            && same_columns(&first.pk, &lookup.pk)
    }

    /// What it sends.
    pub fn requests(&mut self) -> Vec<Request> {
        match self {
            // A job that cannot say what to run runs nothing; `finish` reports it.
            Job::Run { run, .. } => catch(|| run.runs())
                .unwrap_or_default()
                .into_iter()
                .map(|run| Request {
                    params: run.params.iter().map(param).collect(),
                    sql: run.sql,
                    param_oids: run.types,
                    parsing: run.parsing,
                    effects: run.effects,
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
                vec![Request {
                    sql,
                    param_oids: Vec::new(),
                    params,
                    parsing: Parsing::Kept,
                    effects: schema.effects(),
                }]
            }
            Job::Lookups(lookups) => {
                let keys: Vec<&CanonicalPk> = lookups.iter().map(|l| &l.lookup.pk).collect();
                vec![select_many(&lookups[0].lookup.schema, &keys)]
            }
            Job::Many { schema, keys, .. } => {
                let keys: Vec<&CanonicalPk> = keys.iter().collect();
                vec![select_many(schema, &keys)]
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
                source,
                run,
            } if catch(|| run.needs_worker(&results)).unwrap_or(true) => {
                Job::Run {
                    client,
                    deadline,
                    source,
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
                let RowLookup {
                    schema, pk, then, ..
                } = lookup;
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
            Job::Many {
                client,
                schema,
                keys,
                then,
                ..
            } => {
                let rows = match results.pop() {
                    Some(Ok(rows)) => {
                        placed(rows, keys.len()).and_then(|found| many_rows(found, &schema, &keys))
                    }
                    Some(Err(failure)) => Err(fetch::failed(failure, &schema)),
                    None => Err(Error::internal("a batch's result went missing")),
                };
                client.answer(contained(|| Ok(then(rows))));
            }
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
                source,
                run,
            } if now < deadline => Job::Run {
                client,
                deadline,
                source,
                run,
            }
            .hand_to_workers(),
            Job::Run { client, run, .. } => {
                let failed = Sent::Failed(failed());
                client.answer(contained(|| Ok(run.finish(failed))));
            }
            Job::Many { deadline, .. } if now < deadline => self.hand_to_workers(),
            Job::Many { client, then, .. } => {
                let failed = failed();
                client.answer(contained(|| Ok(then(Err(failed)))));
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
        stats::of(self.source()).misses_loop_to_workers.inc();
        match self {
            Job::Run {
                client,
                deadline,
                source,
                run,
            } => worker::resubmit_run(client, deadline, source, run),
            Job::Many {
                client,
                deadline,
                schema,
                keys,
                then,
            } => worker::resubmit_work(
                client,
                deadline,
                schema.source,
                Box::new(move |conn| Ok(then(fetch::many(conn, &schema, &keys)))),
            ),
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

/// `select_many_sql` for `keys` (all of the same columns): one `text[]` per key column,
/// element i of each forming key i.
fn select_many(schema: &TableSchema, keys: &[&CanonicalPk]) -> Request {
    let sql = schema.select_many_sql(&keys[0].columns).into_owned();
    let params = (0..keys[0].columns.len())
        .map(|c| {
            Param::TextArray(
                keys.iter()
                    .map(|key| Some(key.columns[c].1.to_string()))
                    .collect(),
            )
        })
        .collect();
    Request {
        sql,
        param_oids: Vec::new(),
        params,
        parsing: Parsing::Kept,
        effects: schema.effects(),
    }
}

/// Whether keys can be read by one `select_many_sql` on the event loop: of a table (not a
/// view), all of the same columns, and few enough for one callback.
pub fn one_statement_reads(schema: &TableSchema, keys: &[CanonicalPk]) -> bool {
    schema.batchable
        && !keys.is_empty()
        && keys.len() <= MAX_KEYS
        && keys.iter().all(|key| same_columns(key, &keys[0]))
}

/// Whether two keys name the same columns (one `select_many_sql` reads both).
fn same_columns(a: &CanonicalPk, b: &CanonicalPk) -> bool {
    a.columns.len() == b.columns.len()
        && (a.columns.iter())
            .zip(&b.columns)
            .all(|((x, _), (y, _))| x == y)
}

/// `select_many_sql`'s rows (ordinal, row JSON) placed by ordinal: each key's rows.
fn placed(rows: Vec<Row>, keys: usize) -> Result<Vec<Vec<String>>, Error> {
    let mut found: Vec<Vec<String>> = vec![Vec::new(); keys];
    for mut row in rows {
        let ordinal = row.int8(0)?;
        let slot = usize::try_from(ordinal - 1)
            .ok()
            .filter(|slot| *slot < keys)
            .ok_or_else(|| Error::internal("a batched lookup's ordinal is out of range"))?;
        found[slot].push(row.take_string(1)?);
    }
    Ok(found)
}

/// At most one row per key, else the error `fetch::many` gives.
fn one_each(
    mut rows: Vec<String>,
    schema: &TableSchema,
    key: &CanonicalPk,
) -> Result<Option<String>, Error> {
    match rows.len() {
        0 => Ok(None),
        1 => Ok(rows.pop()),
        _ => Err(fetch::too_many_rows(schema, &key.json)),
    }
}

/// A MULTIREAD's rows: each key's row, or the first key's error.
fn many_rows(found: Vec<Vec<String>>, schema: &TableSchema, keys: &[CanonicalPk]) -> Rows {
    found
        .into_iter()
        .zip(keys)
        .map(|(rows, key)| one_each(rows, schema, key))
        .collect()
}

/// Answers each lookup of a batch from `select_many_sql`'s rows.
fn land_batch(lookups: Vec<Lookup>, rows: Vec<Row>) {
    let found: Vec<Result<Option<String>, Error>> = match placed(rows, lookups.len()) {
        Ok(found) => found
            .into_iter()
            .zip(&lookups)
            .map(|(rows, l)| one_each(rows, &l.lookup.schema, &l.lookup.pk))
            .collect(),
        Err(e) => lookups.iter().map(|_| Err(e.clone())).collect(),
    };
    for (Lookup { client, lookup, .. }, outcome) in lookups.into_iter().zip(found) {
        let RowLookup {
            schema, pk, then, ..
        } = lookup;
        client.answer(contained(|| Ok(then(outcome, schema, pk))));
    }
}

fn param(p: &RunParam) -> Param {
    match p {
        RunParam::Text(value) => Param::Text(value.0.clone()),
        RunParam::Texts(values) => Param::TextArray(values.iter().cloned().map(Some).collect()),
    }
}
