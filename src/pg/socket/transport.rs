//! A connection's bytes on a non-blocking socket: TCP, a Unix socket, or TLS over TCP with
//! OpenSSL driven by hand. Reads and writes never wait; each says whether it would have had
//! to, and TLS says which readiness it needs (a read may need the socket writable during a
//! key update, a write may need it readable).

use bytes::BytesMut;
use openssl::ssl::{ErrorCode, SslStream};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

thread_local! {
    /// What reads land in before they are appended (`read_into`).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<SslStream<TcpStream>>),
}

/// What one read or write came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// This many bytes moved (never 0).
    Moved(usize),
    /// Nothing can move until the socket is readable again.
    WantsRead,
    /// Nothing can move until the socket is writable again.
    WantsWrite,
    /// The peer closed the connection.
    Ended,
}

impl Transport {
    pub fn fd(&self) -> RawFd {
        match self {
            Transport::Tcp(s) => s.as_raw_fd(),
            Transport::Unix(s) => s.as_raw_fd(),
            Transport::Tls(s) => s.get_ref().as_raw_fd(),
        }
    }

    /// Makes every later read and write return at once.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.set_nonblocking(true),
            Transport::Unix(s) => s.set_nonblocking(true),
            Transport::Tls(s) => s.get_ref().set_nonblocking(true),
        }
    }

    /// Reads what is there, at most `max` bytes, appended to `into`.
    pub fn read_into(&mut self, into: &mut BytesMut, max: usize) -> io::Result<Io> {
        // Read into a buffer zeroed once per thread and copy what came, rather than zero
        // `max` bytes of `into` for every read (a one-row answer is a few hundred bytes).
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < max {
                scratch.resize(max, 0);
            }
            let buffer = &mut scratch[..max];
            let got = match self {
                Transport::Tcp(s) => plain(s.read(buffer), Io::WantsRead),
                Transport::Unix(s) => plain(s.read(buffer), Io::WantsRead),
                Transport::Tls(s) => tls(s.ssl_read(buffer)),
            };
            if let Ok(Io::Moved(n)) = got {
                into.extend_from_slice(&buffer[..n]);
            }
            got
        })
    }

    /// Whether a read that moved fewer bytes than asked may have left more to read: TLS
    /// returns one record per read, a plain socket everything it had (the event loop,
    /// level-triggered, calls back when more comes).
    pub fn short_read_may_leave_more(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Writes what the socket takes of `bytes`.
    pub fn write_from(&mut self, bytes: &[u8]) -> io::Result<Io> {
        match self {
            Transport::Tcp(s) => plain(s.write(bytes), Io::WantsWrite),
            Transport::Unix(s) => plain(s.write(bytes), Io::WantsWrite),
            Transport::Tls(s) => tls(s.ssl_write(bytes)),
        }
    }

    /// Decrypted bytes OpenSSL holds that a read returns without the socket being readable:
    /// the event loop would not call back for them.
    pub fn buffered(&self) -> usize {
        match self {
            Transport::Tls(s) => s.ssl().pending(),
            _ => 0,
        }
    }

    /// Ends the connection at once, without the TLS goodbye (the socket is closed when
    /// dropped; this also wakes the peer of a connection other copies may still hold).
    pub fn shut_down(&self) {
        let _ = match self {
            Transport::Tcp(s) => s.shutdown(Shutdown::Both),
            Transport::Unix(s) => s.shutdown(Shutdown::Both),
            Transport::Tls(s) => s.get_ref().shutdown(Shutdown::Both),
        };
    }
}

/// A plain socket's read or write; `blocked`: what it waits for when it would block.
fn plain(moved: io::Result<usize>, blocked: Io) -> io::Result<Io> {
    match moved {
        Ok(0) => Ok(Io::Ended),
        Ok(n) => Ok(Io::Moved(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(blocked),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(blocked),
        Err(e) => Err(e),
    }
}

fn tls(moved: Result<usize, openssl::ssl::Error>) -> io::Result<Io> {
    match moved {
        Ok(0) => Ok(Io::Ended),
        Ok(n) => Ok(Io::Moved(n)),
        Err(e) => match e.code() {
            ErrorCode::WANT_READ => Ok(Io::WantsRead),
            ErrorCode::WANT_WRITE => Ok(Io::WantsWrite),
            ErrorCode::ZERO_RETURN => Ok(Io::Ended),
            // The openssl crate has taken the thread's error queue into `e` (Redis's own
            // TLS shares this thread's queue: nothing may be left in it).
            _ => Err(e
                .into_io_error()
                .unwrap_or_else(|e| io::Error::other(e.to_string()))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Transport, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let ours = Transport::Unix(ours);
        ours.set_nonblocking().unwrap();
        (ours, theirs)
    }

    #[test]
    fn reads_say_when_nothing_is_there_and_when_the_peer_left() {
        let (mut ours, mut theirs) = pair();
        let mut into = BytesMut::from(&b"ab"[..]);
        assert_eq!(ours.read_into(&mut into, 16).unwrap(), Io::WantsRead);
        assert_eq!(&into[..], b"ab", "nothing appended");
        theirs.write_all(b"cdef").unwrap();
        assert_eq!(ours.read_into(&mut into, 3).unwrap(), Io::Moved(3));
        assert_eq!(&into[..], b"abcde");
        assert_eq!(ours.read_into(&mut into, 16).unwrap(), Io::Moved(1));
        drop(theirs);
        assert_eq!(ours.read_into(&mut into, 16).unwrap(), Io::Ended);
        assert_eq!(&into[..], b"abcdef");
    }

    #[test]
    fn writes_take_what_the_socket_holds_and_then_wait() {
        let (mut ours, mut theirs) = pair();
        let block = vec![7u8; 1 << 16];
        let mut written = 0;
        loop {
            match ours.write_from(&block).unwrap() {
                Io::Moved(n) => written += n,
                Io::WantsWrite => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(written > 0);
        let mut drained = vec![0u8; written];
        theirs.read_exact(&mut drained).unwrap();
        assert!(matches!(ours.write_from(&block).unwrap(), Io::Moved(_)));
    }
}
