//! What a change to a table does to query results. Per table: its generations end (no
//! result that read it is served again), and the results filled since one of their tables
//! last changed are counted as dropped. Per row (row-precise statements): the index
//! (`membership`) names the results the changed rows can affect, and exactly those are
//! deleted. Either way the drops are counted per statement (PGCACHE.QUERIES) and in all
//! (`query_invalidations`), and announced on the event channel (`query_invalidated`, with
//! the statement and count).

use crate::config::current;
use crate::events;
use crate::model::event::{EventKind, Extra};
use crate::model::source::{Scope, SourceId};
use crate::pg::schema::TableSchema;
use crate::query::precision::Written;
use crate::query::{Statement, generations, membership, statements};
use crate::redis::cluster;
use crate::stats;
use compact_str::CompactString;
use redis_module::Context;
use std::sync::Arc;

/// The table of `source` whose keys are `scope` (or, for the source's whole cache, every
/// table of it) changed as a whole, in each of `dbs`. Main thread.
pub fn table_changed(ctx: &Context, source: SourceId, scope: &Scope, dbs: &[i32]) {
    let whole = current::scope(source);
    let prefix = scope.prefix.as_str();
    // A flush of everything serves no result until its scan has deleted every entry present
    // now, and every generation of the source this process knows is forgotten
    // (`generations`).
    let everything = *scope == whole;
    if everything {
        generations::forget_all(ctx, source, dbs);
    } else {
        generations::end(ctx, prefix, dbs);
    }
    let table = table_name(prefix, &whole.prefix);
    for statement in statements::of(source).with_live_results((!everything).then_some(prefix)) {
        announce(ctx, table, &statement, statement.figures.drop_live());
    }
    for (statement, count) in membership::of(source).drop_table((!everything).then_some(prefix)) {
        statement.figures.dropped.add(count);
        announce(ctx, table, &statement, count);
    }
}

/// Rows of `schema`'s table changed, in each of `dbs`: every
/// result dropped per table that read it is (its generation ends); row-precise results are
/// left to `rows_changed`. Main thread.
pub fn table_rows_changed(ctx: &Context, schema: &TableSchema, dbs: &[i32]) {
    let prefix = schema.key_prefix.as_str();
    generations::end_per_table(ctx, prefix, dbs);
    let table = table_name(prefix, &current::key_prefix(schema.source));
    for statement in statements::of(schema.source).with_live_results(Some(prefix)) {
        announce(ctx, table, &statement, statement.figures.drop_live());
    }
}

/// Rows of `schema`'s table changed: `members` are their primary keys, `entering` the new
/// values they were written with (None: unknown). Deletes every row-precise result they
/// can affect. Main thread.
pub fn rows_changed(
    ctx: &Context,
    schema: &TableSchema,
    members: &[CompactString],
    entering: Option<&[Written]>,
) {
    let prefix = schema.key_prefix.as_str();
    let dropped = membership::of(schema.source).changed(prefix, members, entering);
    if dropped.is_empty() {
        return;
    }
    let mut counts: Vec<(Arc<Statement>, u64)> = Vec::new();
    let mut moved_away = false;
    for ((db, key), statement) in dropped {
        if cluster::serves(ctx, &key) {
            generations::delete(ctx, &key, &[db]);
        } else {
            moved_away = true;
        }
        match counts.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &statement)) {
            Some((_, n)) => *n += 1,
            None => counts.push((statement, 1)),
        }
    }
    let table = table_name(prefix, &current::key_prefix(schema.source));
    for (statement, count) in counts {
        statement.figures.dropped.add(count);
        announce(ctx, table, &statement, count);
    }
    if moved_away {
        // A resharding took a result's slot, and the result with it, to another node (a
        // cluster has DB 0 only); it may come back while the row generation still stands:
        // the table's results go.
        table_changed(ctx, schema.source, &Scope::prefix(prefix), &[0]);
    }
}

/// The row-precise index is gone or no longer true (data loaded from disk, a promotion, a
/// demotion, a DB flushed or swapped): its results leave it, and no result a row generation
/// of this process's made reachable is served again, here or on its replicas. Main thread.
/// Every source's.
pub fn index_lost(ctx: &Context, dbs: &[i32]) {
    membership::each(|source, membership| {
        membership.drop_table(None);
        generations::forget_all(ctx, source, dbs);
    });
}

/// Like `index_lost`, for one source's index only (a DDL in its database).
pub fn index_lost_of(ctx: &Context, source: SourceId, dbs: &[i32]) {
    membership::of(source).drop_table(None);
    generations::forget_all(ctx, source, dbs);
}

/// The table's name as events give it, from its key prefix (`` for the whole cache) and
/// its source's.
fn table_name<'a>(prefix: &'a str, source_prefix: &str) -> &'a str {
    prefix
        .strip_prefix(source_prefix)
        .and_then(|t| t.strip_suffix(':'))
        .unwrap_or("")
}

fn announce(ctx: &Context, table: &str, statement: &Statement, results: u64) {
    if results == 0 {
        return;
    }
    stats::of(statement.source).query_invalidations.add(results);
    events::publish_with(
        ctx,
        EventKind::QueryInvalidated,
        statement.source,
        table,
        &statement.shown,
        &[("count", Extra::Int(results))],
    );
}
