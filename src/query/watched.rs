//! The columns whose new values the change feed carries, by table: those some row-precise
//! statement matches on (`precision`). Added when a statement is learned, read by the feed
//! for every changed row. One list per source (`of`): two databases may have tables of one
//! name, and each source's feed reads its own.

use crate::model::source::{PartRef, Parts, SourceId};
use crate::pg::schema::TableSchema;
use std::collections::HashMap;
use std::sync::RwLock;

/// Every source's watched columns; the default source's inline.
static WATCHED: Parts<Watched> = Parts::new(Watched::new());

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    WATCHED.install(id, Watched::new());
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    WATCHED.forget_named(id);
}

/// The watched columns of source `id`.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, Watched> {
    WATCHED.of(id)
}

/// One source's watched columns, by table (`"schema"."name"`).
pub struct Watched(RwLock<Option<HashMap<String, Vec<String>>>>);

impl Watched {
    /// None (const, so a `static` holds the default source's).
    pub const fn new() -> Watched {
        Watched(RwLock::new(None))
    }

    /// The feed carries `columns` of `table` from now on.
    pub fn add(&self, table: &TableSchema, columns: &[String]) {
        let mut watched = self.0.write().unwrap_or_else(|p| p.into_inner());
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
    pub fn with_watched<R>(&self, table: &str, f: impl FnOnce(&[String]) -> R) -> Option<R> {
        let watched = self.0.read().unwrap_or_else(|p| p.into_inner());
        watched.as_ref()?.get(table).map(|columns| f(columns))
    }
}
