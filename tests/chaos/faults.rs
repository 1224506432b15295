//! The faults a chaos run injects, one at a time, while the load runs; each returns when
//! the fault is over and says when PostgreSQL (or the server) was back and how long pgcache
//! took to answer from PostgreSQL again.

use crate::load::reconnect;
use pgcache_testkit::*;
use std::time::{Duration, Instant};

/// A connection to the node on `port` with bounded waits (`load::reconnect`): a hung server
/// fails the run instead of hanging it.
fn timed(port: u16) -> redis::Connection {
    reconnect(port).unwrap_or_else(|| panic!("the node on port {port} does not answer"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    PgRestart,
    PgFrozen,
    FeedStalled,
    ListenerKilled,
    PoolKilled,
    StatementTimeouts,
    MaxmemoryLru,
    MaxmemoryNoeviction,
    ModuleReload,
    PersistAndRestart,
    ReplicaPromoted,
}

pub const ALL: [Fault; 11] = [
    Fault::PgRestart,
    Fault::PgFrozen,
    Fault::FeedStalled,
    Fault::ListenerKilled,
    Fault::PoolKilled,
    Fault::StatementTimeouts,
    Fault::MaxmemoryLru,
    Fault::MaxmemoryNoeviction,
    Fault::ModuleReload,
    Fault::PersistAndRestart,
    Fault::ReplicaPromoted,
];

impl Fault {
    /// Whether rows older than the freshness bound may be served while it lasts: PostgreSQL
    /// cannot be reached (hits are served within `stale_if_error_ms` then), or the node the
    /// clients read is restarted, reloaded or replaced. Every other fault keeps the bound.
    pub fn excuses_old_rows(self) -> bool {
        matches!(
            self,
            Fault::PgRestart
                | Fault::PgFrozen
                | Fault::ModuleReload
                | Fault::PersistAndRestart
                | Fault::ReplicaPromoted
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::PgRestart => "PostgreSQL fast restart",
            Fault::PgFrozen => "PostgreSQL frozen (SIGSTOP)",
            Fault::FeedStalled => "change feed stalled (its backend SIGSTOPped), writes go on",
            Fault::ListenerKilled => "listener backend terminated",
            Fault::PoolKilled => "pool connections terminated",
            Fault::StatementTimeouts => "statement timeouts",
            Fault::MaxmemoryLru => "maxmemory, allkeys-lru",
            Fault::MaxmemoryNoeviction => "maxmemory, noeviction",
            Fault::ModuleReload => "MODULE UNLOAD + LOAD",
            Fault::PersistAndRestart => "BGSAVE, BGREWRITEAOF, restart from AOF",
            Fault::ReplicaPromoted => "replica promoted",
        }
    }
}

/// The servers a run works on.
pub struct World {
    pub pg: Pg,
    pub redis: Redis,
    pub replica: Redis,
    pub module_args: Vec<String>,
    /// How long faults that last (a freeze, a lock, a memory limit) are held.
    pub hold: Duration,
}

/// One injected fault.
pub struct Window {
    pub fault: Fault,
    pub start: Instant,
    pub end: Instant,
    /// From PostgreSQL (or the server) being back to pgcache answering a miss again.
    pub recovery: Option<Duration>,
}

impl Window {
    /// Whether a request sent at `sent` met this fault: sent while it lasted (until every
    /// listener listened again), or shortly before it started, its reply still due.
    pub fn covers(&self, sent: Instant) -> bool {
        sent + Duration::from_secs(2) >= self.start && sent <= self.end
    }
}

const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

impl World {
    pub fn inject(&mut self, fault: Fault) -> Window {
        let start = Instant::now();
        let back = match fault {
            Fault::PgRestart => {
                self.pg.stop();
                self.pg.restart();
                Instant::now()
            }
            Fault::PgFrozen => {
                let pids = self.pg.pids();
                signal(&pids, libc::SIGSTOP);
                std::thread::sleep(self.hold);
                signal(&pids, libc::SIGCONT);
                Instant::now()
            }
            Fault::FeedStalled => {
                // The walsender (replication) or the listeners' sessions (notify) stop while
                // the writers go on: PostgreSQL answers, the feed says nothing.
                let pids = self.listener_pids();
                signal(&pids, libc::SIGSTOP);
                std::thread::sleep(self.hold);
                signal(&pids, libc::SIGCONT);
                Instant::now()
            }
            Fault::ListenerKilled => {
                // Every node's listener (the primary's and the replica's; in replication
                // mode the primary's stream, the replica stands by).
                let before = self.listener_pids();
                self.terminate(&format!("application_name = '{}'", source_application()));
                let back = Instant::now();
                let deadline = back + RECOVERY_LIMIT;
                loop {
                    let now = self.listener_pids();
                    let listening = [self.redis.port, self.replica.port]
                        .into_iter()
                        .all(listener_connected);
                    if listening && now.iter().all(|p| !before.contains(p)) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "listeners before {before:?}, now {now:?}, all connected: {listening}"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                back
            }
            Fault::PoolKilled => {
                self.terminate("application_name = 'pgcache'");
                Instant::now()
            }
            Fault::StatementTimeouts => self.statement_timeouts(),
            Fault::MaxmemoryLru => self.memory_limit("allkeys-lru"),
            Fault::MaxmemoryNoeviction => self.memory_limit("noeviction"),
            Fault::ModuleReload => self.reload_module(),
            Fault::PersistAndRestart => self.persist_and_restart(),
            Fault::ReplicaPromoted => {
                let (promoted, answered) = self.promote_replica();
                self.listeners_listen();
                return Window {
                    fault,
                    start,
                    end: Instant::now(),
                    recovery: answered.map(|at| at - promoted),
                };
            }
        };
        let recovery = self.answers_a_miss(self.redis.port).then(|| back.elapsed());
        // The fault lasts until every listener listens again: until then, notify mode may
        // serve rows whose change it missed (docs/invalidation.md, Notify mode), and flushes them once it listens.
        self.listeners_listen();
        Window {
            fault,
            start,
            end: Instant::now(),
            recovery,
        }
    }

    fn listeners_listen(&self) {
        let deadline = Instant::now() + RECOVERY_LIMIT;
        while ![self.redis.port, self.replica.port]
            .into_iter()
            .all(listener_connected)
        {
            assert!(
                Instant::now() < deadline,
                "a listener did not reconnect within {RECOVERY_LIMIT:?}; the primary: {}\n{}\n\
                 the replica: {}\n{}",
                listener_state(self.redis.port),
                tail(&self.redis.log()),
                listener_state(self.replica.port),
                tail(&self.replica.log())
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn listener_pids(&self) -> Vec<i32> {
        self.pg
            .superuser()
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&source_application()],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Terminates the pgcache backends `condition` selects.
    fn terminate(&self, condition: &str) {
        self.pg
            .superuser()
            .execute(
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = 'app' AND {condition}"
                ),
                &[],
            )
            .unwrap();
    }

    /// Every query of pgcache's times out while a lock holds the table.
    fn statement_timeouts(&mut self) -> Instant {
        let mut con = timed(self.redis.port);
        let before = config_get(&mut con, "pgcache.statement_timeout_ms")[1].clone();
        config_set(&mut con, "pgcache.statement_timeout_ms", "100").unwrap();
        let mut locker = self.pg.superuser_of("app");
        let mut lock = locker.transaction().unwrap();
        lock.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE", &[])
            .unwrap();
        std::thread::sleep(self.hold);
        lock.rollback().unwrap();
        config_set(&mut con, "pgcache.statement_timeout_ms", &before).unwrap();
        Instant::now()
    }

    /// Redis's memory limit just above what it uses, with `policy`, for a while.
    fn memory_limit(&mut self, policy: &str) -> Instant {
        let mut con = timed(self.redis.port);
        let used = info_int(&mut con, "memory", "used_memory");
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "maxmemory-policy", policy])
            .query(&mut con)
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "maxmemory", &(used + 256 * 1024).to_string()])
            .query(&mut con)
            .unwrap();
        std::thread::sleep(self.hold);
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "maxmemory", "0"])
            .query(&mut con)
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "maxmemory-policy", "noeviction"])
            .query(&mut con)
            .unwrap();
        Instant::now()
    }

    /// PGCACHE.DRAIN until nothing waits for PostgreSQL, MODULE UNLOAD (Redis refuses it
    /// while a client waits on the module), then LOAD: what docs/commands.md (PGCACHE.DRAIN) tells operators to do.
    fn reload_module(&mut self) -> Instant {
        let mut con = timed(self.redis.port);
        let mut refusals = std::collections::BTreeMap::<String, u64>::new();
        let deadline = Instant::now() + RECOVERY_LIMIT;
        loop {
            let waiting: i64 = redis::cmd("PGCACHE.DRAIN").arg(5).query(&mut con).unwrap();
            if waiting == 0 {
                match redis::cmd("MODULE")
                    .arg(&["UNLOAD", "pgcache"])
                    .query::<()>(&mut con)
                {
                    Ok(()) => break,
                    Err(e) => *refusals.entry(e.to_string()).or_default() += 1,
                }
            }
            assert!(
                Instant::now() < deadline,
                "MODULE UNLOAD refused: {refusals:?}"
            );
        }
        let _: () = redis::cmd("MODULE")
            .arg("LOAD")
            .arg(module_path().to_str().unwrap())
            .arg(&self.module_args)
            .query(&mut con)
            .unwrap();
        Instant::now()
    }

    /// BGSAVE and BGREWRITEAOF to their end, then a restart that loads the AOF.
    fn persist_and_restart(&mut self) -> Instant {
        let mut con = timed(self.redis.port);
        for (command, running) in [
            ("BGSAVE", "rdb_bgsave_in_progress:0"),
            ("BGREWRITEAOF", "aof_rewrite_in_progress:0"),
        ] {
            wait_for(command, RECOVERY_LIMIT, || {
                redis::cmd(command).query::<String>(&mut con).ok()
            });
            wait_for(&format!("{command} to end"), RECOVERY_LIMIT, || {
                let info: String = redis::cmd("INFO")
                    .arg("persistence")
                    .query(&mut con)
                    .unwrap();
                (info.contains(running) && info.contains("aof_rewrite_scheduled:0")).then_some(())
            });
        }
        self.redis.restart();
        Instant::now()
    }

    /// Promotes the replica and reads through it while the writers change rows, then makes
    /// it its old primary's replica again (the run always keeps a replica that is one).
    /// Returns when it was promoted and when it first answered a miss.
    fn promote_replica(&mut self) -> (Instant, Option<Instant>) {
        let mut con = timed(self.replica.port);
        let _: () = redis::cmd("REPLICAOF")
            .arg(&["NO", "ONE"])
            .query(&mut con)
            .unwrap();
        let promoted = Instant::now();
        let answered = self.answers_a_miss(self.replica.port).then(Instant::now);
        let until = promoted + self.hold;
        let mut id = 0;
        while Instant::now() < until {
            id = (id + 7) % crate::load::ROWS;
            let _ = read(&mut con, "items", &format!(r#"{{"id":{id}}}"#));
        }
        let _: () = redis::cmd("REPLICAOF")
            .arg(&["127.0.0.1", &self.redis.port.to_string()])
            .query(&mut con)
            .unwrap();
        wait_for("the replica to sync again", RECOVERY_LIMIT, || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .unwrap();
            info.contains("master_link_status:up").then_some(())
        });
        (promoted, answered)
    }

    /// Waits until the server on `port` answers a READ from PostgreSQL: the key is dropped
    /// first, so the answer cannot come from the cache.
    fn answers_a_miss(&self, port: u16) -> bool {
        let deadline = Instant::now() + RECOVERY_LIMIT;
        while Instant::now() < deadline {
            if let Some(mut con) = reconnect(port) {
                let pk = r#"{"id":1}"#;
                let dropped = invalidate(&mut con, "items", pk).is_ok();
                if dropped && matches!(read(&mut con, "items", pk), Ok(Some(_))) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

/// The application name of the invalidation source's session in the mode the run uses.
fn source_application() -> &'static str {
    if invalidation_source() == "replication" {
        "pgcache-replication"
    } else {
        "pgcache-listener"
    }
}

/// What the node on `port` says of its listener.
fn listener_state(port: u16) -> String {
    let Some(mut con) = reconnect(port) else {
        return "does not answer".into();
    };
    let health: redis::RedisResult<Vec<redis::Value>> =
        redis::cmd("PGCACHE.HEALTH").query(&mut con);
    format!("{health:?}")
}

/// The last lines of a server's log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Whether the node on `port` says its listener is connected.
fn listener_connected(port: u16) -> bool {
    let Some(mut con) = reconnect(port) else {
        return false;
    };
    info_value(&mut con, "pgcache", "pgcache_listener").as_deref() == Some("connected")
}

fn signal(pids: &[i32], signal: i32) {
    for pid in pids {
        // SAFETY: plain kill(2) on a process of this test's PostgreSQL.
        unsafe { libc::kill(*pid, signal) };
    }
}
