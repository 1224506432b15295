//! One round on its servers: the statements learned, every write in turn with a phase of
//! checks after each (`checks`), and now and then a fault around a phase (`faults`).

use crate::checks;
use crate::faults;
use crate::{
    Case, Failure, Feature, Gen, RunOptions, Running, Stats, excluded, explain_tables, oracle,
    oracle_session, phase_rng, plan, reason_kind, row_expectations, schema,
};
use pgcache_testkit::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A round under way: its servers, its connections, what is live and what was written.
pub struct Runner<'a> {
    pub running: &'a mut Running,
    pub case: &'a Case,
    /// What may be drawn (the generator's exclusions).
    pub g: Gen,
    /// Replication mode: calls carry AFTER the last write's position.
    pub positions: bool,
    pub con: redis::Connection,
    pub oracle_pg: postgres::Client,
    pub writer: postgres::Client,
    pub superwriter: Option<postgres::Client>,
    /// Each live statement with its precision.
    pub live: Vec<(usize, String)>,
    /// The features of the writes committed so far.
    pub written: BTreeSet<Feature>,
}

pub fn run_on(
    running: &mut Running,
    case: &Case,
    options: &RunOptions,
    stats: &mut Stats,
) -> Result<(), Failure> {
    let mut runner = Runner::new(running, case, options, stats);
    let checks_at_start = stats.checks;
    runner.phase(stats, None, None)?;
    for (w, write) in case.writes.iter().enumerate() {
        if stats.checks - checks_at_start >= options.max_checks
            || (runner.live.is_empty() && !case.statements.is_empty())
        {
            break;
        }
        let lsn = runner.write(w, write, options, stats)?;
        runner.phase(stats, Some(w), Some(&lsn))?;
    }
    assert!(
        runner.running.stack.redis.log().find("panicked").is_none(),
        "the server panicked"
    );
    Ok(())
}

impl<'a> Runner<'a> {
    fn new(
        running: &'a mut Running,
        case: &'a Case,
        options: &RunOptions,
        stats: &mut Stats,
    ) -> Runner<'a> {
        let positions = invalidation_source() == "replication";
        let source = case.round.source();
        let mut con = running.stack.con();
        config_set(&mut con, "pgcache.after_wait_ms", "1000").unwrap();
        let mut oracle_pg = oracle_session(&running.stack, case);
        let writer = running.stack.pg.client_of(case.round.database());
        let mut live = Vec::new();
        for (i, s) in case.statements.iter().enumerate() {
            let (sql, params) = s.render(0, true);
            if let Err(e) = oracle(&mut oracle_pg, &sql, &params) {
                *stats.statements.entry("invalid".into()).or_default() += 1;
                if options.verbose {
                    eprintln!("  statement {i} invalid in PostgreSQL ({e}): {sql}");
                }
                continue;
            }
            let (precision, reason, tables) = explain_tables(&mut con, source, &sql);
            *stats.statements.entry(precision.clone()).or_default() += 1;
            let keyless =
                case.schema.tables.iter().any(|t| {
                    !t.keyed && t.layout == schema::Layout::Plain && tables.contains(&t.name)
                });
            if keyless {
                *stats.keyless.entry(precision.clone()).or_default() += 1;
            }
            if let Some(r) = &reason {
                let kinds = if precision == "refused" {
                    &mut stats.refusals
                } else {
                    &mut stats.table_reasons
                };
                *kinds.entry(reason_kind(r)).or_default() += 1;
            }
            if options.verbose {
                eprintln!("  statement {i} [{precision}] {sql} {params:?}");
            }
            if precision != "refused" {
                live.push((i, precision));
            }
        }
        Runner {
            running,
            case,
            g: Gen::new(0, excluded(), positions),
            positions,
            con,
            oracle_pg,
            writer,
            superwriter: None,
            live,
            written: BTreeSet::new(),
        }
    }

    /// The source every call names, if not the default.
    pub fn source(&self) -> Option<&'static str> {
        self.case.round.source()
    }

    /// The connections to the servers again (after a restart of either).
    pub fn reconnect(&mut self) {
        self.con = self.running.stack.con();
        config_set(&mut self.con, "pgcache.after_wait_ms", "1000").unwrap();
        self.oracle_pg = oracle_session(&self.running.stack, self.case);
        self.writer = self.running.stack.pg.client_of(self.case.round.database());
        self.superwriter = None;
    }

    /// Commits (or rolls back) write `w`; the log's position after it.
    fn write(
        &mut self,
        w: usize,
        write: &crate::writes::Write,
        options: &RunOptions,
        stats: &mut Stats,
    ) -> Result<String, Failure> {
        let db = self.case.round.database();
        let client = if write.superuser {
            let pg = &self.running.stack.pg;
            self.superwriter.get_or_insert_with(|| pg.superuser_of(db))
        } else {
            &mut self.writer
        };
        match client.batch_execute(&write.sql) {
            Ok(()) if write.sql.ends_with("ROLLBACK;") => stats.writes_rolled_back += 1,
            Ok(()) => {
                stats.writes_committed += 1;
                if write.sql.contains("CREATE ") || write.sql.contains("ALTER ") {
                    stats.ddl += 1;
                }
                self.written.extend(write.features.iter().copied());
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK");
                let e = e
                    .as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string());
                // Watching a table must never make PostgreSQL refuse a write to it.
                if e.contains("replica identity") {
                    return Err(Failure {
                        statement: usize::MAX,
                        variant: 0,
                        after_write: Some(w),
                        message: format!("PostgreSQL refused a write to a watched table: {e}"),
                    });
                }
                stats.writes_refused += 1;
                if options.verbose {
                    eprintln!("  write {w} refused ({e}): {}", write.sql);
                }
            }
        }
        client.batch_execute("RESET ROLE; RESET ALL").unwrap();
        Ok(self
            .writer
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .unwrap()
            .get(0))
    }

    /// PostgreSQL's answer to every variant of every live statement now.
    fn expectations(&mut self) -> Vec<checks::Expected> {
        let mut exps = Vec::new();
        for (i, _) in &self.live {
            let s = &self.case.statements[*i];
            for v in 0..s.variants {
                let (sql, params) = s.render(v, true);
                let (page, columns) = match oracle(&mut self.oracle_pg, &sql, &params) {
                    Ok(answer) => answer,
                    // The write made it invalid (a table renamed away): both may refuse.
                    Err(_) => continue,
                };
                let full = if s.limited() {
                    let (unlimited, uparams) = s.render(v, false);
                    match oracle(&mut self.oracle_pg, &unlimited, &uparams) {
                        Ok((full, _)) => full,
                        Err(_) => continue,
                    }
                } else {
                    page.clone()
                };
                exps.push(checks::Expected {
                    stmt: *i,
                    variant: v,
                    sql,
                    params,
                    page,
                    full,
                    columns,
                });
            }
        }
        exps
    }

    /// The checks after write `after_write` (None: before any): PostgreSQL asked first, then
    /// pgcache as the phase's plan says, with a fault around it now and then.
    fn phase(
        &mut self,
        stats: &mut Stats,
        after_write: Option<usize>,
        lsn: Option<&str>,
    ) -> Result<(), Failure> {
        let number = after_write.map_or(0, |w| w + 1);
        let mut rng = phase_rng(self.case, number);
        let fail = |message: String| Failure {
            statement: usize::MAX,
            variant: 0,
            after_write,
            message,
        };
        let mut phase_features = BTreeSet::new();
        if self.case.round.workers_only {
            phase_features.insert(Feature::WorkersOnly);
        }
        // Faults first: what they leave behind is what the checks see.
        let exps = self.expectations();
        if number > 0 && rng.chance(2) && self.g.feature_allowed(Feature::PgRestart) {
            faults::pg_restart(self).map_err(fail)?;
            phase_features.insert(Feature::PgRestart);
        }
        if self.positions
            && number > 0
            && rng.chance(2)
            && self.g.feature_allowed(Feature::RdbRestart)
        {
            faults::rdb_restart(self, lsn).map_err(fail)?;
            phase_features.insert(Feature::RdbRestart);
        }
        let shortage = (number > 0 && rng.chance(3) && self.g.feature_allowed(Feature::FdShortage))
            .then(|| faults::Shortage::begin(self))
            .flatten();
        if shortage.is_some() {
            phase_features.insert(Feature::FdShortage);
        }
        let rows = row_expectations(&mut rng, self.case, &mut self.oracle_pg);
        if rng.chance(5) && self.g.feature_allowed(Feature::Tags) {
            // A tag's entries dropped between phases: answers stay PostgreSQL's.
            let _: redis::RedisResult<redis::Value> = redis::cmd("PGCACHE.INVALIDATE")
                .arg("TAG")
                .arg(rng.pick(&["ta", "tb"]))
                .query(&mut self.con);
            phase_features.insert(Feature::Tags);
        }
        let mut plan = plan(&mut rng, &self.g, &exps, &rows, &mut phase_features);
        if shortage.is_some()
            && let checks::Plan::Concurrent {
                clients, leavers, ..
            } = plan
        {
            // Clients would need connections redis-server cannot accept now: the same calls
            // one after another on the connection it has.
            let mut asks: Vec<checks::Ask> = leavers;
            asks.extend(clients.into_iter().flatten());
            plan = checks::Plan::Sequential(asks);
            for f in [
                Feature::ConcurrentClients,
                Feature::Coalesced,
                Feature::Batched,
                Feature::LeaderLeaves,
            ] {
                phase_features.remove(&f);
            }
        }
        let source = self.source();
        let cx = checks::Context {
            port: self.running.stack.redis.port,
            source,
            after: if self.positions { lsn } else { None },
            prefix: match source {
                None => "pg_cache:".to_string(),
                Some(name) => format!("pg_cache:@{name}:"),
            },
        };
        let replies = checks::run(&cx, &plan, &exps, &rows, &mut self.con);
        let verdicts: Vec<_> = replies
            .into_iter()
            .map(|(ask, reply)| {
                let mut verdict = checks::judge(&ask, &reply, &exps, &rows, &self.case.statements);
                if verdict
                    .as_ref()
                    .is_err_and(|e| e.starts_with("pgcache's error") && schema_changed(e))
                {
                    // Run before the feed reported the DDL that changed its tables (a feed
                    // held up past after_wait_ms): PostgreSQL refuses the statement as
                    // learned, and the next call learns it again (docs/limits.md).
                    let reply =
                        query_through_interrupts(&cx.command(&ask, &exps, &rows), &mut self.con);
                    verdict = checks::judge(&ask, &reply, &exps, &rows, &self.case.statements);
                }
                if verdict.is_err() && !self.positions && lsn.is_some() {
                    // Notify mode has no positions: the answer must come within a deadline.
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while verdict.is_err() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                        let reply = query_through_interrupts(
                            &cx.command(&ask, &exps, &rows),
                            &mut self.con,
                        );
                        verdict = checks::judge(&ask, &reply, &exps, &rows, &self.case.statements);
                    }
                }
                (ask, verdict)
            })
            .collect();
        if let Some(shortage) = shortage {
            shortage.end(self).map_err(fail)?;
        }
        let mut dropped = BTreeSet::new();
        for (ask, verdict) in verdicts {
            let (statement, variant) = match &ask {
                checks::Ask::Query { e, .. } => (Some(exps[*e].stmt), exps[*e].variant),
                _ => (None, 0),
            };
            match verdict {
                Ok(()) => {}
                // Out of file descriptors, pgcache said so: an error of this machine, no
                // wrong answer (the circuit's state is checked at the shortage's end).
                Err(e)
                    if phase_features.contains(&Feature::FdShortage)
                        && e.contains("out of file descriptors") =>
                {
                    continue;
                }
                Err(e)
                    if e.starts_with("pgcache's error")
                        && statement.is_some_and(|i| {
                            let sql = self.case.statements[i].render(0, true).0;
                            explain_tables(&mut self.con, source, &sql).0 == "refused"
                        }) =>
                {
                    // DDL made it uncacheable (a column retyped, a function overloaded):
                    // refused, as EXPLAIN now says, and no longer live.
                    dropped.insert(statement.unwrap());
                    *stats.refusals.entry(reason_kind(&e)).or_default() += 1;
                    continue;
                }
                Err(e) => {
                    // The server's own account of the moments before, for a failure to be
                    // read without running it again.
                    let log = self.running.stack.redis.log();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    return Err(Failure {
                        statement: statement.unwrap_or(usize::MAX),
                        variant,
                        after_write,
                        message: format!(
                            "{ask:?}: {e}\n  the server's log, last first:\n    {}",
                            tail.join("\n    ")
                        ),
                    });
                }
            }
            stats.checks += 1;
            let mut features: BTreeSet<Feature> =
                self.case.schema_features.iter().copied().collect();
            features.extend(self.written.iter().copied());
            features.extend(phase_features.iter().copied());
            checks::drawn(&ask, self.positions && lsn.is_some(), &mut features);
            if let Some(i) = statement {
                features.extend(self.case.statements[i].features.iter().copied());
                if self.live.iter().any(|(l, p)| *l == i && p == "row") {
                    stats.checks_row += 1;
                }
            }
            stats.coverage.add(&features);
        }
        self.live.retain(|(i, _)| !dropped.contains(i));
        Ok(())
    }
}

/// Whether PostgreSQL refused a statement for tables that changed under it (the SQLSTATEs
/// after which pgcache forgets a statement, to learn it again at the next call).
fn schema_changed(error: &str) -> bool {
    ["42P01", "42703", "42804", "42883"]
        .iter()
        .any(|code| error.contains(&format!("(SQLSTATE {code})")))
}
