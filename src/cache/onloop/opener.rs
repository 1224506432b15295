//! Opening the event loop's connections off the event loop: a thread of its own connects,
//! negotiates TLS, authenticates and waits for ReadyForQuery (`pg::socket::setup`), then
//! hands each connection (or why it failed) over through its fleet's `handed` and wakes the
//! main thread. One opener thread at a time per fleet; after a failure the next waits,
//! doubling up to 5 s.

use crate::config::{PgSettings, current};
use crate::error::Error;
use crate::model::source::SourceId;
use crate::pg::circuit;
use crate::pg::socket::setup::{self, NotOpened, Opened};
use crate::redis::main_thread::Task;
use openssl::ssl::SslConnector;
use redis_module::logging::log_warning;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// After a failed open, the next waits this long, doubling up to `BACKOFF_MAX`.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The application_name of the event loop's sessions (pg_stat_activity).
const APPLICATION_NAME: &str = "pgcache-loop";

/// A connection (or why one could not be opened) an opener thread handed over, with the
/// statement_timeout its session started with (a CONFIG SET meanwhile retires it).
pub struct Handed {
    pub opened: Result<Opened, NotOpened>,
    pub statement_timeout_ms: u64,
}

/// What an opener needs.
struct Opening {
    settings: PgSettings,
    tls: Option<SslConnector>,
}

pub struct Opener {
    /// Whose connections it opens: its settings, its circuit.
    source: SourceId,
    /// What its threads handed over and the main thread has not taken yet.
    handed: Arc<Mutex<Vec<Handed>>>,
    /// None until started, and once stopped.
    opening: Option<Arc<Opening>>,
    thread: Option<JoinHandle<()>>,
    next_open: Option<Instant>,
    backoff: Duration,
}

impl Opener {
    pub fn new(source: SourceId) -> Opener {
        Opener {
            source,
            handed: Arc::default(),
            opening: None,
            thread: None,
            next_open: None,
            backoff: Duration::ZERO,
        }
    }

    /// What its threads handed over since last asked.
    pub fn take_handed(&self) -> Vec<Handed> {
        std::mem::take(&mut *self.handed.lock().unwrap())
    }

    pub fn start(&mut self, settings: &PgSettings) -> Result<(), Error> {
        let tls = crate::pg::tls::connector(settings)?;
        self.opening = Some(Arc::new(Opening {
            settings: settings.clone(),
            tls,
        }));
        self.next_open = None;
        self.backoff = Duration::ZERO;
        Ok(())
    }

    /// Whether a thread is connecting now.
    pub fn busy(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits for the thread (bounded by the connect timeout) and opens no more.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.opening = None;
        self.handed.lock().unwrap().clear();
    }

    /// Opens no more, without waiting for a thread connecting now: it is returned, to be
    /// waited for before the library may go (it holds only what it shares with nobody else
    /// any more: what it opens is dropped with it).
    pub fn detach(&mut self) -> Option<JoinHandle<()>> {
        self.opening = None;
        self.handed.lock().unwrap().clear();
        self.thread.take()
    }

    /// Starts a thread opening `missing` connections (`hand_over` wakes the main thread for
    /// each), unless one runs, a connection waits to be taken or a failure's back-off has
    /// not passed.
    pub fn open(&mut self, missing: usize, hand_over: &'static Task) {
        let Some(opening) = self.opening.clone() else {
            return;
        };
        if self.busy()
            || !self.handed.lock().unwrap().is_empty()
            || self.next_open.is_some_and(|at| Instant::now() < at)
        {
            return;
        }
        if let Some(done) = self.thread.take() {
            let _ = done.join();
        }
        let statement_timeout_ms = current::of(self.source).statement_timeout_ms();
        let handed = Arc::clone(&self.handed);
        let startup = startup_settings(statement_timeout_ms);
        let spawned = std::thread::Builder::new()
            .name("pgcache-loop-open".into())
            .spawn(move || {
                let startup: Vec<(&str, &str)> =
                    startup.iter().map(|(n, v)| (*n, v.as_str())).collect();
                for _ in 0..missing {
                    let deadline = Instant::now() + opening.settings.connect_timeout;
                    let opened =
                        setup::open(&opening.settings, opening.tls.as_ref(), &startup, deadline);
                    let failed = opened.is_err();
                    handed.lock().unwrap().push(Handed {
                        opened,
                        statement_timeout_ms,
                    });
                    hand_over.request_from_thread();
                    if failed {
                        return;
                    }
                }
            });
        match spawned {
            Ok(thread) => self.thread = Some(thread),
            Err(e) => log_warning(format!(
                "pgcache: cannot start a thread to open PostgreSQL connections: {e}"
            )),
        }
    }

    /// A connection opened: PostgreSQL is reachable, no back-off.
    pub fn opened(&mut self) {
        circuit::of(self.source).succeeded();
        self.backoff = Duration::ZERO;
        self.next_open = None;
    }

    /// An open failed: the circuit hears of it (as of the pool's), the next waits longer. A
    /// failure for want of a resource of this machine (`pg::shortage`) says nothing of
    /// PostgreSQL: it is logged, and the circuit does not hear of it.
    pub fn failed(&mut self, failure: &NotOpened) {
        let next = (self.backoff * 2).clamp(BACKOFF_FIRST, BACKOFF_MAX);
        if let Some(short) = failure.short {
            crate::stats::of(self.source).pg_connects_short.inc();
            log_warning(format!(
                "pgcache: the event loop could not open a connection to PostgreSQL ({}): {short}; \
                 its misses go to the workers meanwhile",
                failure.why
            ));
            self.later(next);
            return;
        }
        let settings = self.opening.as_ref().map(|o| &o.settings);
        let message = match settings {
            Some(s) => format!(
                "PostgreSQL unavailable at {}:{}: {}",
                s.host, s.port, failure.why
            ),
            None => format!("PostgreSQL unavailable: {}", failure.why),
        };
        if failure.timed_out {
            let limit = settings.map_or(BACKOFF_MAX, |s| s.connect_timeout);
            circuit::of(self.source).went_silent(&message, limit);
        } else {
            circuit::of(self.source).failed(&message);
        }
        self.later(next);
    }

    /// Opens nothing for `wait`.
    pub fn later(&mut self, wait: Duration) {
        self.backoff = wait;
        self.next_open = Some(Instant::now() + wait);
    }
}

/// The start-up settings of the event loop's sessions: the pool's (`pool::Connector`), so a
/// statement answers alike on either.
fn startup_settings(statement_timeout_ms: u64) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("application_name", APPLICATION_NAME.to_string()),
        ("client_encoding", "UTF8".to_string()),
        ("statement_timeout", statement_timeout_ms.to_string()),
        ("default_transaction_read_only", "on".to_string()),
        ("plan_cache_mode", "force_custom_plan".to_string()),
    ];
    settings.extend(
        crate::pg::settings::VALUE_SETTINGS
            .iter()
            .map(|(name, value)| (*name, value.to_string())),
    );
    settings
}
