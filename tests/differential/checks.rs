//! One phase of checks, after a write: what PostgreSQL answers now (`Expected` for each live
//! statement's variants, `RowExpected` for rows read by key), how pgcache is asked (`Ask`:
//! the command and its options; `Plan`: one client after another, or several at once, held
//! back until all have asked, with clients that leave before their answer), and the verdict
//! on every answer. Every answer of every client is judged.

use crate::compare;
use crate::features::Feature;
use crate::statements::Stmt;
use pgcache_testkit::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::Duration;

/// PostgreSQL's answer to one variant of a live statement.
pub struct Expected {
    pub stmt: usize,
    pub variant: usize,
    pub sql: String,
    pub params: Vec<String>,
    pub page: Value,
    pub full: Value,
    pub columns: Vec<String>,
}

/// A row read by key, and PostgreSQL's answer: the row, or none.
pub struct RowExpected {
    /// The table as commands name it (`t1`, `s.t3`).
    pub table: String,
    /// The canonical pk JSON.
    pub pk: String,
    pub row: Option<Value>,
}

/// What a call adds to its command.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    pub ttl: Option<u64>,
    pub max_stale: Option<u64>,
    pub tags: Vec<&'static str>,
    pub with_key: bool,
}

#[derive(Clone, Debug)]
pub enum Ask {
    Query { e: usize, opts: Opts },
    Read { r: usize, opts: Opts },
    MultiRead { rs: Vec<usize>, opts: Opts },
    Get { r: usize },
    MGet { rs: Vec<usize> },
}

/// How one phase's calls are made.
pub enum Plan {
    /// One after another on one connection.
    Sequential(Vec<Ask>),
    /// Several clients at once. `hold`: nothing PostgreSQL answers is used until each
    /// client's first call arrived (`PGCACHE.DEBUG SENDS HOLD`: the event loop sends
    /// nothing; `FILLS HOLD`: the workers keep what they fetched), so misses of one statement
    /// join one batch or one fill; `leavers`: calls made first, by clients that close their
    /// connection before the answer.
    Concurrent {
        clients: Vec<Vec<Ask>>,
        hold: bool,
        leavers: Vec<Ask>,
    },
}

/// Where the calls go and what they must reflect.
pub struct Context<'a> {
    pub port: u16,
    /// `SOURCE <name>` on every call (its keys are named so), or the default source.
    pub source: Option<&'a str>,
    /// `AFTER` this position on every call (replication mode).
    pub after: Option<&'a str>,
    /// The key prefix of the source's entries (`pg_cache:` or `pg_cache:@other:`).
    pub prefix: String,
}

impl Context<'_> {
    /// The command for `ask`.
    pub fn command(&self, ask: &Ask, exps: &[Expected], rows: &[RowExpected]) -> redis::Cmd {
        let mut call;
        let (opts, sourced) = match ask {
            Ask::Query { e, opts } => {
                let e = &exps[*e];
                call = redis::cmd("PGCACHE.QUERY");
                call.arg(&e.sql).arg(e.params.len()).arg(&e.params);
                if let Some(ttl) = opts.ttl {
                    call.arg("TTL").arg(ttl);
                }
                (Some(opts), true)
            }
            Ask::Read { r, opts } => {
                call = redis::cmd("PGCACHE.READ");
                call.arg(&rows[*r].table).arg(&rows[*r].pk);
                if let Some(ttl) = opts.ttl {
                    call.arg(ttl);
                }
                (Some(opts), true)
            }
            Ask::MultiRead { rs, opts } => {
                call = redis::cmd("PGCACHE.MULTIREAD");
                let pks: Vec<&str> = rs.iter().map(|r| rows[*r].pk.as_str()).collect();
                call.arg(&rows[rs[0]].table)
                    .arg(format!("[{}]", pks.join(",")));
                if let Some(ttl) = opts.ttl {
                    call.arg(ttl);
                }
                (Some(opts), true)
            }
            Ask::Get { r } => {
                call = redis::cmd("PGCACHE.GET");
                call.arg(self.key(&rows[*r]));
                (None, false)
            }
            Ask::MGet { rs } => {
                call = redis::cmd("PGCACHE.MGET");
                for r in rs {
                    call.arg(self.key(&rows[*r]));
                }
                (None, false)
            }
        };
        if let Some(lsn) = self.after {
            call.arg("AFTER").arg(lsn);
        }
        if let Some(ms) = opts.and_then(|o| o.max_stale) {
            call.arg("MAXSTALE").arg(ms);
        }
        if sourced && let Some(source) = self.source {
            call.arg("SOURCE").arg(source);
        }
        if let Some(opts) = opts {
            if opts.with_key {
                call.arg("WITHKEY");
            }
            if !opts.tags.is_empty() {
                call.arg("TAG").arg(&opts.tags);
            }
        }
        call
    }

    /// A row's cache key: `<prefix><table>:<pk>`.
    fn key(&self, row: &RowExpected) -> String {
        format!("{}{}:{}", self.prefix, row.table, row.pk)
    }
}

/// The features a call draws.
pub fn drawn(ask: &Ask, after: bool, out: &mut BTreeSet<Feature>) {
    let opts = match ask {
        Ask::Query { opts, .. } => Some(opts),
        Ask::Read { opts, .. } => {
            out.insert(Feature::Read);
            Some(opts)
        }
        Ask::MultiRead { opts, .. } => {
            out.insert(Feature::MultiRead);
            Some(opts)
        }
        Ask::Get { .. } | Ask::MGet { .. } => {
            out.insert(Feature::MGet);
            None
        }
    };
    if after {
        out.insert(Feature::After);
    }
    if let Some(opts) = opts {
        if opts.ttl.is_some() {
            out.insert(Feature::Ttl);
        }
        if opts.max_stale.is_some() {
            out.insert(Feature::MaxStale);
        }
        if !opts.tags.is_empty() {
            out.insert(Feature::Tags);
        }
    }
}

/// Whether `reply` to `ask` is PostgreSQL's answer. Err: what differs.
pub fn judge(
    ask: &Ask,
    reply: &redis::RedisResult<redis::Value>,
    exps: &[Expected],
    rows: &[RowExpected],
    stmts: &[Stmt],
) -> Result<(), String> {
    let reply = reply
        .as_ref()
        .map_err(|e| format!("pgcache's error: {e}"))?;
    match ask {
        Ask::Query { e, opts } => {
            let exp = &exps[*e];
            let s = &stmts[exp.stmt];
            // WITHKEY: [result, key, generation keys] when the result was cached.
            let got: String = match reply {
                redis::Value::Array(parts) if opts.with_key => {
                    redis::from_redis_value(parts[0].clone()).map_err(|e| e.to_string())?
                }
                other => redis::from_redis_value(other.clone()).map_err(|e| e.to_string())?,
            };
            let answer = json(&got);
            compare::compare(
                &s.order_keys,
                &s.any_of_equals,
                &answer,
                &exp.page,
                &exp.full,
            )
            .and_then(|()| compare::columns(&got, &exp.columns))
            .map_err(|e| format!("{e}\n  pgcache:    {got}\n  PostgreSQL: {}", exp.page))
        }
        Ask::Read { r, .. } | Ask::Get { r } => {
            let got: Option<String> =
                redis::from_redis_value(reply.clone()).map_err(|e| e.to_string())?;
            same_row(&rows[*r], got.as_deref())
        }
        Ask::MultiRead { rs, .. } | Ask::MGet { rs } => {
            let got: Vec<Option<String>> =
                redis::from_redis_value(reply.clone()).map_err(|e| e.to_string())?;
            if got.len() != rs.len() {
                return Err(format!("{} rows for {} keys", got.len(), rs.len()));
            }
            rs.iter()
                .zip(&got)
                .try_for_each(|(r, got)| same_row(&rows[*r], got.as_deref()))
        }
    }
}

fn same_row(expected: &RowExpected, got: Option<&str>) -> Result<(), String> {
    let got = got.map(json);
    if got == expected.row {
        return Ok(());
    }
    Err(format!(
        "the row {} of {} differs\n  pgcache:    {got:?}\n  PostgreSQL: {:?}",
        expected.pk, expected.table, expected.row
    ))
}

/// Runs `plan` and returns every call with its reply, in no particular order. One after
/// another they go on `con` (a phase that must open no connection: redis-server may have no
/// file descriptor left), at once each client on a connection of its own.
pub fn run(
    cx: &Context,
    plan: &Plan,
    exps: &[Expected],
    rows: &[RowExpected],
    con: &mut redis::Connection,
) -> Vec<(Ask, redis::RedisResult<redis::Value>)> {
    match plan {
        Plan::Sequential(asks) => asks
            .iter()
            .map(|ask| {
                let reply = query_through_interrupts(&cx.command(ask, exps, rows), con);
                (ask.clone(), reply)
            })
            .collect(),
        Plan::Concurrent {
            clients,
            hold,
            leavers,
        } => {
            if *hold {
                debug(con, "SENDS", "HOLD");
                debug(con, "FILLS", "HOLD");
            }
            // Each leaver asks, is seen to have asked, and goes (its connection seen closed).
            let connected = connected_clients(con);
            for (i, ask) in leavers.iter().enumerate() {
                let name = format!("diff-{}-leaver-{i}", fresh_number());
                let stream =
                    ask_on_a_connection_of_its_own(cx.port, &name, &cx.command(ask, exps, rows));
                wait_for("a leaver's call to arrive", Duration::from_secs(20), || {
                    (asked(con, std::slice::from_ref(&name)) == 1).then_some(())
                });
                drop(stream);
            }
            wait_for("the leavers gone", Duration::from_secs(20), || {
                (connected_clients(con) <= connected).then_some(())
            });
            // Names of their own: a connection of an earlier check may still be listed, its
            // close not yet seen by the server.
            let check = fresh_number();
            let names: Vec<String> = (0..clients.len())
                .map(|i| format!("diff-{check}-client-{i}"))
                .collect();
            let released = std::sync::atomic::AtomicBool::new(!*hold);
            std::thread::scope(|scope| {
                let threads: Vec<_> = clients
                    .iter()
                    .zip(&names)
                    .map(|(asks, name)| {
                        let released = &released;
                        scope.spawn(move || {
                            let mut con = connect(cx.port);
                            redis::cmd("CLIENT")
                                .arg("SETNAME")
                                .arg(name)
                                .query::<()>(&mut con)
                                .unwrap();
                            let wait_for_release = || {
                                while !released.load(std::sync::atomic::Ordering::SeqCst) {
                                    std::thread::yield_now();
                                }
                            };
                            let replies = asks
                                .iter()
                                .enumerate()
                                .map(|(i, ask)| {
                                    if i == 1 {
                                        // Later calls wait for the release: a blocked first
                                        // call returns only after it anyway.
                                        wait_for_release();
                                    }
                                    let reply = query_through_interrupts(
                                        &cx.command(ask, exps, rows),
                                        &mut con,
                                    );
                                    (ask.clone(), reply)
                                })
                                .collect::<Vec<_>>();
                            // Connected until then: a client whose only call was answered
                            // at once stays listed as having asked.
                            wait_for_release();
                            replies
                        })
                    })
                    .collect();
                if *hold {
                    wait_for("every client's first call", Duration::from_secs(30), || {
                        (asked(con, &names) == names.len()).then_some(())
                    });
                    debug(con, "SENDS", "RELEASE");
                    debug(con, "FILLS", "RELEASE");
                    released.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                threads
                    .into_iter()
                    .flat_map(|t| t.join().unwrap())
                    .collect()
            })
        }
    }
}

/// A number no other call of this process got: connection names of their own.
fn fresh_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// How many of the clients named `names` have sent a pgcache command: CLIENT LIST's `cmd`,
/// set as the server reads the command, counts a call that blocks (a held miss) at once,
/// where INFO commandstats of Redis 7.2+ and Valkey count it only once it is answered.
fn asked(con: &mut redis::Connection, names: &[String]) -> usize {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(con).unwrap();
    list.lines()
        .filter(|line| {
            let field = |key: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .unwrap_or("")
            };
            names.iter().any(|n| n == field("name")) && field("cmd").starts_with("pgcache.")
        })
        .count()
}

/// Sends `call` on a connection of its own named `name`, whose replies are never read.
fn ask_on_a_connection_of_its_own(port: u16, name: &str, call: &redis::Cmd) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let named = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .get_packed_command();
    stream.write_all(&named).unwrap();
    stream.write_all(&call.get_packed_command()).unwrap();
    stream.flush().unwrap();
    stream
}

fn connected_clients(con: &mut redis::Connection) -> i64 {
    let info: String = redis::cmd("INFO").arg("clients").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
