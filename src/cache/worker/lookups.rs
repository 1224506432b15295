//! Batched single-row lookups: every lookup a worker took at once, grouped by table, is
//! fetched with ONE query per table (views excepted, see `TableSchema::batchable`), on a
//! connection of the pool of the table's source. If that query fails, each lookup is
//! retried alone, so one bad key (or one ambiguous view row) fails only its own request.
//! A group a standby can answer is read there first (`on_standby`).

use super::jobs::RowLookup;
use crate::cache::fill::Outcome;
use crate::error::panic::{catch, catch_result};
use crate::model::key::CanonicalPk;
use crate::model::lsn::Lsn;
use crate::pg::fetch;
use crate::pg::pool::{self, Pool};
use crate::pg::schema::TableSchema;
use crate::pg::standby;
use crate::requests::blocked::{BlockedClient, contained};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub type PendingLookup = (BlockedClient, Instant, RowLookup);

pub fn run(lookups: Vec<PendingLookup>) {
    let mut by_table: HashMap<*const TableSchema, Vec<PendingLookup>> = HashMap::new();
    for pending in lookups {
        by_table
            .entry(Arc::as_ptr(&pending.2.schema))
            .or_default()
            .push(pending);
    }
    for (_, group) in by_table {
        let outcomes: Vec<Outcome> = match on_standby(&group) {
            Some(outcomes) => outcomes,
            None => match pool::of(group[0].2.schema.source) {
                Ok(pool) => fetch(&group, &pool),
                Err(e) => group.iter().map(|_| Err(e.clone())).collect(),
            },
        };
        if let Some(deadline) = group.iter().map(|(_, d, _)| *d).min() {
            super::hold::hold_point(deadline);
        }
        for ((client, _, lookup), outcome) in group.into_iter().zip(outcomes) {
            let RowLookup {
                schema, pk, then, ..
            } = lookup;
            client.answer(contained(|| Ok(then(outcome, schema, pk))));
        }
    }
}

/// The group's rows read on a standby that was seen past the position every lookup of it
/// needs, after a check on the read's own session that it replayed that far; None: the
/// primary reads them (no standby may, the check fell short, or the standby failed).
fn on_standby(group: &[PendingLookup]) -> Option<Vec<Outcome>> {
    let needed = (group.iter().map(|(_, _, lookup)| lookup.needed))
        .collect::<Option<Vec<Lsn>>>()?
        .into_iter()
        .max()?;
    let deadline = group.iter().map(|(_, d, _)| *d).min()?;
    let keys: Vec<CanonicalPk> = group.iter().map(|(_, _, l)| l.pk.clone()).collect();
    let rows = rows_on_standby(&group[0].2.schema, &keys, needed, deadline)?;
    Some(rows.into_iter().map(Ok).collect())
}

/// The rows of `keys` (one query), read on a standby of the table's source that may take
/// misses needing `needed`, after a check on the read's own session that it replayed that
/// far; None: the primary must read them (no standby may, the check fell short, or the
/// standby failed).
pub fn rows_on_standby(
    schema: &TableSchema,
    keys: &[CanonicalPk],
    needed: Lsn,
    deadline: Instant,
) -> Option<Vec<Option<String>>> {
    let chosen = standby::pick(schema.source, Some(needed))?;
    // Ok(None): the check fell short, or the read failed for what it read (a bad key, a
    // timeout): the primary reads it, and the standby stays in. Err: the standby failed.
    let read = catch_result(|| {
        let mut conn = chosen.pool().get(standby::connect_deadline(deadline))?;
        let replayed = standby::replayed(&mut conn)?;
        if !chosen.checked(replayed.as_deref(), needed) {
            return Ok(None);
        }
        Ok(fetch::many(&mut conn, schema, keys).ok())
    });
    match read {
        Ok(Some(rows)) => {
            chosen.answered(keys.len());
            Some(rows)
        }
        Ok(None) => {
            chosen.rerouted(keys.len(), false);
            None
        }
        Err(_) => {
            chosen.rerouted(keys.len(), true);
            None
        }
    }
}

/// Each lookup's row: all in one query where the table allows it, else (or when that query
/// failed) each alone.
fn fetch(group: &[PendingLookup], pool: &Pool) -> Vec<Outcome> {
    let batched = if group.len() > 1 && group[0].2.schema.batchable {
        catch(|| fetch_group(group, pool)).unwrap_or(None)
    } else {
        None
    };
    match batched {
        Some(rows) => rows.into_iter().map(Ok).collect(),
        None => group
            .iter()
            .map(|(_, deadline, lookup)| fetch_alone(pool, *deadline, lookup))
            .collect(),
    }
}

fn fetch_alone(pool: &Pool, deadline: Instant, lookup: &RowLookup) -> Outcome {
    catch_result(|| {
        let mut conn = pool.get(deadline)?;
        fetch::one(&mut conn, &lookup.schema, &lookup.pk)
    })
}

/// One query for a group's distinct keys; the row for each lookup in order, or None if the
/// batch failed.
fn fetch_group(group: &[PendingLookup], pool: &Pool) -> Option<Vec<Option<String>>> {
    let deadline = group.iter().map(|(_, d, _)| *d).min()?;
    let mut distinct: Vec<CanonicalPk> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for (_, _, lookup) in group {
        index_of.entry(lookup.pk.json.as_str()).or_insert_with(|| {
            distinct.push(lookup.pk.clone());
            distinct.len() - 1
        });
    }
    let mut conn = pool.get(deadline).ok()?;
    let rows = fetch::many(&mut conn, &group[0].2.schema, &distinct).ok()?;
    Some(
        group
            .iter()
            .map(|(_, _, lookup)| rows[index_of[lookup.pk.json.as_str()]].clone())
            .collect(),
    )
}
