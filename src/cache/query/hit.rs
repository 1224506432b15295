//! A known statement's call on the main thread: the hit path, or the job its miss leaves a
//! worker.

use super::Call;
use super::complete::{Fill, may_read_tables};
use super::job::Job;
use super::key::key_now;
use super::run::parsing_for;
use crate::cache::applied;
use crate::cache::bypass;
use crate::cache::fill::{self, Asked, LeadOrWait};
use crate::cache::miss::Read;
use crate::cache::tags;
use crate::config::current;
use crate::error::Result;
use crate::query::Statement;
use crate::query::key::{canonical_params, route_key};
use crate::redis::cluster;
use crate::redis::keyspace;
use crate::redis::reply;
use crate::requests::reply::Reply;
use crate::stats;
use redis_module::Context;
use std::sync::Arc;

/// What a known statement's call came to on the main thread.
pub(super) enum Known {
    /// Replied (a hit), or waiting for a fill in flight of the same result.
    Answered(Reply),
    /// A miss: the worker's job.
    Missed(Job),
}

/// A statement learned before: the hit path, or the job of its miss.
pub(super) fn known(ctx: &Context, statement: Arc<Statement>, call: &Call) -> Result<Known> {
    may_read_tables(ctx, &statement)?;
    statement.admitted()?;
    let params = canonical_params(&statement, call.params)?;
    // Asked for a miss only (a hit needs none), with the ticket: a standby answers once it
    // replayed what began being applied.
    let source = statement.source;
    let needed = || {
        (call.read == Read::Cached)
            .then(|| applied::needed(ctx, source))
            .flatten()
    };
    let key = match &statement.uncached {
        Some(_) => None,
        None => key_now(ctx, &statement, &params),
    };
    let Some(key) = key else {
        if cluster::enabled() {
            cluster::check(ctx, &route_key(&statement, &params))?;
        }
        return Ok(Known::Missed(Job::Run {
            parsing: parsing_for(&statement, call.read),
            statement,
            params,
            fill: None,
            needed: needed(),
        }));
    };
    if call.read == Read::Cached && call.keep.tags.is_some() {
        tags::serve_tagged_only(ctx, statement.source, &key, &call.keep.tags);
    }
    if call.read == Read::Cached
        && !bypass::bypassed(statement.source, key.as_bytes())
        && reply_if_cached(
            ctx,
            &key,
            call.with_key.then_some(&statement.generation_keys),
        )
    {
        statement.stats.calls.inc();
        statement.stats.hits.inc();
        stats::of(statement.source).query_hits.inc();
        return Ok(Known::Answered(Reply::Sent));
    }
    // On a cluster, the node serving the result's slot (the route's: they share the hash
    // tag) runs a miss; others redirect, as for READ.
    cluster::check(ctx, &key)?;
    let ticket = match call.read {
        Read::Cached => {
            // Its results die unread: PostgreSQL's answer goes back uncached.
            if !statement
                .stats
                .pass_through
                .fill_this_miss(current::of(statement.source).pass_through())
            {
                return Ok(Known::Missed(Job::Run {
                    parsing: parsing_for(&statement, call.read),
                    statement,
                    params,
                    fill: None,
                    needed: needed(),
                }));
            }
            let asked = Asked {
                source: statement.source,
                table: statement.stats.clone(),
                pk: String::new(),
                readable_as: Some(statement.readable_as.clone()),
            };
            // A tagged call leads its own fill: one in flight would cache without its tags.
            if call.keep.tags.is_some() {
                fill::lead(key.into(), statement.source, &call.keep.tags)
            } else {
                match fill::lead_or_wait(ctx, key.into(), current::request_timeout_ms(), asked) {
                    LeadOrWait::Wait => return Ok(Known::Answered(Reply::Blocked)),
                    LeadOrWait::Lead(ticket) => ticket,
                }
            }
        }
        Read::After(lsn) => {
            return Ok(Known::Missed(Job::AfterApplied {
                statement,
                params,
                keep: call.keep.clone(),
                lsn,
                db: keyspace::selected_db(ctx),
                user: super::job::reading_user(ctx),
            }));
        }
        // The feed cannot vouch for the cache: PostgreSQL answers, and its answer may be
        // cached (taken after the key's generations).
        Read::FromPostgres | Read::Unvouched => {
            fill::lead(key.into(), statement.source, &call.keep.tags)
        }
    };
    let fill = Fill::new(ticket, call.keep.clone(), &params, call.with_key);
    Ok(Known::Missed(Job::Run {
        parsing: parsing_for(&statement, call.read),
        statement,
        params,
        fill: Some(fill),
        needed: needed(),
    }))
}

/// Replies with the result `key` holds, if it holds one (`WITHKEY`, the statement's
/// generation keys given: `[result, key, [generation key, ...]]`).
fn reply_if_cached(ctx: &Context, key: &str, with_key: Option<&Vec<String>>) -> bool {
    keyspace::with_name(ctx, key.as_bytes(), |k| {
        keyspace::read_string(ctx, k, |value| {
            if let Some(generations) = with_key {
                reply::array(ctx, 3);
                reply::bulk(ctx, value);
                reply::bulk(ctx, key.as_bytes());
                reply::array(ctx, generations.len());
                for name in generations {
                    reply::bulk(ctx, name.as_bytes());
                }
            } else {
                reply::bulk(ctx, value);
            }
        })
    })
    .is_some()
}
