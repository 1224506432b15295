//! One PostgreSQL session, driven on the thread that uses it, where every exchange has a
//! deadline. The blocking `postgres` crate waits as long as the kernel does: when a network
//! drops packets without a reset (a host gone in a failover, a NAT that forgot the
//! connection, a proxy that stops forwarding), a query or a liveness check hangs for the
//! kernel's retransmission timeout, about 15 minutes. Here tokio-postgres runs on a
//! current-thread runtime (no thread of its own, as with `postgres`), each exchange is
//! bounded by a timeout, and a session whose peer stayed silent is given up.

use crate::model::source::PartRef;
use crate::pg::circuit::Circuit;
use crate::pg::undo::{self, Effects};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Config, Notification, Row, Socket, Statement};

/// Why an exchange with PostgreSQL failed.
#[derive(Debug)]
pub enum Failure {
    /// The driver's error: the server refused, or the connection broke.
    Driver(tokio_postgres::Error),
    /// PostgreSQL did not answer within the deadline: the session is given up.
    Silent(Duration),
    /// The connection ended without an error of the driver's (the server closed it).
    Closed,
    /// The session could not be set up on this thread (no runtime).
    Setup(std::io::Error),
    /// PostgreSQL's error on a connection the event loop speaks on (`cache::onloop`).
    Server(crate::pg::wire::backend::ServerError),
    /// A connection the event loop spoke on broke: why.
    Lost(String),
}

/// An error PostgreSQL answered with.
pub struct ServerSaid<'a> {
    pub code: tokio_postgres::error::SqlState,
    pub message: &'a str,
}

impl Failure {
    /// What the server said, if it answered with an error: its SQLSTATE and message,
    /// whichever way the session spoke to it.
    pub fn server(&self) -> Option<ServerSaid<'_>> {
        match self {
            Failure::Driver(e) => e.as_db_error().map(|db| ServerSaid {
                code: db.code().clone(),
                message: db.message(),
            }),
            Failure::Server(e) => Some(ServerSaid {
                code: tokio_postgres::error::SqlState::from_code(&e.code),
                message: &e.message,
            }),
            _ => None,
        }
    }

    /// Whether the session can no longer be used (as opposed to one query refused).
    pub fn session_lost(&self) -> bool {
        match self {
            Failure::Driver(e) => {
                e.is_closed()
                    || self.server().is_none_or(|said| {
                        let code = said.code.code();
                        // Operator intervention (57P01 admin shutdown, 57P02 crash shutdown,
                        // 57P03 cannot connect now) and connection exceptions (class 08).
                        code.starts_with("57P") || code.starts_with("08")
                    })
            }
            Failure::Server(e) => {
                e.is_fatal() || e.code.starts_with("57P") || e.code.starts_with("08")
            }
            Failure::Silent(_) | Failure::Closed | Failure::Setup(_) | Failure::Lost(_) => true,
        }
    }

    /// Whether PostgreSQL stopped answering (rather than refusing or closing).
    pub fn is_silent(&self) -> bool {
        matches!(self, Failure::Silent(_))
    }

    /// Whether a connect failed for want of an answer in time (ours or the driver's
    /// connect timeout), rather than a refusal: a busy server may be that slow.
    pub fn timed_out(&self) -> bool {
        let Failure::Driver(driver) = self else {
            return self.is_silent();
        };
        let mut source = std::error::Error::source(driver);
        while let Some(s) = source {
            if s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return true;
            }
            source = s.source();
        }
        false
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Driver(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Driver(e) => write!(f, "{e}"),
            Failure::Silent(waited) => write!(
                f,
                "PostgreSQL did not answer within {} ms (the network may be dropping packets); \
                 the connection was given up",
                waited.as_millis()
            ),
            Failure::Closed => f.write_str("connection to PostgreSQL was closed"),
            Failure::Setup(e) => write!(f, "cannot set up a PostgreSQL session: {e}"),
            Failure::Server(e) => write!(f, "{} (SQLSTATE {})", e.message, e.code),
            Failure::Lost(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Driver(e) => Some(e),
            Failure::Setup(e) => Some(e),
            Failure::Silent(_) | Failure::Closed | Failure::Server(_) | Failure::Lost(_) => None,
        }
    }
}

/// The connection half of tokio-postgres, whatever its stream (TLS or not): what it
/// yields (notifications, notices, its end) and the settings the server reported.
trait Messages: Send {
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>>;
    fn parameter(&self, name: &str) -> Option<&str>;
}

impl<S, T> Messages for tokio_postgres::Connection<S, T>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>> {
        tokio_postgres::Connection::poll_message(self, cx)
    }

    fn parameter(&self, name: &str) -> Option<&str> {
        tokio_postgres::Connection::parameter(self, name)
    }
}

pub struct Session {
    runtime: tokio::runtime::Runtime,
    client: Client,
    messages: Box<dyn Messages>,
    notifications: VecDeque<Notification>,
    /// The peer stayed silent past a deadline, or the connection ended.
    lost: bool,
    /// Where PostgreSQL's answers are reported: its source's circuit, which they keep from
    /// taking a silent connection for an outage.
    circuit: PartRef<'static, Circuit>,
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(Failure::Setup)
}

impl Session {
    /// Connects, with the whole exchange (TCP, TLS, start-up, authentication) bounded by
    /// `limit`; the session reports its answers to `circuit`.
    pub fn connect<T>(
        config: &Config,
        tls: T,
        limit: Duration,
        circuit: PartRef<'static, Circuit>,
    ) -> Result<Session, Failure>
    where
        T: MakeTlsConnect<Socket> + Send + 'static,
        T::Stream: Send + 'static,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let runtime = runtime()?;
        let (client, connection) = runtime
            .block_on(async { tokio::time::timeout(limit, config.connect(tls)).await })
            .map_err(|_| Failure::Silent(limit))??;
        Ok(Session {
            runtime,
            client,
            messages: Box::new(connection),
            notifications: VecDeque::new(),
            lost: false,
            circuit,
        })
    }

    /// Whether the session is gone: closed by either side, or given up.
    pub fn is_closed(&self) -> bool {
        self.lost || self.client.is_closed()
    }

    /// Reads whatever the server sent while the session was idle (a notification, the
    /// FATAL of a server shutting down), without waiting; whether the session is still
    /// usable. A pool checks this before lending a connection out.
    pub fn still_open(&mut self) -> bool {
        if self.is_closed() {
            return false;
        }
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let _guard = self.runtime.enter();
        if drain(&mut self.messages, &mut self.notifications, &mut cx).is_err() {
            self.lost = true;
        }
        !self.is_closed()
    }

    /// Runs `exchange` on the client, waiting at most `limit` for it to finish. A
    /// connection that has ended fails the exchange at once (its requests would never be
    /// answered).
    fn drive<'a, F, R>(
        &'a mut self,
        limit: Duration,
        exchange: impl FnOnce(&'a Client) -> F,
    ) -> Result<R, Failure>
    where
        F: Future<Output = Result<R, tokio_postgres::Error>> + 'a,
    {
        if self.lost {
            return Err(Failure::Closed);
        }
        let Session {
            runtime,
            client,
            messages,
            notifications,
            lost,
            circuit,
        } = self;
        let mut exchange = pin!(exchange(client));
        // The connection half must not be polled again once it has ended (tokio-postgres's
        // contract), even when the exchange completed in that same turn.
        let mut ended_here = false;
        let finished = runtime.block_on(async {
            tokio::time::timeout(
                limit,
                std::future::poll_fn(|cx| {
                    let ended = drain(messages, notifications, cx).err();
                    ended_here |= ended.is_some();
                    match exchange.as_mut().poll(cx) {
                        Poll::Ready(result) => Poll::Ready(result.map_err(Failure::Driver)),
                        Poll::Pending => ended.map_or(Poll::Pending, |e| Poll::Ready(Err(e))),
                    }
                }),
            )
            .await
        });
        if ended_here {
            *lost = true;
        }
        match finished {
            Ok(Ok(result)) => {
                circuit.answered();
                Ok(result)
            }
            Ok(Err(failure)) => {
                if failure.server().is_some() {
                    circuit.answered();
                }
                if failure.session_lost() {
                    *lost = true;
                }
                Err(failure)
            }
            Err(_) => {
                *lost = true;
                Err(Failure::Silent(limit))
            }
        }
    }

    pub fn prepare(&mut self, sql: &str, limit: Duration) -> Result<Statement, Failure> {
        self.drive(limit, |client| client.prepare(sql))
    }

    /// `sql` prepared with parameters of `types` (those left out: as PostgreSQL infers).
    pub fn prepare_typed(
        &mut self,
        sql: &str,
        types: &[tokio_postgres::types::Type],
        limit: Duration,
    ) -> Result<Statement, Failure> {
        self.drive(limit, |client| client.prepare_typed(sql, types))
    }

    pub fn query(
        &mut self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
        limit: Duration,
    ) -> Result<Vec<Row>, Failure> {
        self.drive(limit, |client| client.query(statement, params))
    }

    /// Whether a statement sent alone runs in a READ ONLY transaction: the session's
    /// `default_transaction_read_only` is on, as PostgreSQL reports it (from version 14 on,
    /// with every change: one made by a function a statement called is known before the
    /// next statement is sent).
    fn reads_only_by_default(&self) -> bool {
        self.messages.parameter("default_transaction_read_only") == Some("on")
    }

    /// Runs `statement` in a READ ONLY transaction of its own: alone, where the session is
    /// read-only by default; else inside `BEGIN READ ONLY` ... `COMMIT`, the three sent at
    /// once (one round trip: a statement that failed leaves the transaction aborted, and
    /// the COMMIT then ends it). Alone, PostgreSQL has one statement to run instead of three
    /// and answers in one message instead of three.
    pub fn query_read_only(
        &mut self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
        effects: Effects,
        limit: Duration,
    ) -> Result<Vec<Row>, Failure> {
        if effects == Effects::None && self.reads_only_by_default() {
            return self.drive(limit, |client| client.query(statement, params));
        }
        self.drive(limit, |client| {
            inside_begin_read_only(client, statement, params, effects)
        })
    }

    /// Runs each statement with its parameters in a READ ONLY transaction of its own, all of
    /// them sent at once (one round trip for all: PostgreSQL runs them one after another,
    /// each under its own snapshot). A statement that fails fails alone. A lost session
    /// fails them all. Only the first may go alone (`query_read_only`): a function it calls
    /// could turn the session's default off before the next runs, so they are each inside
    /// `BEGIN READ ONLY` ... `COMMIT`.
    pub fn query_read_only_pipelined(
        &mut self,
        items: &[(&Statement, Vec<&(dyn ToSql + Sync)>, Effects)],
        limit: Duration,
    ) -> Result<Vec<Result<Vec<Row>, Failure>>, Failure> {
        let alone = self.reads_only_by_default();
        let results = self.drive(limit, |client| async move {
            let runs =
                items
                    .iter()
                    .enumerate()
                    .map(|(i, (statement, params, effects))| async move {
                        if alone && i == 0 && *effects == Effects::None {
                            client.query(*statement, params).await
                        } else {
                            inside_begin_read_only(client, statement, params, *effects).await
                        }
                    });
            Ok(futures_util::future::join_all(runs).await)
        })?;
        let mut results: Vec<Result<Vec<Row>, Failure>> = results
            .into_iter()
            .map(|r| r.map_err(Failure::Driver))
            .collect();
        // The session went with one of them: the others' answers are not to be trusted
        // apart from it, and the caller may retry on a fresh session.
        if let Some(lost) = results
            .iter()
            .position(|r| r.as_ref().is_err_and(Failure::session_lost))
        {
            self.lost = true;
            return Err(results.swap_remove(lost).expect_err("a lost session"));
        }
        Ok(results)
    }

    pub fn batch_execute(&mut self, sql: &str, limit: Duration) -> Result<(), Failure> {
        self.drive(limit, |client| client.batch_execute(sql))
    }

    /// The next notification, waiting at most `wait` for one (None when none came). A
    /// broken connection is an error; silence is not (nothing may have changed).
    pub fn next_notification(&mut self, wait: Duration) -> Result<Option<Notification>, Failure> {
        if let Some(n) = self.notifications.pop_front() {
            return Ok(Some(n));
        }
        if self.lost {
            return Err(Failure::Closed);
        }
        let Session {
            runtime,
            messages,
            notifications,
            lost,
            ..
        } = self;
        let arrived = if wait.is_zero() {
            // Only what has arrived: one read, no timer. (A zero timeout is not immediate:
            // tokio's timer ticks in milliseconds, so each such wait cost the listener up to
            // one, on every notification.)
            Ok(runtime.block_on(std::future::poll_fn(|cx| {
                Poll::Ready(drain(messages, notifications, cx))
            })))
        } else {
            runtime.block_on(async {
                tokio::time::timeout(
                    wait,
                    std::future::poll_fn(|cx| match drain(messages, notifications, cx) {
                        Err(ended) => Poll::Ready(Err(ended)),
                        Ok(()) if !notifications.is_empty() => Poll::Ready(Ok(())),
                        Ok(()) => Poll::Pending,
                    }),
                )
                .await
            })
        };
        match arrived {
            Ok(Ok(())) | Err(_) => {
                let next = self.notifications.pop_front();
                if next.is_some() {
                    self.circuit.answered();
                }
                Ok(next)
            }
            Ok(Err(ended)) => {
                *lost = true;
                Err(ended)
            }
        }
    }
}

/// Runs `statement` inside `BEGIN READ ONLY` ... `COMMIT` (or, to undo its effects on the
/// session, `undo::UNDO`), the three sent at once: a statement that failed leaves the
/// transaction aborted, and the COMMIT (or ROLLBACK) then ends it.
async fn inside_begin_read_only(
    client: &Client,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
    effects: Effects,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let end = match effects {
        Effects::None => "COMMIT",
        Effects::Undone => undo::UNDO,
    };
    let (begun, rows, committed) = tokio::join!(
        client.batch_execute(undo::BEGIN),
        client.query(statement, params),
        client.batch_execute(end),
    );
    begun?;
    let rows = rows?;
    committed?;
    Ok(rows)
}

/// Reads every message the connection has ready, queueing notifications; Err with why when
/// the connection has ended.
fn drain(
    messages: &mut Box<dyn Messages>,
    notifications: &mut VecDeque<Notification>,
    cx: &mut Context<'_>,
) -> Result<(), Failure> {
    loop {
        match messages.poll_message(cx) {
            Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => notifications.push_back(n),
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(e))) => return Err(Failure::Driver(e)),
            Poll::Ready(None) => return Err(Failure::Closed),
            Poll::Pending => return Ok(()),
        }
    }
}
