//! A connection that could not be opened for want of something on this machine, not because
//! PostgreSQL is down (issue #70 item 5: with the server's open-files limit reached, the event
//! loop's connection attempts failed with "Too many open files", which opened the circuit,
//! and misses the workers could answer on the connections they had failed at once).
//!
//! Such a failure says nothing of PostgreSQL: the circuit does not hear of it. The opener
//! backs off as after any failure (the misses meanwhile go to the workers), the pool's
//! request fails with what to do, and the warning is logged.

use std::io;

/// What ran short, and what to do, if `e` is this machine running short of a resource a
/// connection needs: file descriptors (the process's or the system's), memory or socket
/// buffers, local ports.
pub fn of_io(e: &io::Error) -> Option<&'static str> {
    Some(match e.raw_os_error()? {
        libc::EMFILE => {
            "redis-server is out of file descriptors: raise its open-files limit (ulimit -n, \
             LimitNOFILE), or lower maxclients, pool_size or loop_connections"
        }
        libc::ENFILE => "the system is out of file descriptors (fs.file-max)",
        libc::ENOMEM | libc::ENOBUFS => "the system is out of memory for sockets",
        libc::EADDRNOTAVAIL => "the system has no local port left to connect from",
        _ => return None,
    })
}

/// `of_io` of the I/O errors in `e`'s chain of causes (and inside them: an I/O error made
/// of another error tells its cause only through `get_ref`).
pub fn of(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(short) = of_io(io) {
                return Some(short);
            }
            if let Some(inner) = io.get_ref() {
                return of(inner);
            }
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_short_on_this_machine_is_told_apart_from_postgresql_refusing() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(of_io(&emfile).unwrap().contains("file descriptors"));
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(of_io(&refused), None);
        assert_eq!(of_io(&io::Error::other("no code")), None);
        #[derive(Debug)]
        struct Connecting(io::Error);
        impl std::fmt::Display for Connecting {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "error connecting to server: {}", self.0)
            }
        }
        impl std::error::Error for Connecting {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let emfile = || io::Error::from_raw_os_error(libc::EMFILE);
        assert!(of(&Connecting(emfile())).is_some(), "a cause");
        assert!(
            of(&io::Error::other(emfile())).is_some(),
            "inside an I/O error"
        );
        assert_eq!(of(&Connecting(refused)), None);
    }
}
