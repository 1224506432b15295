//! `WITHAGE` on READ and GET: the reply is `[answer, age_ms]`, the answer as the plain call
//! gives it and how far behind PostgreSQL's commits it may be at most: the freshness
//! horizon's age for a row from the cache (-1 where no change feed bounds it: invalidation
//! off), 0 for a row PostgreSQL answered in this call. So that
//! every answer is one or the other, a call that does not hit reads PostgreSQL (and fills the
//! cache as any miss does) instead of joining what the cache may learn meanwhile.
//!
//! A hit is answered here; the age of an answer from PostgreSQL is added when the blocked
//! client gets it (`requests::blocked`, which sees WITHAGE among the call's arguments).

use super::ReadOptions;
use crate::cache::miss::{self, Read, count_hit, must_be_canonical};
use crate::cache::{self, Cached, freshness, tags};
use crate::error::Result;
use crate::model::key;
use crate::pg::schema;
use crate::redis::{acl, cluster};
use crate::requests::reply::Reply;
use redis_module::Context;

/// READ (`named`: None) or GET (`named`: the key the client named) with WITHAGE.
pub fn read(
    ctx: &Context,
    table_arg: &[u8],
    pk_arg: &[u8],
    named: Option<&[u8]>,
    options: &ReadOptions,
) -> Result<Reply> {
    let keep = options.keep();
    let read = options.read()?;
    if read == Read::Cached
        && let Some(schema) = schema::of(options.source).cached(table_arg)
    {
        let pk = key::canonicalise(pk_arg, &*schema)?;
        if !pk.unconfirmed {
            let (prefix, suffix) = (schema.key_prefix.as_bytes(), pk.json.as_bytes());
            match named {
                // GET's key: routed and checked by the server.
                Some(named) => must_be_canonical(named, &schema, &pk)?,
                None => {
                    let name = pk.cache_key(&schema.key_prefix);
                    cluster::check(ctx, &name)?;
                    if !cache::readable(ctx, prefix, suffix) {
                        return Err(acl::no_read_permission(&name));
                    }
                }
            }
            if options.tags.is_some() {
                let key = pk.cache_key(&schema.key_prefix);
                tags::serve_tagged_only(ctx, schema.source, &key, &options.tags);
            }
            let answer = match cache::get_or_name(ctx, schema.source, prefix, suffix).0 {
                Cached::Miss => None,
                Cached::Absent => Some(Reply::Nil),
                Cached::Row(row) => Some(Reply::Bulk(row)),
            };
            if let Some(answer) = answer {
                schema.stats.calls.inc();
                count_hit(ctx, &schema, suffix);
                return Ok(aged(answer, freshness::of(options.source).age_ms()));
            }
        }
    }
    // Not a hit: PostgreSQL answers, age 0.
    let fresh = if read == Read::Unvouched {
        Read::Unvouched
    } else {
        Read::FromPostgres
    };
    let named = named.map(<[u8]>::to_vec);
    Ok(miss::on_worker(
        ctx,
        options.source,
        table_arg,
        pk_arg,
        keep,
        named,
        fresh,
    ))
}

/// `[answer, age_ms]`.
pub fn aged(answer: Reply, age_ms: i64) -> Reply {
    Reply::Array(vec![answer, Reply::Int(age_ms)])
}
