//! Opening a connection the event loop will speak on: connect, TLS, start-up and
//! authentication, done on a worker with blocking reads and writes bounded by a deadline,
//! then the socket is made non-blocking and handed over whole (with its TLS session and any
//! byte already read), so the event loop never waits on a handshake.

use super::transport::Transport;
use crate::config::{PgSettings, SslMode};
use crate::pg::wire::auth::{AuthError, Startup, Step};
use crate::pg::wire::backend::{Backend, take_message};
use bytes::BytesMut;
use openssl::ssl::SslConnector;
use postgres_protocol::message::frontend;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A connection ready for queries.
pub struct Opened {
    pub transport: Transport,
    /// The settings PostgreSQL reported at start-up (`default_transaction_read_only`...).
    pub parameters: Vec<(String, String)>,
    /// Bytes read past the start-up's ReadyForQuery (none, unless the server sent a
    /// notice at once): the connection's first input.
    pub input: BytesMut,
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub struct NotOpened {
    pub why: String,
    /// For want of an answer in time rather than a refusal: a busy server may be that slow.
    pub timed_out: bool,
    /// For want of a resource of this machine (`pg::shortage`): says nothing of PostgreSQL.
    pub short: Option<&'static str>,
}

/// Opens a session with the `startup` settings (besides user and database), by `deadline`.
pub fn open(
    settings: &PgSettings,
    tls: Option<&SslConnector>,
    startup: &[(&str, &str)],
    deadline: Instant,
) -> Result<Opened, NotOpened> {
    let mut transport = connect(settings, tls, deadline)?;
    let params: Vec<(&str, &str)> = std::iter::once(("database", settings.database.as_str()))
        .chain(startup.iter().copied())
        .collect();
    let (mut exchange, first) = Startup::new(
        &params,
        &settings.user,
        settings.password().map(str::to_string),
    )
    .map_err(refused)?;
    let mut input = BytesMut::with_capacity(8192);
    write_all(&mut transport, &first, deadline)?;
    loop {
        let message = read_message(&mut transport, &mut input, deadline)?;
        match exchange.step(message).map_err(refused)? {
            Step::Send(bytes) => write_all(&mut transport, &bytes, deadline)?,
            Step::Wait => {}
            Step::Ready { parameters, .. } => {
                transport.set_nonblocking().map_err(|e| io_failed(&e))?;
                return Ok(Opened {
                    transport,
                    parameters,
                    input,
                });
            }
        }
    }
}

fn connect(
    settings: &PgSettings,
    tls: Option<&SslConnector>,
    deadline: Instant,
) -> Result<Transport, NotOpened> {
    if settings.host.starts_with('/') {
        // PostgreSQL speaks no TLS on its Unix socket (libpq's sslmode does not apply).
        let path = format!("{}/.s.PGSQL.{}", settings.host, settings.port);
        let socket = UnixStream::connect(path).map_err(|e| io_failed(&e))?;
        return Ok(Transport::Unix(socket));
    }
    let tcp = connect_tcp(settings, deadline)?;
    tcp.set_nodelay(true).map_err(|e| io_failed(&e))?;
    // As the pool's connections: a peer that vanished is noticed by the kernel within
    // seconds, idle (keepalives) or with data in flight (user timeout).
    let socket = socket2::SockRef::from(&tcp);
    socket
        .set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(5))
                .with_interval(Duration::from_secs(1))
                .with_retries(3),
        )
        .and_then(|()| socket.set_tcp_user_timeout(Some(Duration::from_secs(8))))
        .map_err(|e| io_failed(&e))?;
    let Some(tls) = tls else {
        return Ok(Transport::Tcp(tcp));
    };
    let mut tcp = tcp;
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    bounded(&tcp, deadline)?;
    tcp.write_all(&request).map_err(|e| io_failed(&e))?;
    let mut answer = [0u8];
    tcp.read_exact(&mut answer).map_err(|e| io_failed(&e))?;
    match (answer[0], settings.sslmode) {
        (b'S', _) => {}
        (b'N', SslMode::Prefer) => return Ok(Transport::Tcp(tcp)),
        _ => {
            return Err(NotOpened {
                why: "PostgreSQL does not accept TLS connections, which pg_sslmode requires".into(),
                timed_out: false,
                short: None,
            });
        }
    }
    bounded(&tcp, deadline)?;
    let config = crate::pg::tls::configure(tls, settings).map_err(|e| NotOpened {
        why: format!("TLS set-up failed: {e}"),
        timed_out: false,
        short: None,
    })?;
    let stream = config.connect(&settings.host, tcp).map_err(|e| NotOpened {
        why: format!("TLS handshake with PostgreSQL failed: {e}"),
        timed_out: false,
        short: None,
    })?;
    Ok(Transport::Tls(Box::new(stream)))
}

fn connect_tcp(settings: &PgSettings, deadline: Instant) -> Result<TcpStream, NotOpened> {
    let addresses = (settings.host.as_str(), settings.port)
        .to_socket_addrs()
        .map_err(|e| io_failed(&e))?;
    let mut last = None;
    for address in addresses {
        let left = remaining(deadline)?;
        match TcpStream::connect_timeout(&address, left) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || NotOpened {
            why: format!("{} resolves to no address", settings.host),
            timed_out: false,
            short: None,
        },
        |e| io_failed(&e),
    ))
}

/// Bounds the socket's next blocking reads and writes by the deadline.
fn bounded(tcp: &TcpStream, deadline: Instant) -> Result<(), NotOpened> {
    let left = remaining(deadline)?;
    tcp.set_read_timeout(Some(left))
        .and_then(|()| tcp.set_write_timeout(Some(left)))
        .map_err(|e| io_failed(&e))
}

fn bound_transport(transport: &Transport, deadline: Instant) -> Result<(), NotOpened> {
    let left = remaining(deadline)?;
    let set = |read: io::Result<()>, write: io::Result<()>| read.and(write);
    match transport {
        Transport::Tcp(s) => set(
            s.set_read_timeout(Some(left)),
            s.set_write_timeout(Some(left)),
        ),
        Transport::Unix(s) => set(
            s.set_read_timeout(Some(left)),
            s.set_write_timeout(Some(left)),
        ),
        Transport::Tls(s) => set(
            s.get_ref().set_read_timeout(Some(left)),
            s.get_ref().set_write_timeout(Some(left)),
        ),
    }
    .map_err(|e| io_failed(&e))
}

fn remaining(deadline: Instant) -> Result<Duration, NotOpened> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(NotOpened {
            why: "no answer within pg_connect_timeout_ms".into(),
            timed_out: true,
            short: None,
        });
    }
    Ok(left)
}

fn write_all(transport: &mut Transport, bytes: &[u8], deadline: Instant) -> Result<(), NotOpened> {
    bound_transport(transport, deadline)?;
    let written = match transport {
        Transport::Tcp(s) => s.write_all(bytes),
        Transport::Unix(s) => s.write_all(bytes),
        Transport::Tls(s) => s.write_all(bytes),
    };
    written.map_err(|e| io_failed(&e))
}

fn read_message(
    transport: &mut Transport,
    input: &mut BytesMut,
    deadline: Instant,
) -> Result<Backend, NotOpened> {
    loop {
        if let Some(message) = take_message(input).map_err(|why| NotOpened {
            why,
            timed_out: false,
            short: None,
        })? {
            return Ok(message);
        }
        bound_transport(transport, deadline)?;
        let mut chunk = [0u8; 8192];
        let got = match transport {
            Transport::Tcp(s) => s.read(&mut chunk),
            Transport::Unix(s) => s.read(&mut chunk),
            Transport::Tls(s) => s.read(&mut chunk),
        }
        .map_err(|e| io_failed(&e))?;
        if got == 0 {
            return Err(NotOpened {
                why: "PostgreSQL closed the connection during start-up".into(),
                timed_out: false,
                short: None,
            });
        }
        input.extend_from_slice(&chunk[..got]);
    }
}

fn io_failed(e: &io::Error) -> NotOpened {
    NotOpened {
        why: e.to_string(),
        timed_out: matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ),
        short: crate::pg::shortage::of_io(e),
    }
}

fn refused(e: AuthError) -> NotOpened {
    NotOpened {
        why: e.to_string(),
        timed_out: false,
        short: None,
    }
}
