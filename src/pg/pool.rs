//! A small blocking connection pool. Connections are made by the worker that needs one (no
//! background threads, so unloading the module leaves nothing running), broken ones are
//! dropped when returned, and after a failed connect further attempts fail fast for a short
//! back-off instead of each waiting for its own timeout while PostgreSQL is down.

use crate::config::{PgSettings, SslMode};
use crate::error::Error;
use crate::pg::errors::describe;
use crate::tunables;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};
use postgres_openssl::MakeTlsConnector;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a failed connect makes later ones fail fast.
const CONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// Prepared statements kept per connection; past this the cache starts over (views queried
/// by many different column sets could otherwise grow it without bound).
const MAX_CACHED_STATEMENTS: usize = 256;

/// One PostgreSQL session with its prepared statements.
pub struct Connection {
    client: Client,
    statement_timeout_ms: u64,
    /// Statements by SQL text: a lookup is then one round trip instead of two.
    statements: HashMap<String, Statement>,
}

#[derive(Default)]
struct State {
    idle: Vec<Connection>,
    open: usize,
    in_use: usize,
    last_connect_failure: Option<(Instant, Error)>,
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
    settings: PgSettings,
    tls: Option<MakeTlsConnector>,
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
        if conn.client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(conn);
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

fn tls_connector(settings: &PgSettings) -> Result<Option<MakeTlsConnector>, Error> {
    if settings.sslmode == SslMode::Disable {
        return Ok(None);
    }
    let mut builder = SslConnector::builder(SslMethod::tls())
        .map_err(|e| Error::new(e.to_string()).caused_by(e))?;
    match settings.sslmode {
        // libpq's prefer/require encrypt without checking who answers.
        SslMode::Prefer | SslMode::Require => builder.set_verify(SslVerifyMode::NONE),
        _ => {
            if let Some(ca) = &settings.sslrootcert {
                builder.set_ca_file(ca).map_err(|e| {
                    Error::new(format!("pg_sslrootcert {}: {e}", ca.display())).caused_by(e)
                })?;
            }
        }
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    if settings.sslmode == SslMode::VerifyCa {
        connector.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(Some(connector))
}

impl Pool {
    pub fn new(settings: PgSettings, max: usize) -> Result<Pool, Error> {
        Ok(Pool {
            tls: tls_connector(&settings)?,
            settings,
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
            if let Some(conn) = state.idle.pop() {
                state.in_use += 1;
                break conn;
            }
            if state.open < self.max {
                if let Some((at, reason)) = &state.last_connect_failure
                    && at.elapsed() < CONNECT_BACKOFF
                {
                    return Err(reason.clone());
                }
                state.open += 1;
                state.in_use += 1;
                drop(state);
                match self.connect(deadline, "pgcache") {
                    Ok(conn) => {
                        self.state.lock().unwrap().last_connect_failure = None;
                        break conn;
                    }
                    Err(reason) => {
                        let mut state = self.state.lock().unwrap();
                        state.open -= 1;
                        state.in_use -= 1;
                        state.last_connect_failure = Some((Instant::now(), reason.clone()));
                        drop(state);
                        self.freed.notify_one();
                        return Err(reason);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::postgres(format!(
                    "all {} PostgreSQL connections stayed busy until the request timed out; \
                     raise pool_size or check for slow queries",
                    self.max
                )));
            }
            state = self.freed.wait_timeout(state, deadline - now).unwrap().0;
        };
        let mut client = PooledClient {
            pool: self,
            conn: Some(conn),
        };
        client.apply_statement_timeout()?;
        Ok(client)
    }

    /// A connection outside the pool's count, for a long-lived user (the listener), shown
    /// in pg_stat_activity as `application_name`.
    pub fn connect_dedicated(
        &self,
        timeout: Duration,
        application_name: &str,
    ) -> Result<Connection, Error> {
        self.connect(Instant::now() + timeout, application_name)
    }

    fn connect(&self, deadline: Instant, application_name: &str) -> Result<Connection, Error> {
        let s = &self.settings;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = s
            .connect_timeout
            .min(remaining)
            .max(Duration::from_millis(10));
        let statement_timeout_ms = tunables::statement_timeout_ms();
        let mut config = postgres::Config::new();
        config
            .host(&s.host)
            .port(s.port)
            .dbname(&s.database)
            .user(&s.user)
            .application_name(application_name)
            .connect_timeout(timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .options(&format!("-c statement_timeout={statement_timeout_ms}"))
            .ssl_mode(match s.sslmode {
                SslMode::Disable => postgres::config::SslMode::Disable,
                SslMode::Prefer => postgres::config::SslMode::Prefer,
                _ => postgres::config::SslMode::Require,
            });
        if let Some(password) = s.password() {
            config.password(password);
        }
        let result = match &self.tls {
            None => config.connect(NoTls),
            Some(tls) => config.connect(tls.clone()),
        };
        result
            .map(|client| Connection {
                client,
                statement_timeout_ms,
                statements: HashMap::new(),
            })
            .map_err(|e| {
                let message = format!(
                    "PostgreSQL unavailable at {}:{}: {}",
                    s.host,
                    s.port,
                    describe(&e)
                );
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
    ) -> Result<Vec<Row>, postgres::Error> {
        let conn = self;
        let statement = match conn.statements.get(sql) {
            Some(statement) => statement.clone(),
            None => {
                let statement = conn.client.prepare(sql)?;
                if conn.statements.len() >= MAX_CACHED_STATEMENTS {
                    conn.statements.clear();
                }
                conn.statements.insert(sql.to_string(), statement.clone());
                statement
            }
        };
        let result = conn.client.query(&statement, params);
        if result.is_err() {
            // The table may have changed under the statement; prepare afresh next time.
            conn.statements.remove(sql);
        }
        result
    }

    /// Brings the session's statement_timeout in line with the setting after CONFIG SET.
    fn apply_statement_timeout(&mut self) -> Result<(), Error> {
        let wanted = tunables::statement_timeout_ms();
        let conn = self;
        if conn.statement_timeout_ms != wanted {
            conn.client
                .batch_execute(&format!("SET statement_timeout = {wanted}"))
                .map_err(|e| {
                    let message = format!("PostgreSQL unavailable: {}", describe(&e));
                    Error::postgres(message).caused_by(e)
                })?;
            conn.statement_timeout_ms = wanted;
        }
        Ok(())
    }
}

impl Connection {
    /// The driver's client, for what the pool does not wrap (LISTEN and notifications).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
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
