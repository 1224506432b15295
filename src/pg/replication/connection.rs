//! A replication connection (`replication=database`) to PostgreSQL, speaking the streaming
//! replication protocol ("Streaming Replication Protocol" in PostgreSQL's documentation):
//! replication commands as simple queries, then a COPY BOTH stream of WAL data, keepalives
//! and the consumer's status updates. rust-postgres has no replication support, so this
//! speaks the protocol itself with `postgres-protocol`'s codec, through the same TLS
//! connector, socket options and password as the pool's connections. Like `session`, it runs
//! on a current-thread runtime on the thread that uses it, and every exchange has a deadline.

use super::stream::{self, CopyData};
use crate::config::{PgSettings, SslMode};
use crate::model::lsn::Lsn;
use crate::model::source::PartRef;
use crate::pg::circuit::Circuit;
use crate::pg::wire::auth::{AuthError, Startup, Step};
use crate::pg::wire::backend::{self as wire, Backend, ServerError};
use bytes::BytesMut;
use postgres_openssl::MakeTlsConnector;
use postgres_protocol::message::frontend;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

/// Why an exchange on the replication connection failed.
#[derive(Debug)]
pub enum Failure {
    /// PostgreSQL refused (its message and SQLSTATE).
    Server(ServerError),
    /// The connection broke.
    Io(std::io::Error),
    /// PostgreSQL did not answer within the deadline.
    Silent(Duration),
    /// PostgreSQL sent something this client does not understand, or refused TLS.
    Protocol(String),
}

impl Failure {
    /// The SQLSTATE of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Failure::Server(e) => Some(&e.code),
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Server(e) => write!(f, "{} (SQLSTATE {})", e.message, e.code),
            Failure::Io(e) => write!(f, "connection to PostgreSQL broke: {e}"),
            Failure::Silent(waited) => write!(
                f,
                "PostgreSQL did not answer within {} ms (the network may be dropping packets); \
                 the connection was given up",
                waited.as_millis()
            ),
            Failure::Protocol(what) => f.write_str(what),
        }
    }
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Server(e) => Failure::Server(e),
            AuthError::Protocol(what) => Failure::Protocol(what),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Connection {
    runtime: tokio::runtime::Runtime,
    stream: Stream,
    /// Where the stream's messages are reported as answers: its source's circuit.
    circuit: PartRef<'static, Circuit>,
}

/// The socket and its buffers; its exchanges run on the connection's runtime.
struct Stream {
    io: Box<dyn Io>,
    /// Bytes read and not yet taken as messages.
    input: BytesMut,
    output: BytesMut,
}

type Exchange<'a, R> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<R, Failure>> + 'a>>;

/// A row of a replication command's result, as text.
pub type Row = Vec<Option<String>>;

impl Connection {
    /// Connects and authenticates, the whole exchange bounded by `limit`; what the stream
    /// receives is reported to `circuit`.
    pub fn connect(
        settings: &PgSettings,
        tls: Option<&MakeTlsConnector>,
        application_name: &str,
        limit: Duration,
        circuit: PartRef<'static, Circuit>,
    ) -> Result<Connection, Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let io = runtime.block_on(async {
            tokio::time::timeout(limit, open(settings, tls))
                .await
                .map_err(|_| Failure::Silent(limit))?
        })?;
        let mut connection = Connection {
            runtime,
            stream: Stream {
                io,
                input: BytesMut::with_capacity(64 * 1024),
                output: BytesMut::new(),
            },
            circuit,
        };
        let start_up = StartUp {
            user: settings.user.clone(),
            database: settings.database.clone(),
            password: settings.password().map(str::to_string),
            application_name: application_name.to_string(),
        };
        connection.bounded(limit, move |s| Box::pin(s.start_up(start_up)))?;
        Ok(connection)
    }

    /// Runs one exchange with a deadline.
    fn bounded<R>(
        &mut self,
        limit: Duration,
        exchange: impl for<'a> FnOnce(&'a mut Stream) -> Exchange<'a, R>,
    ) -> Result<R, Failure> {
        let Connection {
            runtime, stream, ..
        } = self;
        runtime.block_on(async {
            tokio::time::timeout(limit, exchange(stream))
                .await
                .unwrap_or(Err(Failure::Silent(limit)))
        })
    }

    /// Runs a replication command (or a plain SQL query: a `replication=database` connection
    /// takes both) and returns its rows as text.
    pub fn query(&mut self, sql: &str, limit: Duration) -> Result<Vec<Row>, Failure> {
        let sql = sql.to_string();
        self.bounded(limit, move |s| Box::pin(s.query(sql)))
    }

    /// Sends START_REPLICATION and waits until PostgreSQL streams.
    pub fn start_streaming(&mut self, command: &str, limit: Duration) -> Result<(), Failure> {
        let command = command.to_string();
        self.bounded(limit, move |s| Box::pin(s.start_streaming(command)))
    }

    /// The next message already read, if a whole one is: never waits.
    pub fn buffered(&mut self) -> Result<Option<CopyData>, Failure> {
        self.stream.take_copy_data()
    }

    /// The next message of the stream, waiting at most `wait` for one (None: none came).
    pub fn receive(&mut self, wait: Duration) -> Result<Option<CopyData>, Failure> {
        // Whole messages already read are taken without a wait.
        if let Some(message) = self.buffered()? {
            return Ok(Some(message));
        }
        match self.bounded(wait, |s| Box::pin(s.fill())) {
            Ok(()) => {
                self.circuit.answered();
                self.stream.take_copy_data()
            }
            Err(Failure::Silent(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Tells PostgreSQL how far this consumer has applied the stream (the slot may then
    /// drop the log before it), asking for an answer at once with `reply`.
    pub fn send_status(
        &mut self,
        applied: Lsn,
        reply: bool,
        limit: Duration,
    ) -> Result<(), Failure> {
        let update = stream::status_update(applied, postgres_time_us(), reply);
        frontend::CopyData::new(&update[..])?.write(&mut self.stream.output);
        self.bounded(limit, |s| Box::pin(s.flush()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Ends the session politely when the network allows it; never waits long.
        frontend::terminate(&mut self.stream.output);
        let _ = self.bounded(Duration::from_millis(100), |s| Box::pin(s.flush()));
    }
}

impl Stream {
    /// Writes what the start-up state machine (`pg::wire::auth`) asks for and feeds it each
    /// message read, until the session is ready.
    async fn start_up(&mut self, settings: StartUp) -> Result<(), Failure> {
        // Changes' values arrive as text, spelled by this session's settings: the ones the
        // pool's sessions have, whatever the server sets (`pg::settings`).
        let parameters: Vec<(&str, &str)> = [
            ("database", settings.database.as_str()),
            ("replication", "database"),
            ("application_name", settings.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ]
        .into_iter()
        .chain(crate::pg::settings::VALUE_SETTINGS.iter().copied())
        .collect();
        let (mut startup, first) = Startup::new(&parameters, &settings.user, settings.password)?;
        self.output.extend_from_slice(&first);
        self.flush().await?;
        loop {
            let message = self.read().await?;
            match startup.step(message)? {
                Step::Send(bytes) => {
                    self.output.extend_from_slice(&bytes);
                    self.flush().await?;
                }
                Step::Wait => {}
                Step::Ready { .. } => return Ok(()),
            }
        }
    }

    async fn query(&mut self, sql: String) -> Result<Vec<Row>, Failure> {
        frontend::query(&sql, &mut self.output)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read().await? {
                Backend::DataRow(row) => rows.push(row.to_strings()),
                Backend::Error(e) => error = Some(e),
                Backend::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(Failure::Server(e)),
            None => Ok(rows),
        }
    }

    async fn start_streaming(&mut self, command: String) -> Result<(), Failure> {
        frontend::query(&command, &mut self.output)?;
        self.flush().await?;
        loop {
            match self.read().await? {
                Backend::CopyBothResponse => return Ok(()),
                Backend::Error(e) => return Err(Failure::Server(e)),
                _ => {}
            }
        }
    }

    fn take_copy_data(&mut self) -> Result<Option<CopyData>, Failure> {
        while let Some(message) = wire::take_message(&mut self.input).map_err(Failure::Protocol)? {
            match message {
                Backend::CopyData(data) => {
                    return stream::copy_data(&data)
                        .map(Some)
                        .map_err(Failure::Protocol);
                }
                Backend::Error(e) => return Err(Failure::Server(e)),
                Backend::CopyDone => {
                    return Err(Failure::Protocol(
                        "PostgreSQL ended the replication stream".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        self.io.write_all(&self.output).await?;
        self.io.flush().await?;
        self.output.clear();
        Ok(())
    }

    /// Reads more bytes (at least one) into the input buffer.
    async fn fill(&mut self) -> Result<(), Failure> {
        self.input.reserve(8 * 1024);
        if self.io.read_buf(&mut self.input).await? == 0 {
            return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// The next whole message.
    async fn read(&mut self) -> Result<Backend, Failure> {
        loop {
            if let Some(message) = wire::take_message(&mut self.input).map_err(Failure::Protocol)? {
                return Ok(message);
            }
            self.fill().await?;
        }
    }
}

/// What the start-up exchange sends, owned by the exchange.
struct StartUp {
    user: String,
    database: String,
    password: Option<String>,
    application_name: String,
}

/// Microseconds since 2000-01-01, PostgreSQL's epoch.
fn postgres_time_us() -> i64 {
    const POSTGRES_EPOCH_UNIX_SECONDS: u64 = 946_684_800;
    let since_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (since_unix.as_micros() as i64) - (POSTGRES_EPOCH_UNIX_SECONDS as i64 * 1_000_000)
}

/// The socket, with TLS when the settings ask for it.
async fn open(
    settings: &PgSettings,
    tls: Option<&MakeTlsConnector>,
) -> Result<Box<dyn Io>, Failure> {
    if settings.host.starts_with('/') {
        let path = format!("{}/.s.PGSQL.{}", settings.host, settings.port);
        return Ok(Box::new(tokio::net::UnixStream::connect(path).await?));
    }
    let tcp = tokio::net::TcpStream::connect((settings.host.as_str(), settings.port)).await?;
    tcp.set_nodelay(true)?;
    // As the pool's connections: a peer that vanished is noticed by the kernel within
    // seconds, idle (keepalives) or with data in flight (user timeout).
    let socket = socket2::SockRef::from(&tcp);
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(5))
            .with_interval(Duration::from_secs(1))
            .with_retries(3),
    )?;
    socket.set_tcp_user_timeout(Some(Duration::from_secs(8)))?;
    let (Some(tls), mode) = (tls, settings.sslmode) else {
        return Ok(Box::new(tcp));
    };
    let mut tcp = tcp;
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    let mut answer = [0u8];
    tcp.read_exact(&mut answer).await?;
    match (answer[0], mode) {
        (b'S', _) => {}
        (b'N', SslMode::Prefer) => return Ok(Box::new(tcp)),
        _ => {
            return Err(Failure::Protocol(
                "PostgreSQL does not accept TLS connections, which pg_sslmode requires".into(),
            ));
        }
    }
    let mut maker = tls.clone();
    let connector =
        MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut maker, &settings.host)
            .map_err(|e| Failure::Protocol(format!("TLS set-up failed: {e}")))?;
    let stream = TlsConnect::connect(connector, tcp)
        .await
        .map_err(|e| Failure::Protocol(format!("TLS handshake with PostgreSQL failed: {e}")))?;
    Ok(Box::new(stream))
}
