//! A small blocking connection pool. Connections are made by the worker that needs one (no
//! background threads, so unloading the module leaves nothing running), broken ones are
//! dropped when returned, and after a failed connect further attempts fail fast for a short
//! back-off instead of each waiting for its own timeout while PostgreSQL is down.
//!
//! Each source has its pool (`of`), made at load and dropped at unload. Its part holds it,
//! not the threads that use it: a worker borrows the pool of each job's source for that
//! job, and the change feed and the freshness prober the pool of theirs.

use crate::config::current;
use crate::config::{PgSettings, SslMode};
use crate::error::Error;
use crate::model::source::{PartRef, Parts, SourceId};
use crate::pg::circuit::{self, Circuit};
use crate::pg::errors::describe;
use crate::pg::prepared::{self, Parsing, Prepared};
use crate::pg::replication;
use crate::pg::row;
use crate::pg::session::{Failure, Session};
use crate::pg::shortage;
use crate::pg::text_value::TextValue;
use crate::pg::tls;
use crate::pg::undo::Effects;
use crate::stats;
use postgres_openssl::MakeTlsConnector;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_postgres::types::{Kind, ToSql, Type};
use tokio_postgres::{NoTls, Notification, Row, Statement};

/// How long a failed connect makes later ones fail fast, when it was slow to fail (a
/// PostgreSQL that refuses connections says so at once: nothing to spare there).
const CONNECT_BACKOFF: Duration = Duration::from_millis(250);
/// A connect failure quicker than this is a refusal, not a timeout: no back-off.
const SLOW_CONNECT_FAILURE: Duration = Duration::from_millis(100);

/// How much longer than its statement_timeout a query may go unanswered before the
/// connection is taken for silent (PostgreSQL itself answers a query at its timeout).
const SILENCE_MARGIN: Duration = Duration::from_secs(2);

/// Every source's pool while pgcache is loaded; the default source's slot inline.
static POOLS: Parts<RwLock<Option<Arc<Pool>>>> = Parts::new(RwLock::new(None));

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    POOLS.install(id, RwLock::new(None));
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    POOLS.forget_named(id);
}

/// Makes `pool` the pool of `source` (at load), dropping any it had.
pub fn install(source: SourceId, pool: Pool) {
    *POOLS.of(source).write().unwrap() = Some(Arc::new(pool));
}

/// Drops the pool of `source` (at unload, once nothing runs on it): its idle connections
/// close, and a module loaded again makes its own.
pub fn remove(source: SourceId) {
    POOLS.of(source).write().unwrap().take();
}

/// The pool of `source`, lent for a job or a thread's life; an error when there is none
/// (pgcache is unloading).
pub fn of(source: SourceId) -> Result<Arc<Pool>, Error> {
    POOLS
        .of(source)
        .read()
        .unwrap()
        .clone()
        .ok_or_else(|| Error::invalid("pgcache is shutting down"))
}

/// What it takes to open a session: the settings, the TLS set-up and the circuit its
/// sessions report to, shared by the pool and its connections (a connection found dead on
/// first use reconnects itself).
struct Connector {
    /// Whose database it is: its sessions run under its statement timeout and count in its
    /// figures.
    source: SourceId,
    settings: PgSettings,
    tls: Option<MakeTlsConnector>,
    circuit: PartRef<'static, Circuit>,
}

/// One PostgreSQL session with its prepared statements.
pub struct Connection {
    session: Session,
    connector: Arc<Connector>,
    application_name: String,
    statement_timeout_ms: u64,
    /// Statements by SQL text: a lookup is then one round trip instead of two.
    statements: Prepared<Statement>,
    /// How long one exchange may go unanswered before the peer is taken for silent.
    patience: Duration,
    /// Lent out after idling in the pool and not used since: if it turns out dead (the
    /// server restarted, a failover, an idle reset), it is replaced and the read retried.
    idled: bool,
    /// `Circuit::outages` when it was opened: one opened before an outage is dropped
    /// instead of lent out (it may be silent, and would cost a request its timeout).
    outages: u64,
}

/// What one statement of a pipeline came to: its rows, or why it failed.
pub type RunResult = Result<Vec<row::Row>, Failure>;

/// One statement of a pipeline (`Connection::query_read_only_pipelined`) and its
/// parameters.
pub struct ReadOnlyRun {
    pub sql: String,
    /// Its parameters' types (`Connection::query_read_only`); none: as PostgreSQL infers.
    pub types: Vec<u32>,
    pub params: Vec<RunParam>,
    pub parsing: Parsing,
    /// What it must undo of its session (`pg::undo`).
    pub effects: Effects,
}

/// A parameter of a `ReadOnlyRun`, in a form any connection can send: a worker's session
/// through the driver, or one the event loop speaks on.
pub enum RunParam {
    /// A value as its text, whatever type PostgreSQL inferred for it (`TextValue`).
    Text(TextValue),
    /// A `text[]` (a batch's parameter sets, a column each).
    Texts(Vec<String>),
}

impl ReadOnlyRun {
    fn values(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| match p {
                RunParam::Text(value) => value as &(dyn ToSql + Sync),
                RunParam::Texts(values) => values as &(dyn ToSql + Sync),
            })
            .collect()
    }
}

#[derive(Default)]
struct State {
    idle: Vec<Connection>,
    open: usize,
    in_use: usize,
    /// The last slow connect failure: when, under how many of the circuit's successes, what.
    last_connect_failure: Option<(Instant, u64, Error)>,
    /// A connect is running past the deadline of the request that started it. One at a
    /// time: each holds a worker up to pg_connect_timeout_ms, and a PostgreSQL that accepts
    /// slowly (or not at all) must not hold them all, nor an unload, that long.
    connecting_past_deadline: bool,
}

/// Connection counts, for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub size: usize,
    pub open: usize,
    pub in_use: usize,
    pub idle: usize,
}

pub struct Pool {
    connector: Arc<Connector>,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
}

/// A connection on loan; it goes back to the pool when dropped.
pub struct PooledClient<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl Drop for PooledClient<'_> {
    fn drop(&mut self) {
        let conn = self.conn.take().expect("present until drop");
        let mut state = self.pool.state.lock().unwrap();
        state.in_use -= 1;
        // A panic may have left the session inside a transaction it began (READ WRITE, to
        // compile a function body): the next statement sent alone would run in it.
        if conn.session.is_closed() || std::thread::panicking() {
            state.open -= 1;
        } else {
            state.idle.push(conn);
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

/// The pool's one connect allowed past its request's deadline, released when dropped.
struct PastDeadline<'a>(&'a Pool);

impl<'a> PastDeadline<'a> {
    fn claim(pool: &'a Pool, state: &mut State) -> PastDeadline<'a> {
        state.connecting_past_deadline = true;
        PastDeadline(pool)
    }
}

impl Drop for PastDeadline<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap().connecting_past_deadline = false;
        // Requests waiting for it may open connections of their own now.
        self.0.freed.notify_all();
    }
}

fn tls_connector(settings: &PgSettings) -> Result<Option<MakeTlsConnector>, Error> {
    let Some(connector) = tls::connector(settings)? else {
        return Ok(None);
    };
    let mut connector = MakeTlsConnector::new(connector);
    if !tls::verifies_host_name(settings) {
        connector.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(Some(connector))
}

impl Pool {
    /// A pool of `source`, of at most `max` connections to the database `settings` name,
    /// whose sessions report to the source's circuit.
    pub fn new(source: SourceId, settings: PgSettings, max: usize) -> Result<Pool, Error> {
        Ok(Pool {
            connector: Arc::new(Connector {
                source,
                tls: tls_connector(&settings)?,
                settings,
                circuit: circuit::of(source),
            }),
            max,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        })
    }

    /// A pool of `source` to another server than its PostgreSQL (a standby), whose failures
    /// a circuit of its own counts: a standby down is no outage of the source.
    pub fn apart(source: SourceId, settings: PgSettings, max: usize) -> Result<Pool, Error> {
        Ok(Pool {
            connector: Arc::new(Connector {
                source,
                tls: tls_connector(&settings)?,
                settings,
                circuit: PartRef::Named(Arc::new(Circuit::new())),
            }),
            max,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        })
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.state.lock().unwrap();
        PoolStats {
            size: self.max,
            open: state.open,
            in_use: state.in_use,
            idle: state.idle.len(),
        }
    }

    /// Borrows a connection, connecting if none is idle and the pool has room; waits for one
    /// to be returned until `deadline`.
    pub fn get(&self, deadline: Instant) -> Result<PooledClient<'_>, Error> {
        let mut state = self.state.lock().unwrap();
        let conn = loop {
            if let Some(mut conn) = state.idle.pop() {
                // What the server sent while it idled is read now: a connection the server
                // closed (a restart) is dropped here instead of failing a request.
                if conn.outages != self.connector.circuit.outages() || !conn.session.still_open() {
                    state.open -= 1;
                    continue;
                }
                conn.idled = true;
                state.in_use += 1;
                break conn;
            }
            // A connect that needs longer than the request has left may run to
            // pg_connect_timeout_ms (cut short at each request's deadline, none would open
            // where opening takes longer than request_timeout_ms: TLS and authentication far
            // away), but one at a time: a PostgreSQL that accepts slowly, or not at all, must
            // not hold every worker (nor an unload) that long. While one runs, requests that
            // would need another wait for it, or for a connection returned.
            let needs_longer = Instant::now() + self.connector.settings.connect_timeout > deadline;
            if state.open < self.max && !(needs_longer && state.connecting_past_deadline) {
                // Not once PostgreSQL answered since (the circuit's successes moved): a connect
                // begun while it was frozen fails after it is back.
                if let Some((at, successes, reason)) = &state.last_connect_failure
                    && at.elapsed() < CONNECT_BACKOFF
                    && *successes == self.connector.circuit.successes()
                {
                    return Err(reason.clone());
                }
                state.open += 1;
                state.in_use += 1;
                let past_deadline = needs_longer.then(|| PastDeadline::claim(self, &mut state));
                drop(state);
                break self.open(deadline, past_deadline)?;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::postgres(if state.connecting_past_deadline {
                    "a connection to PostgreSQL is still being opened (it takes longer than \
                     request_timeout_ms); it serves the next requests once open"
                        .to_string()
                } else {
                    format!(
                        "all {} PostgreSQL connections stayed busy until the request timed \
                         out; raise pool_size or check for slow queries",
                        self.max
                    )
                }));
            }
            state = self.freed.wait_timeout(state, deadline - now).unwrap().0;
        };
        let mut client = PooledClient {
            pool: self,
            conn: Some(conn),
        };
        client.patience = patience(self.connector.source);
        client.apply_statement_timeout()?;
        Ok(client)
    }

    /// Opens a connection counted as open and in use. With `past_deadline` it may take its
    /// whole pg_connect_timeout_ms; opened after the request's deadline, it goes to the pool
    /// for the next request.
    fn open(
        &self,
        deadline: Instant,
        past_deadline: Option<PastDeadline>,
    ) -> Result<Connection, Error> {
        let started = Instant::now();
        let connect_by = match past_deadline {
            Some(_) => started + self.connector.settings.connect_timeout,
            None => deadline,
        };
        match self.connector.connect(connect_by, "pgcache") {
            Ok(conn) if Instant::now() >= deadline => {
                self.state.lock().unwrap().last_connect_failure = None;
                // Back to the pool, as a loan that ended (before the claim is released, so
                // that the requests it wakes find it).
                drop(PooledClient {
                    pool: self,
                    conn: Some(conn),
                });
                Err(Error::postgres(
                    "connecting to PostgreSQL took longer than the request could wait; \
                     the connection is kept for the next request",
                ))
            }
            Ok(conn) => {
                self.state.lock().unwrap().last_connect_failure = None;
                Ok(conn)
            }
            Err(reason) => {
                let mut state = self.state.lock().unwrap();
                state.open -= 1;
                state.in_use -= 1;
                if started.elapsed() >= SLOW_CONNECT_FAILURE {
                    state.last_connect_failure = Some((
                        Instant::now(),
                        self.connector.circuit.successes(),
                        reason.clone(),
                    ));
                }
                drop(state);
                self.freed.notify_one();
                Err(reason)
            }
        }
    }

    /// A connection outside the pool's count, for a long-lived user (the listener), shown
    /// in pg_stat_activity as `application_name`.
    pub fn connect_dedicated(
        &self,
        timeout: Duration,
        application_name: &str,
    ) -> Result<Connection, Error> {
        self.connector
            .connect(Instant::now() + timeout, application_name)
    }

    /// A replication connection (`replication=database`) with the pool's settings, TLS and
    /// password, for the replication source.
    pub fn connect_replication(
        &self,
        application_name: &str,
    ) -> Result<replication::connection::Connection, replication::connection::Failure> {
        let s = &self.connector.settings;
        replication::connection::Connection::connect(
            s,
            self.connector.tls.as_ref(),
            application_name,
            s.connect_timeout,
            self.connector.circuit.clone(),
        )
    }
}

/// How long a query to the database of `source` may go unanswered: PostgreSQL answers by
/// its statement_timeout (with none, by the request's), so silence past that and a margin is
/// a dead peer.
pub fn patience(source: SourceId) -> Duration {
    let statement_timeout_ms = match current::of(source).statement_timeout_ms() {
        0 => current::request_timeout_ms(),
        ms => ms,
    };
    Duration::from_millis(statement_timeout_ms) + SILENCE_MARGIN
}

impl Connector {
    fn connect(
        self: &Arc<Self>,
        deadline: Instant,
        application_name: &str,
    ) -> Result<Connection, Error> {
        let s = &self.settings;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = s
            .connect_timeout
            .min(remaining)
            .max(Duration::from_millis(10));
        let statement_timeout_ms = current::of(self.source).statement_timeout_ms();
        let mut config = tokio_postgres::Config::new();
        config
            .host(&s.host)
            .port(s.port)
            .dbname(&s.database)
            .user(&s.user)
            .application_name(application_name)
            .connect_timeout(timeout)
            // A peer that vanished (no reset) is noticed by the kernel within seconds, on
            // idle connections (keepalives) and on ones with data in flight (user timeout).
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(8))
            // Every transaction pgcache does not begin READ WRITE itself is READ ONLY: a
            // QUERY's statement then runs as one statement, in a READ ONLY transaction of its
            // own, without a BEGIN and a COMMIT around it (`Session::query_read_only`).
            // Values are spelled one way whatever the server sets (`settings`). Every
            // run of a prepared statement is planned for its values, as the SQL an ORM
            // sends with its values in it is: a generic plan, chosen after five runs, may
            // evaluate a WHERE's conditions in another order, and fail on a row whose
            // value a cast refuses (`'NaN'::numeric::integer`) where the application's
            // own read answers.
            .options(format!(
                "-c statement_timeout={statement_timeout_ms} -c default_transaction_read_only=on \
                 -c plan_cache_mode=force_custom_plan {}",
                super::settings::as_options()
            ))
            .ssl_mode(match s.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        if let Some(password) = s.password() {
            config.password(password);
        }
        let circuit = self.circuit.clone();
        let session = match &self.tls {
            None => Session::connect(&config, NoTls, timeout, circuit),
            Some(tls) => Session::connect(&config, tls.clone(), timeout, circuit),
        };
        let outages = self.circuit.outages();
        session
            .inspect(|_| {
                self.circuit.succeeded();
            })
            .map(|session| Connection {
                session,
                connector: Arc::clone(self),
                application_name: application_name.to_string(),
                statement_timeout_ms,
                statements: Prepared::new(),
                patience: patience(self.source),
                idled: false,
                outages,
            })
            .map_err(|e| {
                // This machine ran short (of file descriptors, say): nothing is known of
                // PostgreSQL, and the circuit does not hear of it (`shortage`).
                if let Some(short) = shortage::of(&e) {
                    let message = format!(
                        "cannot open a connection to PostgreSQL at {}:{} ({}): {short}",
                        s.host,
                        s.port,
                        describe(&e)
                    );
                    stats::of(self.source).pg_connects_short.inc();
                    redis_module::logging::log_warning(format!("pgcache: {message}"));
                    return Error::postgres(message).caused_by(e);
                }
                let message = format!(
                    "PostgreSQL unavailable at {}:{}: {}",
                    s.host,
                    s.port,
                    describe(&e)
                );
                // Refused: PostgreSQL is down. Timed out: it may only be busy, unless no
                // connection got an answer for as long either.
                if e.timed_out() {
                    self.circuit.went_silent(&message, timeout);
                } else {
                    self.circuit.failed(&message);
                }
                Error::postgres(message).caused_by(e)
            })
    }
}

impl Connection {
    /// Runs `sql` as a prepared statement, preparing it once per connection.
    pub fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Failure> {
        self.with_retry(|conn| conn.query_once(sql, params))
    }

    /// Runs `sql` as a prepared statement in a READ ONLY transaction of its own, in one
    /// round trip (PGCACHE.QUERY's statements; `Session::query_read_only`), its parameters
    /// of the `types` (oids) it was learned with: a table changed since (a column retyped)
    /// fails it (`text = integer`), where parameters typed afresh would bind values
    /// canonicalised for the old types. Prepared once per connection and types, or for
    /// each run (`parsing`).
    pub fn query_read_only(
        &mut self,
        sql: &str,
        types: &[u32],
        parsing: Parsing,
        effects: Effects,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Failure> {
        self.with_retry(|conn| {
            let statement = conn.prepared_as(sql, types, parsing)?;
            let patience = conn.patience;
            let result = conn
                .session
                .query_read_only(&statement, params, effects, patience);
            if result.is_err() {
                // The tables may have changed under the statement; prepare afresh next time.
                conn.statements.forget(&prepared_key(sql, types));
            }
            result
        })
    }

    /// Runs each of `runs` in a READ ONLY transaction of its own, all sent in one round trip
    /// (`Session::query_read_only_pipelined`): each its rows or its own failure, in order,
    /// and how long PostgreSQL took for them (the round trip, prepares aside). A statement
    /// that cannot be prepared fails alone; a lost session fails them all.
    pub fn query_read_only_pipelined<R: std::borrow::Borrow<ReadOnlyRun>>(
        &mut self,
        runs: &[R],
    ) -> Result<(Vec<RunResult>, Duration), Failure> {
        self.with_retry(|conn| {
            let mut results: Vec<Option<RunResult>> = runs.iter().map(|_| None).collect();
            let mut ready = Vec::with_capacity(runs.len());
            for (i, run) in runs.iter().map(R::borrow).enumerate() {
                match conn.prepared_as(&run.sql, &run.types, run.parsing) {
                    Ok(statement) => ready.push((i, statement)),
                    Err(failure) if failure.session_lost() => return Err(failure),
                    Err(failure) => results[i] = Some(Err(failure)),
                }
            }
            let items: Vec<(&Statement, Vec<&(dyn ToSql + Sync)>, Effects)> = ready
                .iter()
                .map(|(i, statement)| {
                    let run = runs[*i].borrow();
                    (statement, run.values(), run.effects)
                })
                .collect();
            // PostgreSQL runs them one after another: each may take its statement_timeout.
            let patience = conn.patience * items.len().max(1) as u32;
            let sent = Instant::now();
            let ran = conn.session.query_read_only_pipelined(&items, patience)?;
            let took = sent.elapsed();
            for ((i, _), result) in ready.iter().zip(ran) {
                if result.is_err() {
                    // The tables may have changed under the statement; prepare afresh.
                    conn.statements.forget(&prepared_key(
                        &runs[*i].borrow().sql,
                        &runs[*i].borrow().types,
                    ));
                }
                results[*i] =
                    Some(result.map(|rows| rows.into_iter().map(row::Row::Driver).collect()));
            }
            let results = results
                .into_iter()
                .map(|r| r.expect("every run has its result"))
                .collect();
            Ok((results, took))
        })
    }

    /// `sql` prepared on this connection, once.
    fn prepared(&mut self, sql: &str) -> Result<tokio_postgres::Statement, Failure> {
        self.prepared_as(sql, &[], Parsing::Kept)
    }

    /// `sql` prepared on this connection with parameters of the `types` (oids; none: as
    /// PostgreSQL infers them), once per text and types, or afresh for `Parsing::EachRun`
    /// (closed once the run drops it).
    fn prepared_as(
        &mut self,
        sql: &str,
        types: &[u32],
        parsing: Parsing,
    ) -> Result<tokio_postgres::Statement, Failure> {
        let key = prepared_key(sql, types);
        // Read before the Parse: DDL applied during it has the statement prepared again.
        let catalog = prepared::catalog();
        let kept = parsing == Parsing::Kept;
        if kept && let Some(statement) = self.statements.fresh(&key, Instant::now(), catalog) {
            return Ok(statement);
        }
        let types: Vec<Type> = types.iter().map(|oid| type_of_oid(*oid)).collect();
        let statement = self.session.prepare_typed(sql, &types, self.patience)?;
        if kept {
            self.statements
                .keep(&key, statement.clone(), Instant::now(), catalog);
        }
        Ok(statement)
    }

    fn query_once(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Failure> {
        let statement = self.prepared(sql)?;
        let result = self.session.query(&statement, params, self.patience);
        if result.is_err() {
            // The table may have changed under the statement; prepare afresh next time.
            self.statements.forget(sql);
        }
        result
    }

    /// Prepares `sql` without running it: what PostgreSQL makes of its parameters and
    /// columns (PGCACHE.QUERY learns a statement's parameter types this way).
    pub fn prepare(&mut self, sql: &str) -> Result<tokio_postgres::Statement, Failure> {
        let patience = self.patience;
        self.with_retry(|conn| conn.session.prepare(sql, patience))
    }

    /// Runs statements that return no rows (`LISTEN`, `SET`, `SELECT 1`).
    pub fn batch_execute(&mut self, sql: &str) -> Result<(), Failure> {
        let patience = self.patience;
        self.with_retry(|conn| conn.session.batch_execute(sql, patience))
    }

    /// Runs `exchange`; on a connection lent out after idling that turns out dead on this
    /// first use (PostgreSQL restarted, failed over, or reset idle connections), connects
    /// again and runs it once more: pool work is reads, which may be repeated. A server
    /// that refused the query itself is not retried, nor is any later use.
    fn with_retry<R>(
        &mut self,
        mut exchange: impl FnMut(&mut Connection) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        let first_after_idling = std::mem::replace(&mut self.idled, false);
        let result = exchange(self);
        let failure = match self.counted(result) {
            Err(failure) if first_after_idling && failure.session_lost() => failure,
            result => return result,
        };
        let deadline = Instant::now() + self.connector.settings.connect_timeout;
        match self.connector.connect(deadline, &self.application_name) {
            Ok(fresh) => {
                stats::of(self.connector.source).pg_retries.inc();
                *self = fresh;
                let result = exchange(self);
                self.counted(result)
            }
            Err(_) => Err(failure),
        }
    }

    /// Counts a connection given up for silence (STATS `pg_silent_connections`).
    fn counted<R>(&self, result: Result<R, Failure>) -> Result<R, Failure> {
        if let Err(failure) = &result
            && failure.is_silent()
        {
            stats::of(self.connector.source).pg_silent_connections.inc();
            if let Failure::Silent(limit) = failure {
                let reason = format!("PostgreSQL stopped answering: {failure}");
                self.connector.circuit.went_silent(&reason, *limit);
            }
        }
        result
    }

    /// How long one exchange may go unanswered before the connection is given up.
    pub fn set_patience(&mut self, patience: Duration) {
        self.patience = patience;
    }

    /// The next notification (LISTEN), waiting at most `wait`; None when none came.
    pub fn next_notification(&mut self, wait: Duration) -> Result<Option<Notification>, Failure> {
        self.session.next_notification(wait)
    }

    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// Brings the session's statement_timeout in line with the setting after CONFIG SET.
    fn apply_statement_timeout(&mut self) -> Result<(), Error> {
        let wanted = current::of(self.connector.source).statement_timeout_ms();
        if self.statement_timeout_ms != wanted {
            self.batch_execute(&format!("SET statement_timeout = {wanted}"))
                .map_err(|e| {
                    let message = format!("PostgreSQL unavailable: {}", describe(&e));
                    Error::postgres(message).caused_by(e)
                })?;
            self.statement_timeout_ms = wanted;
        }
        Ok(())
    }
}

impl Deref for PooledClient<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until drop")
    }
}

impl DerefMut for PooledClient<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("present until drop")
    }
}

/// The key a statement prepared with parameters of `types` is kept under: a statement
/// learned again with other types is prepared again.
fn prepared_key(sql: &str, types: &[u32]) -> String {
    if types.is_empty() {
        return sql.to_string();
    }
    let types: Vec<String> = types.iter().map(u32::to_string).collect();
    format!("{sql}\0{}", types.join(","))
}

/// The type of `oid` as the driver names it: built in, or one only its oid says (the
/// driver sends the oid alone, and learns the rest from the server).
fn type_of_oid(oid: u32) -> Type {
    Type::from_oid(oid)
        .unwrap_or_else(|| Type::new(oid.to_string(), oid, Kind::Pseudo, String::new()))
}
