//! What a QUERY miss leaves a worker: a known statement to run, or what must come before
//! its run (waiting for the feed to apply an `AFTER` position; learning a statement seen
//! for the first time), after which the cache may hold the result after all.

use super::Call;
use super::complete::{Fill, cached_completion};
use super::key::key_now;
use super::learn::learn_as;
use super::run::parsing_for;
use crate::cache::applied;
use crate::cache::bypass;
use crate::cache::fill::{self, FillTicket};
use crate::cache::miss::Read;
use crate::cache::tags::{self, Keep};
use crate::config::current;
use crate::error::Result;
use crate::model::lsn::Lsn;
use crate::model::source::SourceId;
use crate::model::tags::Tags;
use crate::pg::pool::Connection;
use crate::pg::prepared::Parsing;
use crate::query::Statement;
use crate::query::key::{canonical_params, route_key};
use crate::query::statements;
use crate::redis::acl;
use crate::redis::cluster;
use crate::redis::keyspace;
use crate::redis::main_thread;
use crate::requests::blocked::Completion;
use redis_module::Context;
use std::sync::Arc;
use std::time::Duration;

/// How long a worker waits for the main thread to read a new statement's generations.
const GENERATIONS_LIMIT: Duration = Duration::from_millis(100);

pub(super) enum Job {
    /// A known statement's run; with a ticket, its result is cached.
    Run {
        statement: Arc<Statement>,
        params: Vec<String>,
        fill: Option<Fill>,
        /// The position a standby must have replayed to answer it (None: the primary only).
        needed: Option<Lsn>,
        /// How its run is parsed (`run::parsing_for`).
        parsing: Parsing,
    },
    /// `AFTER <lsn>` ahead of what the feed applied: the worker waits (at most
    /// `after_wait_ms`) for the feed to apply it, then the result is answered from the cache
    /// if it holds it, as READ does; else (or when the wait ran out) PostgreSQL answers, its
    /// answer cached under the generations read after the client's commit.
    AfterApplied {
        statement: Arc<Statement>,
        params: Vec<String>,
        keep: Keep,
        lsn: Lsn,
        db: i32,
        /// Whose read permissions are checked if the statement is learned again (None:
        /// every user reads every key).
        user: Option<String>,
    },
    /// A statement not in the statement table: parsed on the worker (and learned from the
    /// catalog unless another spelling of it was), then answered from the cache if it holds
    /// the result, else run, the result cached under the key of the generations the main
    /// thread read before it ran.
    FirstSight {
        /// Whose database the statement reads.
        source: SourceId,
        sql: Vec<u8>,
        params: Vec<Vec<u8>>,
        keep: Keep,
        read: Read,
        db: i32,
        /// Whose read permissions the worker checks before anything runs (None: every
        /// user reads every key).
        user: Option<String>,
    },
}

/// Whose read permissions a worker checks for the calling client before anything of a
/// statement it learns runs (None: every user reads every key). Main thread.
pub(super) fn reading_user(ctx: &Context) -> Option<String> {
    acl::reads_may_be_refused(ctx)
        .then(|| acl::current_user(ctx))
        .flatten()
}

/// What a job comes to on the worker before anything runs.
pub(super) enum Ready {
    /// The statement's run, with the ticket to cache its result, parsed as it says.
    Run(Arc<Statement>, Vec<String>, Option<Fill>, Parsing),
    /// The answer, from the cache.
    Answered(Completion),
}

impl Job {
    /// The job of a statement not in the statement table, in the client's DB and for its
    /// ACL user. Main thread.
    pub(super) fn first_sight(ctx: &Context, call: &Call) -> Job {
        Job::FirstSight {
            source: call.source,
            sql: call.sql.to_vec(),
            params: call.params.iter().map(|p| p.to_vec()).collect(),
            keep: call.keep.clone(),
            read: call.read,
            db: keyspace::selected_db(ctx),
            user: reading_user(ctx),
        }
    }

    /// Whose database the job reads: its worker takes a connection of that source's pool.
    pub(super) fn source(&self) -> SourceId {
        match self {
            Job::Run { statement, .. } | Job::AfterApplied { statement, .. } => statement.source,
            Job::FirstSight { source, .. } => *source,
        }
    }

    /// On a worker: the run this job comes to, or its answer.
    pub(super) fn ready(self, conn: &mut Connection) -> Result<Ready> {
        match self {
            Job::Run {
                statement,
                params,
                fill,
                parsing,
                ..
            } => Ok(Ready::Run(statement, params, fill, parsing)),
            Job::AfterApplied {
                statement,
                params,
                keep,
                lsn,
                db,
                user,
            } => {
                let read = if applied::of(statement.source)
                    .wait_for(lsn, current::of(statement.source).after_wait())
                {
                    Read::Cached
                } else {
                    Read::FromPostgres
                };
                // DDL applied while it waited (a table created earlier on the search path,
                // one renamed away) made pgcache forget what the statement reads: learned
                // again, or the old statement's results would answer.
                let current = statements::of(statement.source)
                    .with_canonical(&statement.canonical)
                    .filter(|known| Arc::ptr_eq(known, &statement));
                let (statement, params) = match current {
                    Some(statement) => (statement, params),
                    None => {
                        let again = learn_as(
                            conn,
                            statement.source,
                            statement.canonical.as_bytes(),
                            user.as_deref(),
                        )?;
                        again.admitted()?;
                        let refs: Vec<&[u8]> = params.iter().map(|p| p.as_bytes()).collect();
                        let params = canonical_params(&again, &refs)?;
                        (again, params)
                    }
                };
                looked_up(statement, params, keep, read, db)
            }
            Job::FirstSight {
                source,
                sql,
                params,
                keep,
                read,
                db,
                user,
            } => {
                let statement = learn_as(conn, source, &sql, user.as_deref())?;
                statement.admitted()?;
                let refs: Vec<&[u8]> = params.iter().map(Vec::as_slice).collect();
                let params = canonical_params(&statement, &refs)?;
                looked_up(statement, params, keep, read, db)
            }
        }
    }
}

/// The cached answer if the main thread found one, else the run, with a ticket to cache
/// its result when the main thread gave one.
fn looked_up(
    statement: Arc<Statement>,
    params: Vec<String>,
    keep: Keep,
    read: Read,
    db: i32,
) -> Result<Ready> {
    let parsing = parsing_for(&statement, read);
    Ok(
        match look_up_from_worker(db, &statement, &params, read, &keep.tags)? {
            Some(Looked::Cached(result)) => Ready::Answered(cached_completion(statement, result)),
            Some(Looked::Lead(ticket)) => {
                // A statement's first call, or a read AFTER a position: its reply names no key
                // (WITHKEY gets nil), though the fill may cache the result.
                let fill = Fill::new(ticket, keep, &params, false);
                Ready::Run(statement, params, Some(fill), parsing)
            }
            None => Ready::Run(statement, params, None, parsing),
        },
    )
}

/// What the main thread found for a worker's new statement.
enum Looked {
    /// The result, cached (under another spelling).
    Cached(String),
    /// Not cached: the ticket of its fill, registered on the main thread with the key's
    /// generations read, so no change applied after them goes unseen by the fill.
    Lead(FillTicket),
}

/// From a worker: the result if the cache holds it (a tagged call's tags join it) and the read may take it from there,
/// else the ticket to fill it under the generations of the client's DB `db` (None: results
/// are not cached here now, or the main thread did not answer in time); on a cluster node
/// that does not serve the result's slot, the redirection.
fn look_up_from_worker(
    db: i32,
    statement: &Arc<Statement>,
    params: &[String],
    read: Read,
    tags: &Tags,
) -> Result<Option<Looked>> {
    if read == Read::Unvouched && !cluster::enabled() {
        return Ok(None);
    }
    let (statement, params, tags) = (statement.clone(), params.to_vec(), tags.clone());
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
                found = key_now(ctx, &statement, &params).and_then(|key| {
                    if read == Read::Cached {
                        tags::serve_tagged_only(ctx, statement.source, &key, &tags);
                    }
                    let cached = (read == Read::Cached
                        && !bypass::bypassed(statement.source, key.as_bytes()))
                    .then(|| cached_value(ctx, &key))
                    .flatten();
                    match cached {
                        Some(result) => Some(Looked::Cached(result)),
                        // Its results die unread: answered, not cached.
                        None if read == Read::Cached
                            && !statement
                                .stats
                                .pass_through
                                .fill_this_miss(current::of(statement.source).pass_through()) =>
                        {
                            None
                        }
                        None => Some(Looked::Lead(fill::lead(
                            key.into(),
                            statement.source,
                            &tags,
                        ))),
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
