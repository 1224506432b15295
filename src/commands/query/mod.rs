//! PGCACHE.QUERY <sql> <nparams> [param ...] [TTL seconds] [AFTER lsn] [MAXSTALE ms]
//!
//! The result of a parameterised SELECT as one JSON array of row objects. A hit is a lookup
//! of the statement's text in the statement table, the parameters canonicalised, the
//! generations of its tables read, one hash and one key opened: no SQL is parsed. A miss runs
//! the statement on a worker in a READ ONLY transaction and caches its result under the key
//! built before it ran (`query::generations` says why that is never stale). A statement seen
//! for the first time is parsed and learned from the catalog on the worker first.

mod batch;

use crate::cache;
use crate::cache::applied;
use crate::cache::bypass;
use crate::cache::fill::{self, Asked, FillTicket, LeadOrWait, Outcome};
use crate::cache::miss::Read;
use crate::cache::worker;
use crate::commands::docs::{Arg, Command, Keys, Params};
use crate::commands::{ReadOptions, ttl_arg, utf8};
use crate::config::current;
use crate::error::{Error, Result};
use crate::model::key::canonicalise_value;
use crate::model::lsn::Lsn;
use crate::pg::errors::{is_schema_change, statement_error};
use crate::pg::pool::Connection;
use crate::pg::schema::TableSchema;
use crate::pg::session::Failure;
use crate::query::key::{canonical_params, push_route, route_key};
use crate::query::precision::{self, Precision, SideMatch};
use crate::query::statement;
use crate::query::{Statement, catalog, generations, membership, statements};
use crate::redis::acl;
use crate::redis::cluster;
use crate::redis::keyspace;
use crate::redis::main_thread;
use crate::redis::reply;
use crate::requests::blocked::Completion;
use crate::requests::reply::Reply;
use crate::stats::slowlog::truncate_key;
use crate::stats::{self, Tracked};
use compact_str::CompactString;
use redis_module::Context;
use std::sync::Arc;
use std::time::Duration;

pub static QUERY: Command = Command {
    name: "pgcache.query",
    entry: super::command_fn!(QUERY),
    handler: query,
    tracked: Some(Tracked::Query),
    flags: "readonly",
    summary: "Returns a SELECT's result as a JSON array of rows, from the cache or, on a miss, \
              from PostgreSQL",
    since: "0.3.0",
    complexity: "O(parameters) on a hit; one PostgreSQL query on a miss",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[
        Arg::text("sql"),
        Arg::integer("nparams"),
        Arg::text("param").optional().multiple(),
        Arg::ttl_seconds(),
        Arg::after(),
        Arg::max_stale(),
    ]),
};

/// Longest statement text accepted: each remembered spelling is kept in memory
/// (`query_max_statements` of them), so their size is bounded too.
const MAX_STATEMENT_BYTES: usize = 64 * 1024;

/// How long a worker waits for the main thread to read a new statement's generations.
const GENERATIONS_LIMIT: Duration = Duration::from_millis(100);

/// A call's arguments.
struct Call<'a> {
    sql: &'a [u8],
    params: &'a [&'a [u8]],
    ttl: u64,
    options: ReadOptions,
}

fn parse_call<'a>(args: &'a [&'a [u8]]) -> Result<Call<'a>> {
    let nparams: usize = utf8(args[2], "nparams")?.parse().map_err(|_| {
        Error::invalid(format!(
            "nparams must be the number of parameters that follow the statement, got {:?}",
            String::from_utf8_lossy(args[2])
        ))
    })?;
    let given = args.len() - 3;
    if nparams > given {
        return Err(Error::invalid(format!(
            "nparams is {nparams} but only {given} arguments follow it"
        )));
    }
    let (params, rest) = args[3..].split_at(nparams);
    let mut ttl = None;
    let mut others: Vec<&[u8]> = Vec::new();
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        if arg.eq_ignore_ascii_case(b"TTL") && ttl.is_none() {
            ttl = ttl_arg(Some(rest.next().ok_or_else(|| {
                Error::invalid("TTL needs a number of seconds, such as TTL 60")
            })?))?;
        } else {
            others.push(arg);
        }
    }
    let options = ReadOptions::parse_many(&others)?;
    if options.ttl.is_some() {
        return Err(Error::invalid(
            "after the parameters come [TTL <seconds>], [AFTER <lsn>] and [MAXSTALE <ms>]; \
             is nparams right?",
        ));
    }
    Ok(Call {
        sql: args[1],
        params,
        ttl: ttl.unwrap_or_else(current::default_ttl),
        options,
    })
}

pub fn query(ctx: &Context, args: &[&[u8]]) -> Reply {
    let call = match parse_call(args) {
        Ok(call) => call,
        Err(e) => return e.into(),
    };
    let read = match call.options.read() {
        Ok(read) => read,
        Err(e) => return e.into(),
    };
    match statements::get(call.sql) {
        Some(statement) => known(ctx, statement, &call, read).unwrap_or_else(Reply::from),
        None if call.sql.len() > MAX_STATEMENT_BYTES => Error::invalid(format!(
            "the statement is {} bytes; PGCACHE.QUERY takes statements of up to \
             {MAX_STATEMENT_BYTES} bytes (pass long lists as parameters, such as = ANY($1))",
            call.sql.len()
        ))
        .into(),
        None => first_sight(ctx, &call, read),
    }
}

/// A statement learned before: the hit path, or a miss run on a worker.
fn known(ctx: &Context, statement: Arc<Statement>, call: &Call, read: Read) -> Result<Reply> {
    may_read_tables(ctx, &statement)?;
    statement.admitted()?;
    takes(&statement, call.params.len())?;
    let params = canonical_params(&statement, call.params)?;
    let Some(key) = key_now(ctx, &statement, &params) else {
        if cluster::enabled() {
            cluster::check(ctx, &route_key(&statement, &params))?;
        }
        return Ok(batch::run(ctx, statement, params, None));
    };
    if read == Read::Cached && !bypass::bypassed(key.as_bytes()) && reply_if_cached(ctx, &key) {
        statement.stats.calls.inc();
        statement.stats.hits.inc();
        stats::QUERY_HITS.inc();
        return Ok(Reply::Sent);
    }
    // On a cluster, the node serving the result's slot (the route's: they share the hash
    // tag) runs a miss; others redirect, as for READ.
    cluster::check(ctx, &key)?;
    if read == Read::Cached {
        let timeout_ms = current::request_timeout_ms();
        let key: Arc<str> = key.into();
        let asked = Asked {
            table: statement.stats.clone(),
            pk: String::new(),
            readable_as: Some(statement.readable_as.clone()),
        };
        return Ok(match fill::lead_or_wait(ctx, key, timeout_ms, asked) {
            LeadOrWait::Wait => Reply::Blocked,
            LeadOrWait::Lead(ticket) => {
                let fill = Fill::new(ticket, call.ttl, &params);
                batch::run(ctx, statement, params, Some(fill))
            }
        });
    }
    if let Read::After(lsn) = read {
        return Ok(once_applied(ctx, statement, params, call.ttl, lsn));
    }
    // The feed cannot vouch for the cache: PostgreSQL answers, and its answer may be cached
    // (taken after the key's generations).
    let ticket = fill::lead(key.into());
    let fill = Fill::new(ticket, call.ttl, &params);
    Ok(batch::run(ctx, statement, params, Some(fill)))
}

/// `AFTER <lsn>` ahead of what the feed applied: a worker waits (at most `after_wait_ms`)
/// for the feed to apply it, then the result is answered from the cache if it holds it, as
/// READ does; else (or when the wait ran out) PostgreSQL answers, its answer cached under
/// the generations read after the client's commit.
fn once_applied(
    ctx: &Context,
    statement: Arc<Statement>,
    params: Vec<String>,
    ttl: u64,
    lsn: Lsn,
) -> Reply {
    let db = keyspace::selected_db(ctx);
    worker::submit(
        ctx,
        Box::new(move |conn| {
            let read = if applied::wait_for(lsn, current::after_wait()) {
                Read::Cached
            } else {
                Read::FromPostgres
            };
            let fill = match look_up_from_worker(db, &statement, &params, read)? {
                Some(Looked::Cached(result)) => return Ok(cached_completion(statement, result)),
                Some(Looked::Lead(ticket)) => Some(Fill::new(ticket, ttl, &params)),
                None => None,
            };
            let outcome = execute(conn, &statement, &params);
            Ok(completion(statement, outcome, fill))
        }),
    )
}

/// Refuses a call whose parameter count is not the statement's.
fn takes(statement: &Statement, given: usize) -> Result<()> {
    if statement.params.len() == given {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "the statement takes {} parameters ($1..${}), got nparams {given}",
        statement.params.len(),
        statement.params.len()
    )))
}

/// The client's ACL user must be allowed to read every table the statement reads as data,
/// as READ checks the row's key: the generation key stands for the table's keys.
fn may_read_tables(ctx: &Context, statement: &Statement) -> Result<()> {
    for table in &statement.data_tables {
        if !cache::readable(ctx, table.key_prefix.as_bytes(), b"~gen") {
            return Err(acl::no_read_permission(&generations::key_name(
                &table.key_prefix,
            )));
        }
    }
    Ok(())
}

/// The result's key under the current generations, in the context's DB; None where results
/// are not cached (a replica before its primary made the generations).
fn key_now(ctx: &Context, statement: &Statement, params: &[String]) -> Option<String> {
    let mut key = String::with_capacity(statement.key_head.len() + 64);
    key.push_str(&statement.key_head);
    push_route(&mut key, params);
    generations::append_current(ctx, &statement.generation_keys, &mut key).then_some(key)
}

fn reply_if_cached(ctx: &Context, key: &str) -> bool {
    keyspace::with_name(ctx, key.as_bytes(), |k| {
        keyspace::read_string(ctx, k, |value| reply::bulk(ctx, value))
    })
    .is_some()
}

/// A statement not in the statement table: parsed on a worker (and learned from the
/// catalog unless another spelling of it was), then answered from the cache if it holds the
/// result, else run, the result cached under the key of the generations the main thread
/// read before it ran.
fn first_sight(ctx: &Context, call: &Call, read: Read) -> Reply {
    let sql = call.sql.to_vec();
    let params: Vec<Vec<u8>> = call.params.iter().map(|p| p.to_vec()).collect();
    let ttl = call.ttl;
    let db = keyspace::selected_db(ctx);
    // Whose read permissions the worker checks before anything runs (None: every user
    // reads every key).
    let user = acl::reads_may_be_refused(ctx)
        .then(|| acl::current_user(ctx))
        .flatten();
    worker::submit(
        ctx,
        Box::new(move |conn| {
            let statement = learn_as(conn, &sql, user.as_deref())?;
            statement.admitted()?;
            takes(&statement, params.len())?;
            let refs: Vec<&[u8]> = params.iter().map(Vec::as_slice).collect();
            let params = canonical_params(&statement, &refs)?;
            let ticket = match look_up_from_worker(db, &statement, &params, read)? {
                Some(Looked::Cached(result)) => return Ok(cached_completion(statement, result)),
                Some(Looked::Lead(ticket)) => ticket,
                None => {
                    let outcome = execute(conn, &statement, &params);
                    return Ok(completion(statement, outcome, None));
                }
            };
            let fill = Some(Fill::new(ticket, ttl, &params));
            let outcome = execute(conn, &statement, &params);
            Ok(completion(statement, outcome, fill))
        }),
    )
}

/// The statement `sql` spells: parsed, and learned from the catalog unless another
/// spelling of it was; remembered under this spelling.
pub fn learn(conn: &mut Connection, sql: &[u8]) -> Result<Arc<Statement>> {
    learn_as(conn, sql, None)
}

/// `learn`, for the ACL user `user` (None: one who may read every key): the tables behind
/// the relations the statement names are checked against its read permissions before the
/// catalog is asked anything of the statement, and the tables it reads once it is learned,
/// so a user who may not read them learns nothing from an answer, an error or how long
/// either took.
fn learn_as(conn: &mut Connection, sql: &[u8], user: Option<&str>) -> Result<Arc<Statement>> {
    let text =
        std::str::from_utf8(sql).map_err(|_| Error::invalid("the statement is not valid UTF-8"))?;
    let parsed = statement::parse(text)?;
    if let Some(user) = user {
        let named = catalog::named_tables(conn, &parsed)?;
        let keys: Vec<String> = named
            .iter()
            .map(|name| {
                generations::key_name(&crate::model::key::cache_key(
                    &current::cache_prefix(),
                    &name.display(),
                    "",
                ))
            })
            .collect();
        user_may_read(user, keys)?;
    }
    // What the catalog said is kept only if no DDL made pgcache forget its statements
    // meanwhile (a view replaced while its statement was learned would leave it reading
    // the old view's tables): learned again then.
    for _ in 0..LEARNING_ATTEMPTS {
        let epoch = statements::epoch();
        let statement = learned(conn, &parsed)?;
        if let Some(user) = user {
            user_may_read(user, statement.readable_as.to_vec())?;
        }
        if statements::remember(epoch, sql, statement.clone()) {
            return Ok(statement);
        }
    }
    Err(Error::postgres(
        "the tables and views the statement reads kept changing (DDL) while it was learned; \
         try again",
    ))
}

/// How many times a statement is learned while DDL keeps changing what it reads.
const LEARNING_ATTEMPTS: usize = 3;

/// Refuses (NOPERM) unless the ACL user `user` may read every key of `keys`, asked on the
/// main thread from a worker.
fn user_may_read(user: &str, keys: Vec<String>) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let user = user.to_string();
    let refused = main_thread::ask(
        move |ctx| {
            keys.into_iter()
                .find(|key| !acl::user_may_read(ctx, &user, key))
        },
        Duration::from_millis(current::request_timeout_ms()),
    )
    .ok_or_else(|| {
        // A busy event loop, not a fault: the caller may try again.
        Error::timeout("the permission check waited too long for the event loop; try again")
    })?;
    match refused {
        Some(key) => Err(acl::no_read_permission(&key)),
        None => Ok(()),
    }
}

/// What `parsed` is: the statement learned under another spelling, or learned now.
fn learned(conn: &mut Connection, parsed: &statement::Parsed) -> Result<Arc<Statement>> {
    Ok(match statements::with_canonical(&parsed.canonical) {
        Some(statement) => statement,
        None => {
            let row_wanted = current::query_row_precision();
            let learned = catalog::learn(conn, parsed)?;
            let precision = precision::decide(conn, &parsed.shape, &learned)?;
            let members = match (&precision, &parsed.shape) {
                (Precision::Row(m), Ok(shape)) => Some(catalog::Members {
                    candidates_sql: &shape.candidates_sql,
                    sides: m
                        .sides
                        .iter()
                        .zip(&shape.sides)
                        .map(|(matched, side)| catalog::MemberSide {
                            reference: &side.reference,
                            table: &matched.table,
                            own_rows: side.own_rows.as_deref(),
                        })
                        .collect(),
                    page: m.page.as_ref().and(shape.page.as_ref()),
                }),
                _ => None,
            };
            let run_sql = catalog::run_sql(parsed, &learned.params, members.as_ref())?;
            // A batch PostgreSQL refuses (a parameter in LIMIT may not come from a LATERAL
            // join) leaves the statement's misses to run one by one.
            let batch_sql = catalog::batch_sql(parsed, &learned.params, members.as_ref())?
                .filter(|sql| conn.prepare(sql).is_ok());
            Arc::new(Statement::new(
                &current::cache_prefix(),
                parsed.canonical.clone(),
                learned.params,
                learned.tables,
                learned.listed,
                precision,
                row_wanted,
                run_sql,
                batch_sql,
            ))
        }
    })
}

/// What the main thread found for a worker's new statement.
enum Looked {
    /// The result, cached (under another spelling).
    Cached(String),
    /// Not cached: the ticket of its fill, registered on the main thread with the key's
    /// generations read, so no change applied after them goes unseen by the fill.
    Lead(FillTicket),
}

/// From a worker: the result if the cache holds it and the read may take it from there,
/// else the ticket to fill it under the generations of the client's DB `db` (None: results
/// are not cached here now, or the main thread did not answer in time); on a cluster node
/// that does not serve the result's slot, the redirection.
fn look_up_from_worker(
    db: i32,
    statement: &Arc<Statement>,
    params: &[String],
    read: Read,
) -> Result<Option<Looked>> {
    if read == Read::Unvouched && !cluster::enabled() {
        return Ok(None);
    }
    let (statement, params) = (statement.clone(), params.to_vec());
    main_thread::ask(
        move |ctx| {
            if cluster::enabled() {
                cluster::check(ctx, &route_key(&statement, &params))?;
            }
            if read == Read::Unvouched {
                return Ok(None);
            }
            let mut found = None;
            keyspace::in_each_db(ctx, [db], |_| {
                found = key_now(ctx, &statement, &params).map(|key| {
                    let cached = (read == Read::Cached && !bypass::bypassed(key.as_bytes()))
                        .then(|| cached_value(ctx, &key))
                        .flatten();
                    match cached {
                        Some(result) => Looked::Cached(result),
                        None => Looked::Lead(fill::lead(key.into())),
                    }
                });
            });
            Ok(found)
        },
        GENERATIONS_LIMIT,
    )
    .unwrap_or(Ok(None))
}

fn cached_value(ctx: &Context, key: &str) -> Option<String> {
    keyspace::with_name(ctx, key.as_bytes(), |k| {
        keyspace::read_string(ctx, k, |value| String::from_utf8_lossy(value).into_owned())
    })
}

/// Answers a new spelling's call from the cache (the result was cached under another).
fn cached_completion(statement: Arc<Statement>, result: String) -> Completion {
    Box::new(move |ctx| {
        if let Err(e) = may_read_tables(ctx, &statement) {
            return Reply::Error(e);
        }
        statement.stats.hits.inc();
        stats::QUERY_HITS.inc();
        described(Reply::Bulk(result), &statement, 0)
    })
}

/// A miss whose result is to be cached: its key's ticket, for `ttl` seconds; the
/// parameters (canonical) say which values a row-precise result admits.
pub struct Fill {
    pub ticket: FillTicket,
    pub ttl: u64,
    pub params: Vec<String>,
}

impl Fill {
    pub fn new(ticket: FillTicket, ttl: u64, params: &[String]) -> Fill {
        Fill {
            ticket,
            ttl,
            params: params.to_vec(),
        }
    }
}

/// What a run found.
#[derive(Clone)]
pub struct Ran {
    /// The result as one JSON array.
    pub json: String,
    pub rows: u64,
    /// A row-precise statement's members, per side: the primary keys (canonical) of every
    /// row its WHERE admitted; None when there were more than `catalog::MAX_MEMBERS` (the
    /// result is then not cached).
    pub members: Option<Vec<Vec<CompactString>>>,
    /// A page's last member's sort key (values as text, None for NULL).
    pub last: Option<Vec<Option<String>>>,
}

pub type Run = Result<Ran>;

/// Runs the statement in a READ ONLY transaction (under the session's statement_timeout).
pub fn execute(conn: &mut Connection, statement: &Statement, params: &[String]) -> Run {
    let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = conn
        .query_read_only(&statement.run_sql, &values)
        .map_err(|e| failed(statement, &e))?;
    let row = rows
        .first()
        .ok_or_else(|| Error::internal("the statement's result came back without its row"))?;
    ran(statement, row)
}

/// A run's row: the result, its row count and (row-precise statements) its members.
pub fn ran(statement: &Statement, row: &tokio_postgres::Row) -> Run {
    let count: i64 = row.get(1);
    let (members, last) = match statement.precision.row() {
        Some(m) => {
            let keys: Option<String> = row.get(2);
            match m.sides.as_slice() {
                [side] => {
                    let (members, last) =
                        members_of(&side.table, keys.as_deref(), m.page.is_some());
                    (members.map(|members| vec![members]), last)
                }
                sides => (joined_members_of(sides, keys.as_deref()), None),
            }
        }
        None => (None, None),
    };
    Ok(Ran {
        json: row.get(0),
        rows: count as u64,
        members,
        last,
    })
}

/// The canonical primary keys of the members' JSON (an array of key objects, or for a
/// page of `[key, [sort key values]]`; NULL for none), and a page's last sort key; no keys
/// past `MAX_MEMBERS` or for a key that does not read as the table's.
fn members_of(
    table: &TableSchema,
    keys: Option<&str>,
    page: bool,
) -> (Option<Vec<CompactString>>, Option<Vec<Option<String>>>) {
    let Some(keys) = keys else {
        return (Some(Vec::new()), None);
    };
    let Ok(keys) = serde_json::from_str::<Vec<serde_json::Value>>(keys) else {
        return (None, None);
    };
    if keys.len() > catalog::MAX_MEMBERS {
        return (None, None);
    }
    let members = keys
        .iter()
        .map(|member| canonical_key(if page { member.get(0)? } else { member }, table))
        .collect();
    let last = page
        .then(|| keys.last()?.get(1)?.as_array().cloned())
        .flatten()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect()
        });
    (members, last)
}

/// A join's members, side by side, from one array of key objects per side; None past
/// `MAX_MEMBERS` rows (a JSON string says so) or for a key that does not read as its
/// table's.
fn joined_members_of(sides: &[SideMatch], keys: Option<&str>) -> Option<Vec<Vec<CompactString>>> {
    let keys = serde_json::from_str::<Vec<Vec<serde_json::Value>>>(keys?).ok()?;
    if keys.len() != sides.len() {
        return None;
    }
    sides
        .iter()
        .zip(&keys)
        .map(|(side, keys)| {
            keys.iter()
                .map(|key| canonical_key(key, &side.table))
                .collect()
        })
        .collect()
}

/// A member's primary key object, canonical (None: it does not read as the table's).
fn canonical_key(key: &serde_json::Value, table: &TableSchema) -> Option<CompactString> {
    canonicalise_value(key, table)
        .ok()
        .filter(|k| !k.unconfirmed)
        .map(|k| k.json)
}

/// The error of a statement that failed; one whose tables changed under it (a column or
/// table gone, a type changed) is forgotten, to be learned afresh by the next call.
pub fn failed(statement: &Statement, failure: &Failure) -> Error {
    if is_schema_change(failure) {
        statements::forget(&statement.canonical);
    }
    statement_error(failure)
}

/// The main-thread half of a run: cache the result when a ticket came with it, it is not
/// too big, and the cache admits it; then reply.
pub fn completion(statement: Arc<Statement>, outcome: Run, fill: Option<Fill>) -> Completion {
    Box::new(move |ctx| {
        // A statement seen for the first time had its tables' permissions unchecked so far.
        if let Err(e) = may_read_tables(ctx, &statement) {
            return Reply::Error(e);
        }
        statement.stats.misses.inc();
        stats::QUERY_MISSES.inc();
        if let Ok(ran) = &outcome {
            statement.figures.result_bytes.add(ran.json.len() as u64);
        }
        let shared: Outcome = match &outcome {
            Ok(ran) => Ok(Some(ran.json.clone())),
            Err(e) => Err(e.clone()),
        };
        if let Some(Fill {
            ticket,
            ttl,
            params,
        }) = fill
        {
            ticket.answer_waiters(&shared);
            let (key, fresh) = ticket.finish(&shared);
            if let Ok(ran) = &outcome
                && fresh
            {
                cache_result(ctx, &statement, &key, ran, ttl, &params);
            }
        }
        match outcome {
            Ok(ran) => described(Reply::Bulk(ran.json), &statement, ran.rows),
            Err(e) => described(Reply::Error(e), &statement, 0),
        }
    })
}

/// Caches a fresh result under `key` unless it is too big (or, row-precise, built from too
/// many rows, or past the index's room); a row-precise one is indexed as it is written.
fn cache_result(
    ctx: &Context,
    statement: &Arc<Statement>,
    key: &Arc<str>,
    ran: &Ran,
    ttl: u64,
    params: &[String],
) {
    let too_big = |why: &str| {
        stats::QUERY_TOO_BIG.inc();
        statement.figures.too_big.inc();
        ctx.log_debug(&format!("pgcache: a QUERY result is not cached: {why}"));
    };
    if ran.rows > current::query_max_rows() || ran.json.len() as u64 > current::query_max_bytes() {
        return too_big("over query_max_rows or query_max_bytes");
    }
    let indexed = match statement.precision.row() {
        Some(m) => {
            // Under a row generation that ended while it ran (a flush, a TRUNCATE), the
            // result lands where nobody looks: neither cached nor indexed.
            if !generations::current_row_key(&m.tables(), key) {
                return;
            }
            let Some(members) = &ran.members else {
                return too_big("its WHERE admits more rows than the index keeps for one result");
            };
            if !membership::has_room(membership::cost(key, params, members)) {
                stats::QUERY_INDEX_FULL.inc();
                return;
            }
            // A full page ends at its last member: rows sorting after it cannot enter.
            let boundary = match &m.page {
                Some(page) if page.rows(params) == Some(members[0].len() as u64) => {
                    ran.last.clone()
                }
                _ => None,
            };
            Some((params.to_vec(), members.clone(), boundary))
        }
        None => None,
    };
    if !cache::write_fetched(
        ctx,
        cache::admission(ctx, key),
        key,
        None,
        Some(&ran.json),
        ttl,
    ) {
        return;
    }
    statement.figures.filled(indexed.is_none());
    if let Some((params, members, boundary)) = indexed {
        let id = (keyspace::selected_db(ctx), key.clone());
        membership::add(id, statement.clone(), params, members, boundary);
    }
}

/// The reply, described for the slowlog and hooks by the statement it ran.
fn described(reply: Reply, statement: &Statement, rows: u64) -> Reply {
    reply.described(&statement.stats, truncate_key(&statement.shown), rows)
}
