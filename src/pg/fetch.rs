//! Row lookups on a worker's connection: one key, or many keys in one query.

use crate::error::{Error, Result};
use crate::model::key::CanonicalPk;
use crate::pg::errors::{is_schema_change, query_error};
use crate::pg::pool::Connection;
use crate::pg::prepared::Parsing;
use crate::pg::row::Row;
use crate::pg::schema::{self, TableSchema};
use crate::pg::session::Failure;

/// The error of a lookup on `table`; one that says the table changed forgets its schema.
pub fn failed(e: Failure, table: &TableSchema) -> Error {
    if is_schema_change(&e) {
        schema::of(table.source).forget(&table.name);
    }
    query_error(&e, &table.display)
}

pub fn too_many_rows(table: &TableSchema, pk: &str) -> Error {
    Error::invalid(format!(
        "key {pk} matches more than one row of {}; use columns that identify one row",
        table.display
    ))
}

/// The row with this key as JSON, or None when there is none.
pub fn one(
    client: &mut Connection,
    table: &TableSchema,
    pk: &CanonicalPk,
) -> Result<Option<String>> {
    let sql = table.select_one_sql(&pk.columns);
    let values: Vec<&str> = pk.columns.iter().map(|(_, v)| v.as_str()).collect();
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = read(client, table, &sql, &params)?;
    the_row(rows.into_iter().map(Row::Driver).collect(), table, pk)
}

/// Runs a lookup of `table`, undoing what a view or policy of it may do to the session
/// (`TableSchema::effects`).
fn read(
    client: &mut Connection,
    table: &TableSchema,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>> {
    client
        .query_read_only(sql, &[], Parsing::Kept, table.effects(), params)
        .map_err(|e| failed(e, table))
}

/// What `select_one_sql`'s rows say of the key: its row as JSON, none, or (a key that is
/// not unique, a view's) an error.
pub fn the_row(
    mut rows: Vec<Row>,
    table: &TableSchema,
    pk: &CanonicalPk,
) -> Result<Option<String>> {
    match rows.len() {
        0 => Ok(None),
        1 => rows[0].take_string(0).map(Some),
        _ => Err(too_many_rows(table, &pk.json)),
    }
}

/// The rows for `keys` in one query, in the same order, None where no row exists. Keys
/// naming different column sets (tables without a primary key) are grouped, one query per
/// distinct set; keys of a view are looked up one by one (see `TableSchema::batchable`).
pub fn many(
    client: &mut Connection,
    table: &TableSchema,
    keys: &[CanonicalPk],
) -> Result<Vec<Option<String>>> {
    if !table.batchable {
        return keys.iter().map(|key| one(client, table, key)).collect();
    }
    let mut rows: Vec<Option<String>> = vec![None; keys.len()];
    let mut groups: Vec<(Vec<&str>, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let names: Vec<&str> = key.columns.iter().map(|(c, _)| c.as_str()).collect();
        match groups.iter_mut().find(|(n, _)| *n == names) {
            Some((_, members)) => members.push(i),
            None => groups.push((names, vec![i])),
        }
    }
    for (_, members) in groups {
        let first = &keys[members[0]];
        let sql = table.select_many_sql(&first.columns);
        let arrays: Vec<Vec<&str>> = (0..first.columns.len())
            .map(|c| {
                members
                    .iter()
                    .map(|&m| keys[m].columns[c].1.as_str())
                    .collect()
            })
            .collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = arrays
            .iter()
            .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        for row in read(client, table, &sql, &params)? {
            let ordinal: i64 = row.get(0);
            let slot = members[(ordinal - 1) as usize];
            if rows[slot].is_some() {
                return Err(too_many_rows(table, &keys[slot].json));
            }
            rows[slot] = Some(row.get(1));
        }
    }
    Ok(rows)
}
