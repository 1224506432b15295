//! From "these rows of this table changed" (a notification's payload, or the changes of a
//! replicated transaction) to the cache keys to delete or the tables to flush: the schema
//! resolved, the key values canonicalised (PostgreSQL asked to spell the types only it can),
//! and whatever cannot be read turned into a flush of its table, never ignored.

use super::changes::Changes;
use crate::error::Error;
use crate::model::key::{self, CanonicalPk};
use crate::model::source::SourceId;
use crate::pg::normalise;
use crate::pg::pool::Connection;
use crate::pg::schema::{self, TableSchema};
use crate::query::precision::{NewValue, Written};
use serde_json::Value;

/// One notification, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub table: String,
    /// Objects holding (at least) the key columns: keys, or whole old/new rows.
    pub rows: Vec<Value>,
    /// The rows the changes wrote, by the columns row-precise query results match on
    /// (replication); None where the source does not say (notifications).
    pub entering: Option<Vec<Written>>,
    /// Every change inserted its row: no row that was there before changed (replication;
    /// false where the source does not say).
    pub only_inserted: bool,
    /// Every entry of the table is to go.
    pub flush: bool,
    /// Keys the changes named that a flush covers instead (for the statistics).
    pub flushed_keys: u64,
}

/// The canonical keys a payload names, given the table's schema, and why some key could not
/// be read, if one could not (its value stays out of the reason: it is row data).
pub fn keys_of(payload: &Payload, schema: &TableSchema) -> (Vec<CanonicalPk>, Option<Error>) {
    let mut keys: Vec<CanonicalPk> = Vec::new();
    let mut unreadable = None;
    for row in &payload.rows {
        match key_of(row, schema) {
            Ok(canonical) => {
                if !keys.contains(&canonical) {
                    keys.push(canonical);
                }
            }
            Err(why) => unreadable = Some(why),
        }
    }
    (keys, unreadable)
}

fn key_of(row: &Value, schema: &TableSchema) -> Result<CanonicalPk, Error> {
    let Value::Object(fields) = row else {
        return Err(Error::invalid("a key is not a JSON object"));
    };
    let mut pk = serde_json::Map::new();
    for column in &schema.primary_key {
        let value = fields
            .get(column)
            .ok_or_else(|| Error::invalid(format!("no value for key column {column:?}")))?;
        pk.insert(column.clone(), value.clone());
    }
    key::canonicalise_value(&Value::Object(pk), schema).map_err(|_| {
        Error::invalid(format!(
            "a value of the key columns {:?} is not valid for their type",
            schema.primary_key
        ))
    })
}

/// The rows written with each value spelled as a query parameter of its column's kind is
/// (`model::key::canonical_param`: a boolean, even of a domain, as `true`/`false`); a value
/// that does not read as its kind is left out: unknown, it matches every result.
fn canonical_rows(schema: &TableSchema, rows: Vec<Written>) -> Vec<Written> {
    rows.into_iter()
        .map(|row| Written {
            new_key: row.new_key,
            values: row
                .values
                .into_iter()
                .filter_map(|(column, value)| {
                    let kind = schema.column(&column)?.kind;
                    let value = match value {
                        NewValue::Text(text) => {
                            NewValue::Text(key::canonical_param(kind, &text).ok()?)
                        }
                        NewValue::Null => NewValue::Null,
                    };
                    Some((column, value))
                })
                .collect(),
        })
        .collect()
}

/// Adds what `payload`, sent by the database of `source`, asks to `changes`; `origin` names
/// how it came, for the log.
pub fn add(
    source: SourceId,
    conn: &mut Connection,
    changes: &mut Changes,
    payload: Payload,
    origin: &str,
) {
    // A table outside the `tables` allowlist is followed too: its rows and results cached
    // before it left the list (or by a QUERY that reads it only through a partition or a
    // policy) must not outlive its changes when it comes back.
    let Some(schema) = resolved(source, conn, changes, &payload.table, origin) else {
        return;
    };
    // Rows of tables whose row-level security policies read this one may have appeared or
    // gone for pgcache's role.
    let policies = &super::of(schema.source).policies;
    for prefix in policies.tables_whose_policies_read(schema.source, conn, &schema.name) {
        changes.flush_prefix(&prefix);
    }
    // A partition's rows are its ancestors' too (and a partitioned root's are its
    // partitions'): the same keys and values change there.
    for related in &schema.related {
        if let Some(related) = resolved(source, conn, changes, related, origin) {
            apply(conn, changes, &payload, related, origin);
        }
    }
    apply(conn, changes, &payload, schema, origin);
}

/// The schema of the table a payload of `source` names, whatever the allowlist says; None
/// when it cannot be resolved, after dropping the source's entries under its name's prefix,
/// or every entry of the source when the name does not read as one (its rows cannot be
/// found otherwise).
fn resolved(
    source: SourceId,
    conn: &mut Connection,
    changes: &mut Changes,
    table: &str,
    origin: &str,
) -> Option<std::sync::Arc<TableSchema>> {
    match schema::of(source).resolve_any(conn, table) {
        Ok(schema) => Some(schema),
        Err(e) => {
            // Its entries, if any, are under its name's prefix (a table dropped since the
            // change, say); a name that does not even read as one could be anything's.
            let prefix = crate::model::ident::parse_table(table).ok().map(|name| {
                key::cache_key(
                    &crate::config::current::key_prefix(source),
                    &name.display(),
                    "",
                )
            });
            redis_module::logging::log_warning(format!(
                "pgcache: {origin} names table {table:?}, which cannot be resolved ({}); \
                 dropping {}",
                e.message(),
                prefix
                    .as_deref()
                    .map_or("every cached row".to_string(), |p| format!(
                        "every entry under {p}"
                    ))
            ));
            match prefix {
                Some(prefix) => changes.flush_prefix(&prefix),
                None => changes.drop_everything(),
            }
            None
        }
    }
}

/// Adds what `payload` asks of the table `schema` to `changes`.
fn apply(
    conn: &mut Connection,
    changes: &mut Changes,
    payload: &Payload,
    schema: std::sync::Arc<TableSchema>,
    origin: &str,
) {
    let entering = || {
        payload
            .entering
            .clone()
            .map(|rows| canonical_rows(&schema, rows))
    };
    if schema.primary_key.is_empty() && !payload.flush {
        // A keyless table's rows have nothing to name them by. Rows that were not there
        // before were in no result: the results they may enter go (and its rows read by
        // other columns, `Changes::rows_written`). A row that was there may have been in
        // any: everything that read the table goes.
        if let (true, Some(rows)) = (payload.only_inserted, entering()) {
            changes.rows_written(schema.clone(), Some(rows));
            return;
        }
    }
    if payload.flush || schema.primary_key.is_empty() {
        changes.flush(schema);
        changes.count_flushed(payload.flushed_keys);
        return;
    }
    let (keys, mut unreadable) = keys_of(payload, &schema);
    let entering = entering();
    changes.rows_written(schema.clone(), entering);
    match normalise::confirm_all(conn, &schema, keys) {
        Ok(keys) => {
            for key in keys {
                changes.delete(schema.clone(), key);
            }
        }
        // The server's message quotes the value (row data): keep it out of the log.
        Err(_) => {
            unreadable = Some(Error::invalid(
                "PostgreSQL could not read its values as the key types",
            ))
        }
    }
    if let Some(why) = unreadable {
        // The row it names cannot be found among the entries: drop the table's.
        redis_module::logging::log_warning(format!(
            "pgcache: {origin} for {} names a key pgcache cannot read ({why}); dropping \
             the table's cached rows",
            schema.display
        ));
        changes.flush(schema);
    }
}
