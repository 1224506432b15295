//! The main-thread half of a miss: the permission check a statement seen for the first time
//! still owes, the fill of the result under the key read before it ran, and the reply.

use super::run::{Ran, Run};
use crate::cache;
use crate::cache::fill::{FillTicket, Outcome};
use crate::cache::tags::Keep;
use crate::config::current;
use crate::error::Result;
use crate::query::{Statement, generations, membership};
use crate::redis::acl;
use crate::redis::keyspace;
use crate::requests::blocked::Completion;
use crate::requests::reply::Reply;
use crate::stats;
use crate::stats::slowlog::truncate_key;
use redis_module::Context;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The client's ACL user must be allowed to read every table the statement reads as data,
/// as READ checks the row's key: the generation key stands for the table's keys.
pub(super) fn may_read_tables(ctx: &Context, statement: &Statement) -> Result<()> {
    for table in &statement.data_tables {
        if !cache::readable(ctx, table.key_prefix.as_bytes(), b"~gen") {
            return Err(acl::no_read_permission(&generations::key_name(
                &table.key_prefix,
            )));
        }
    }
    Ok(())
}

/// A miss whose result is to be cached: its key's ticket, how long it is kept and its tags; the
/// parameters (canonical) say which values a row-precise result admits.
pub struct Fill {
    pub ticket: FillTicket,
    pub keep: Keep,
    pub params: Vec<String>,
    /// The call asked `WITHKEY`: its reply names the key the result was cached under.
    pub with_key: bool,
}

impl Fill {
    pub fn new(ticket: FillTicket, keep: Keep, params: &[String], with_key: bool) -> Fill {
        Fill {
            ticket,
            keep,
            params: params.to_vec(),
            with_key,
        }
    }
}

/// Answers a new spelling's call from the cache (the result was cached under another).
pub(super) fn cached_completion(statement: Arc<Statement>, result: String) -> Completion {
    Box::new(move |ctx| {
        if let Err(e) = may_read_tables(ctx, &statement) {
            return Reply::Error(e);
        }
        statement.stats.hits.inc();
        stats::of(statement.source).query_hits.inc();
        described(Reply::Bulk(result), &statement, 0)
    })
}

/// A run's outcome and its fill until the completion runs. Dropped unrun (its client left,
/// or was answered for its deadline, before the reply), it still ends the fill with the
/// outcome, so the clients that joined the fill get PostgreSQL's answer: a waiter's answer
/// never depends on another client's connection. Nothing is cached then (that needs the
/// leader's context).
struct Pending {
    outcome: Option<Run>,
    fill: Option<Fill>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let (Some(fill), Some(outcome)) = (self.fill.take(), self.outcome.take()) {
            let shared: Outcome = outcome.map(|ran| Some(ran.json));
            fill.ticket.finish(&shared);
        }
    }
}

/// The main-thread half of a run: cache the result when a ticket came with it, it is not
/// too big, and the cache admits it; then reply.
pub fn completion(statement: Arc<Statement>, outcome: Run, fill: Option<Fill>) -> Completion {
    let mut pending = Pending {
        outcome: Some(outcome),
        fill,
    };
    Box::new(move |ctx| {
        let mut outcome = pending.outcome.take().expect("a completion runs once");
        let fill = pending.fill.take();
        // A statement seen for the first time had its tables' permissions unchecked so far.
        if let Err(e) = may_read_tables(ctx, &statement) {
            return Reply::Error(e);
        }
        statement.stats.misses.inc();
        stats::of(statement.source).query_misses.inc();
        statement
            .stats
            .pass_through
            .missed(1, statement.stats.hits.get());
        if let Ok(ran) = &outcome {
            statement.figures.result_bytes.add(ran.json.len() as u64);
            (statement.figures.last_result_bytes).store(ran.json.len() as u64, Ordering::Relaxed);
        }
        let mut held = None;
        if let Some(Fill {
            ticket,
            keep,
            params,
            with_key,
        }) = fill
        {
            // The fill's waiters are answered from the result lent to them, not a copy of it
            // (a result may be megabytes, copied on the event loop).
            let shared: Outcome = match &mut outcome {
                Ok(ran) => Ok(Some(std::mem::take(&mut ran.json))),
                Err(e) => Err(e.clone()),
            };
            ticket.answer_waiters(&shared);
            let (key, fresh) = ticket.finish(&shared);
            if let (Ok(ran), Ok(Some(json))) = (&mut outcome, shared) {
                ran.json = json;
            }
            if let Ok(ran) = &outcome
                && fresh
                && cache_result(ctx, &statement, &key, ran, &keep, &params)
                && with_key
            {
                held = Some(key);
            }
        }
        match (outcome, held) {
            (Ok(ran), Some(key)) => described(
                Reply::Array(vec![
                    Reply::Bulk(ran.json),
                    Reply::Bulk(key.to_string()),
                    Reply::Array(
                        statement
                            .generation_keys
                            .iter()
                            .map(|name| Reply::Bulk(name.clone()))
                            .collect(),
                    ),
                ]),
                &statement,
                ran.rows,
            ),
            (Ok(ran), None) => described(Reply::Bulk(ran.json), &statement, ran.rows),
            (Err(e), _) => described(Reply::Error(e), &statement, 0),
        }
    })
}

/// Caches a fresh result under `key` unless it is too big (or, row-precise, built from too
/// many rows, or past the index's room); a row-precise one is indexed as it is written.
/// Whether it was cached.
fn cache_result(
    ctx: &Context,
    statement: &Arc<Statement>,
    key: &Arc<str>,
    ran: &Ran,
    keep: &Keep,
    params: &[String],
) -> bool {
    let too_big = |why: &str| {
        stats::of(statement.source).query_results_too_big.inc();
        statement.figures.too_big.inc();
        ctx.log_debug(&format!("pgcache: a QUERY result is not cached: {why}"));
        false
    };
    let settings = current::of(statement.source);
    if ran.rows > settings.query_max_rows() || ran.json.len() as u64 > settings.query_max_bytes() {
        return too_big("over query_max_rows or query_max_bytes");
    }
    let indexed = match statement.precision.row() {
        Some(m) => {
            // Under a row generation that ended while it ran (a flush, a TRUNCATE), the
            // result lands where nobody looks: neither cached nor indexed.
            if !generations::current_row_key(&m.tables(), key) {
                return false;
            }
            if ran.alone {
                ctx.log_debug(
                    "pgcache: a QUERY result is not cached: PostgreSQL refused reading its members, \
                     and answered the statement alone",
                );
                return false;
            }
            let Some(members) = &ran.members else {
                return too_big("its WHERE admits more rows than the index keeps for one result");
            };
            let index = membership::of(statement.source);
            if !index.has_room(membership::cost(key, params, members)) {
                stats::of(statement.source).query_index_full.inc();
                return false;
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
        statement.source,
        cache::admission(ctx, statement.source, key),
        key,
        None,
        Some(&ran.json),
        keep,
    ) {
        return false;
    }
    statement.figures.filled(indexed.is_none());
    if let Some((params, members, boundary)) = indexed {
        let id = (keyspace::selected_db(ctx), key.clone());
        membership::of(statement.source).add(id, statement.clone(), params, members, boundary);
    }
    true
}

/// The reply, described for the slowlog and hooks by the statement it ran.
fn described(reply: Reply, statement: &Statement, rows: u64) -> Reply {
    reply.described(&statement.stats, truncate_key(&statement.shown), rows)
}
