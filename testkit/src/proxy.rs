//! A TCP proxy between pgcache and PostgreSQL that can go silent: the connections it holds
//! stop forwarding without being closed, as when a host vanishes in a failover or a NAT or
//! firewall forgets a connection. New connections still pass, as they would to the host
//! that took over. It can also be slow to let new connections through, as a distant host
//! is to connect to.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One proxied connection: whether it is the listener's (its start-up message names the
/// `pgcache-listener` or `pgcache-replication` application: the invalidation source) and
/// whether it went silent.
struct Link {
    listener: bool,
    silent: AtomicBool,
}

pub struct SilentProxy {
    pub port: u16,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
    stop: Arc<AtomicBool>,
    /// How long a new connection's start-up message is held before it is passed on (ms).
    connect_delay_ms: Arc<AtomicU64>,
}

/// Which of the connections open now go silent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Every one.
    All,
    /// The invalidation listener's only: the pool's keep working.
    ListenerOnly,
}

impl SilentProxy {
    /// Forwards a free port to `upstream_port` on 127.0.0.1.
    pub fn start(upstream_port: u16) -> SilentProxy {
        // Port 0: the kernel picks a free port as it binds (a port found free first may be
        // taken by a parallel test before the bind).
        let server = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        server.set_nonblocking(true).unwrap();
        let links: Arc<Mutex<Vec<Arc<Link>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let connect_delay_ms = Arc::new(AtomicU64::new(0));
        let (accepted, stopping, delay) = (links.clone(), stop.clone(), connect_delay_ms.clone());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match server.accept() {
                    Ok((client, _)) => {
                        if let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) {
                            let (links, stop) = (accepted.clone(), stopping.clone());
                            let delay = Duration::from_millis(delay.load(Ordering::SeqCst));
                            std::thread::spawn(move || {
                                forward(client, upstream, delay, &links, &stop)
                            });
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return,
                }
            }
        });
        SilentProxy {
            port,
            links,
            stop,
            connect_delay_ms,
        }
    }

    /// Holds each connection opened from now on for `delay` before PostgreSQL hears of it.
    pub fn delay_new_connections(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.connect_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Stops forwarding on the connections open now that `which` names, without closing
    /// them; returns how many went silent.
    pub fn silence(&self, which: Silence) -> usize {
        let links = self.links.lock().unwrap();
        let mut silenced = 0;
        for link in links.iter() {
            if which == Silence::All || link.listener {
                link.silent.store(true, Ordering::SeqCst);
                silenced += 1;
            }
        }
        silenced
    }

    /// The module arguments of `pg`, pointed at this proxy, then `extra`.
    pub fn module_args(&self, pg: &super::Pg, extra: &[&str]) -> Vec<String> {
        let mut args = pg.module_args();
        let at = args.iter().position(|a| a == "pg_port").unwrap() + 1;
        args[at] = self.port.to_string();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Pumps both ways between `client` and `upstream` on two threads, once `delay` has passed,
/// until either side closes, the proxy stops, or the link goes silent (then it holds both
/// sockets open, forwarding nothing, until the proxy stops).
fn forward(
    client: TcpStream,
    upstream: TcpStream,
    delay: Duration,
    links: &Arc<Mutex<Vec<Arc<Link>>>>,
    stop: &Arc<AtomicBool>,
) {
    let mut first = [0u8; 512];
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = (&client).read(&mut first).unwrap_or(0);
    let startup = &first[..n];
    std::thread::sleep(delay);
    let link = Arc::new(Link {
        listener: [&b"pgcache-listener\0"[..], b"pgcache-replication\0"]
            .iter()
            .any(|name| startup.windows(name.len()).any(|w| w == *name)),
        silent: AtomicBool::new(false),
    });
    if (&upstream).write_all(startup).is_err() {
        return;
    }
    links.lock().unwrap().push(link.clone());
    for (from, to) in [
        (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
        (upstream, client),
    ] {
        let (link, stop) = (link.clone(), stop.clone());
        std::thread::spawn(move || pump(from, to, &link, &stop));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link, stop: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buffer = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if link.silent.load(Ordering::SeqCst) {
            // Nothing read, nothing written, nothing closed: the peer hears silence.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            // Bytes read as the link went silent are dropped, as a dead network drops them.
            Ok(_) if link.silent.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}
