//! Faults around a phase of checks, each with the rule it holds pgcache to (issue #70 items 5
//! to 7): what a fault leaves behind, the phase's checks then judge like any other answer.
//!
//! - `Shortage`: redis-server can open no file while its event loop opens its connections.
//!   Misses are answered (by the workers' connections) or fail saying the server ran short,
//!   never that PostgreSQL is unavailable; the circuit stays closed.
//! - `pg_restart`: PostgreSQL stopped long enough for the prober to back off to a second,
//!   then started. No call is refused with a check of PostgreSQL older than 100 ms.
//! - `rdb_restart` (replication mode): redis-server restarted from its RDB. While HEALTH says
//!   hits are served, a cached statement's call is a hit.

use crate::runner::Runner;
use crate::source_figure;
use pgcache_testkit::*;
use std::time::{Duration, Instant};

/// redis-server's soft open-files limit held at none, its event loop's connections closed
/// (they open again on the next misses, and cannot).
pub struct Shortage {
    limit: u64,
    loop_connections: String,
}

impl Shortage {
    /// None while the circuit is open (a fault before may have left it so for a moment).
    pub fn begin(runner: &mut Runner) -> Option<Shortage> {
        let source = runner.source();
        if source_figure(&mut runner.con, source, "postgres_circuit_open") == 1 {
            return None;
        }
        let con = &mut runner.con;
        let loop_connections = config_get(con, "pgcache.loop_connections")[1].clone();
        let limit = open_files_limit(runner.running.stack.redis.pid(), 0);
        // Another value closes every loop connection; the next misses open them again.
        let more = (loop_connections.parse::<u32>().unwrap() + 1).to_string();
        config_set(con, "pgcache.loop_connections", more).unwrap();
        Some(Shortage {
            limit,
            loop_connections,
        })
    }

    /// Files again; Err if the circuit opened meanwhile (a shortage taken for an outage).
    pub fn end(self, runner: &mut Runner) -> Result<(), String> {
        let source = runner.source();
        let open = source_figure(&mut runner.con, source, "postgres_circuit_open");
        open_files_limit(runner.running.stack.redis.pid(), self.limit);
        config_set(
            &mut runner.con,
            "pgcache.loop_connections",
            &self.loop_connections,
        )
        .unwrap();
        if open == 1 {
            return Err(
                "the circuit to PostgreSQL opened while redis-server had no file descriptor \
                 left: a shortage of this machine taken for PostgreSQL being down"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Sets process `pid`'s soft open-files limit to `n`; returns the one it had.
fn open_files_limit(pid: u32, n: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reading the limit into a valid rlimit.
    let read = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(read, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: n,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit with a valid rlimit, the old value not asked for.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// PostgreSQL stopped until the circuit is open and the prober checks only every second, then
/// started: every call refused from then on must have checked PostgreSQL within 100 ms, and
/// the circuit closes (calls that miss: each asks a value of its own).
pub fn pg_restart(runner: &mut Runner) -> Result<(), String> {
    let source = runner.source();
    runner.running.stack.pg.stop();
    wait_for("the circuit to open", Duration::from_secs(30), || {
        (source_figure(&mut runner.con, source, "postgres_circuit_open") == 1).then_some(())
    });
    // The outage lasts: the prober's pauses grow to their longest (1 s).
    std::thread::sleep(Duration::from_millis(1500));
    runner.running.stack.pg.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        let mut call = redis::cmd("PGCACHE.QUERY");
        call.arg("SELECT $1::integer AS n").arg(1).arg(-1 - n);
        if let Some(source) = source {
            call.arg("SOURCE").arg(source);
        }
        match query_through_interrupts::<redis::Value>(&call, &mut runner.con) {
            Ok(_) if source_figure(&mut runner.con, source, "postgres_circuit_open") == 0 => break,
            Ok(_) => {}
            Err(err) => {
                let text = err.to_string();
                if let Some(checked) = text
                    .split("last checked ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|s| s.parse::<f64>().ok())
                    && checked > 0.1
                {
                    return Err(format!(
                        "PostgreSQL was back, and a call was refused with its last check \
                         {checked} s old: {text}"
                    ));
                }
            }
        }
        if Instant::now() > deadline {
            return Err("the circuit stayed open 30 s after PostgreSQL restarted".into());
        }
    }
    runner.reconnect();
    Ok(())
}

/// redis-server saved and restarted with a cached row in its RDB: from the moment HEALTH says
/// hits are served, a READ of the row is a hit. (A row's entry outlives a restart in
/// replication mode, the position coming with it; a row-precise QUERY result may not: its
/// index of rows lived in memory.)
pub fn rdb_restart(runner: &mut Runner, lsn: Option<&str>) -> Result<(), String> {
    let source = runner.source();
    let Some(table) = runner
        .case
        .schema
        .tables
        .iter()
        .find(|t| t.keyed && !t.omitted && t.layout == crate::schema::Layout::Plain)
    else {
        return Ok(());
    };
    let prefix = match source {
        None => "pg_cache:".to_string(),
        Some(name) => format!("pg_cache:@{name}:"),
    };
    let read = |id: usize| {
        let mut call = redis::cmd("PGCACHE.READ");
        call.arg(&table.name).arg(format!(r#"{{"id":{id}}}"#));
        if let Some(source) = source {
            call.arg("SOURCE").arg(source);
        }
        call
    };
    // A row cached (AFTER the last write, so what is cached is current) for long enough to
    // outlive the restart; none (rows gone, tables renamed away): nothing to check.
    let cached = (1..=5).find(|&id| {
        let mut after = read(id);
        if let Some(lsn) = lsn {
            after.arg("AFTER").arg(lsn);
        }
        let row = query_through_interrupts::<Option<String>>(&after, &mut runner.con);
        let key = format!("{prefix}{}:{{\"id\":{id}}}", table.name);
        matches!(row, Ok(Some(_))) && {
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut runner.con).unwrap();
            ttl > 60_000
        }
    });
    let Some(id) = cached else {
        return Ok(());
    };
    let hits = |con: &mut redis::Connection| source_figure(con, source, "hits");
    let _: () = redis::cmd("SAVE").query(&mut runner.con).unwrap();
    runner.running.stack.redis.restart();
    runner.reconnect();
    let mut health = redis::cmd("PGCACHE.HEALTH");
    if let Some(source) = source {
        health.arg("SOURCE").arg(source);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = nested(&health.query(&mut runner.con).unwrap());
        let said: String = redis::from_redis_value(report["hits"].clone()).unwrap();
        let key = format!("{prefix}{}:{{\"id\":{id}}}", table.name);
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut runner.con)
            .unwrap();
        let flushing = |con: &mut redis::Connection| source_figure(con, source, "flushes_running");
        let flushes_before = flushing(&mut runner.con);
        let before = hits(&mut runner.con);
        let stale_before = source_figure(&mut runner.con, source, "bypassed_stale");
        query_through_interrupts::<Option<String>>(&read(id), &mut runner.con)
            .map_err(|e| format!("after the restart: {e}"))?;
        let hit = hits(&mut runner.con) > before;
        // What HEALTH does not speak for: the horizon passing the bound between HEALTH and
        // the READ (while the stream catches up it may be vouched for a moment at a time),
        // and changes the stream replays from the position the RDB held (an entry dropped,
        // a table's flush under way).
        let aged = source_figure(&mut runner.con, source, "bypassed_stale") > stale_before;
        let replayed = !exists || flushes_before > 0 || flushing(&mut runner.con) > 0;
        if said == "served" && !aged && !replayed {
            if hit {
                return Ok(());
            }
            let stats = nested(&redis::cmd("PGCACHE.STATS").query(&mut runner.con).unwrap());
            let figure = |name: &str| figure(&stats, name);
            let log = runner.running.stack.redis.log();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            return Err(format!(
                "after a restart from the RDB, HEALTH said hits are served, and a READ of \
                 {key} (cached before it, and there) went to PostgreSQL (misses {}, \
                 bypassed_stale {}, hits_served {}); the server's log, last first:\n{}",
                figure("misses"),
                figure("bypassed_stale"),
                figure("hits_served"),
                tail.join("\n")
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "HEALTH never said hits are served after the restart: {said}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
