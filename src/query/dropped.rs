//! What a change to a table does to query results: its generation ends (no result that read
//! it is served again), and the results filled since one of their tables last changed are
//! counted as dropped, per statement (PGCACHE.QUERIES) and in all (`query_invalidations`),
//! and announced on the event channel (`query_invalidated`, with the statement and count).

use crate::config::current;
use crate::events;
use crate::model::event::{EventKind, Extra};
use crate::query::{generations, statements};
use crate::stats;
use redis_module::Context;

/// The table whose keys start with `prefix` (or, for the cache prefix itself, every table)
/// changed, in each of `dbs`. Main thread.
pub fn table_changed(ctx: &Context, prefix: &str, dbs: &[i32]) {
    let cache_prefix = current::cache_prefix();
    // A flush of everything ends every generation as its scan deletes their keys, and no
    // result is served until it has (`generations`).
    let everything = prefix == cache_prefix;
    if !everything {
        generations::end(ctx, prefix, dbs);
    }
    let table = prefix
        .strip_prefix(cache_prefix.as_str())
        .and_then(|t| t.strip_suffix(':'))
        .unwrap_or("");
    for statement in statements::with_live_results((!everything).then_some(prefix)) {
        let results = statement.figures.drop_live();
        if results == 0 {
            continue;
        }
        stats::QUERY_INVALIDATIONS.add(results);
        events::publish_with(
            ctx,
            EventKind::QueryInvalidated,
            table,
            &statement.canonical,
            &[("count", Extra::Int(results))],
        );
    }
}
