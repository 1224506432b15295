//! The columns whose new values the change feed carries, by table: those some row-precise
//! statement matches on (`precision`). Added when a statement is learned, read by the feed
//! for every changed row.

use crate::pg::schema::TableSchema;
use std::collections::HashMap;
use std::sync::RwLock;

/// By table (`"schema"."name"`).
static WATCHED: RwLock<Option<HashMap<String, Vec<String>>>> = RwLock::new(None);

/// The feed carries `columns` of `table` from now on.
pub fn add(table: &TableSchema, columns: &[String]) {
    let mut watched = WATCHED.write().unwrap_or_else(|p| p.into_inner());
    let list = watched
        .get_or_insert_with(HashMap::new)
        .entry(table.sql_name.clone())
        .or_default();
    for column in columns {
        if !list.contains(column) {
            list.push(column.clone());
        }
    }
}

/// Calls `f` with the watched columns of `table` (`"schema"."name"`), if any are.
pub fn with_watched<R>(table: &str, f: impl FnOnce(&[String]) -> R) -> Option<R> {
    let watched = WATCHED.read().unwrap_or_else(|p| p.into_inner());
    watched.as_ref()?.get(table).map(|columns| f(columns))
}
