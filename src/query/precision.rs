//! How precisely a statement's results are dropped: the rules (`pgcache_rules::precision`)
//! applied to a statement on a worker. The catalog is asked what the rules need of its
//! tables (`catalog::precision_facts`), the rules decide, and the columns a row-precise
//! statement matches on are watched (`watched`), so the change feed carries their new values.

use crate::config::current;
use crate::error::Result;
use crate::model::source::SourceId;
use crate::pg::pool::Connection;
use crate::pg::schema::{Column, TableSchema};
use crate::query::catalog::{self, Learned};
use crate::query::shape::Shaped;
use crate::query::watched;
use std::sync::Arc;

pub use pgcache_rules::precision::{NewValue, Written};

/// How precisely a statement's results are dropped (`pgcache_rules::precision::Precision`).
pub type Precision = pgcache_rules::precision::Precision<Arc<TableSchema>>;
/// One table a row-precise statement reads, and what its rows are matched on.
pub type SideMatch = pgcache_rules::precision::SideMatch<Arc<TableSchema>>;

impl pgcache_rules::precision::Table for TableSchema {
    fn key(&self) -> &str {
        &self.key_prefix
    }
    fn schema(&self) -> &str {
        &self.name.schema
    }
    fn name(&self) -> &str {
        &self.name.name
    }
    fn display(&self) -> &str {
        &self.display
    }
    fn column(&self, name: &str) -> Option<&Column> {
        TableSchema::column(self, name)
    }
    fn primary_key(&self) -> &[String] {
        &self.primary_key
    }
}

/// The precision of a statement of `source` of shape `shape` (or of none, for a reason), of
/// which the catalog `learned` what it reads and calls. Worker.
pub fn decide(
    client: &mut Connection,
    source: SourceId,
    shape: &Shaped,
    learned: &Learned,
) -> Result<Precision> {
    if !current::of(source).query_row_precision() {
        return Ok(Precision::Table(
            "query_precision is table, or invalidations come from notifications, which carry no \
             new values"
                .into(),
        ));
    }
    let learned = pgcache_rules::precision::Learned {
        tables: &learned.tables,
        params: learned
            .params
            .iter()
            .map(|p| (p.cast.as_str(), p.kind))
            .collect(),
        plain: learned.plain,
        aggregates: learned.aggregates,
        own_functions: &learned.own_functions,
    };
    let needs = match pgcache_rules::precision::needs(shape, &learned) {
        Ok(needs) => needs,
        Err(why) => return Ok(Precision::Table(why)),
    };
    let facts = catalog::precision_facts(client, &needs)?;
    let precision = pgcache_rules::precision::decide(shape, &learned, &facts);
    if let Some(m) = precision.row() {
        for (table, columns) in m.watched() {
            watched::of(table.source).add(table, &columns);
        }
    }
    Ok(precision)
}
