//! PostgreSQL's canonical spelling of key values only it can read (`KeyKind::Rendered`:
//! dates, timestamps, `char(n)`, `citext`, ...). A READ, WRITE or INVALIDATE of such a key, and
//! every notification naming one, asks here before the key names a cache entry, so the
//! client's `2024-01-01 10:00` and the trigger's `2024-01-01T10:00:00` meet on one entry.

use crate::error::{Error, Result};
use crate::model::key::{CanonicalPk, KeyKind};
use crate::pg::errors::query_error;
use crate::pg::pool::Connection;
use crate::pg::query::{self, SpelledParam};
use crate::pg::schema::TableSchema;

/// The keys with every value canonically spelled, in the same order. Keys already confirmed
/// pass through without a query; the others take one query per set of spelled columns.
pub fn confirm_all(
    client: &mut Connection,
    table: &TableSchema,
    keys: Vec<CanonicalPk>,
) -> Result<Vec<CanonicalPk>> {
    let mut groups: Vec<(Vec<&str>, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate().filter(|(_, k)| k.unconfirmed) {
        let spelled = spelled_columns(table, key);
        match groups.iter_mut().find(|(names, _)| *names == spelled) {
            Some((_, members)) => members.push(i),
            None => groups.push((spelled, vec![i])),
        }
    }
    let mut spellings: Vec<Vec<(String, String)>> = vec![Vec::new(); keys.len()];
    for (names, members) in &groups {
        let params: Vec<SpelledParam> = names
            .iter()
            .map(|name| spelled_param(table, name))
            .collect();
        let arrays: Vec<Vec<&str>> = names
            .iter()
            .map(|name| members.iter().map(|&m| value_of(&keys[m], name)).collect())
            .collect();
        let bound: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = arrays
            .iter()
            .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = client
            .query(&query::spell_many(&params), &bound)
            .map_err(|e| query_error(&e, &table.display))?;
        for row in rows {
            let ordinal: i64 = row.get(0);
            let member = members[(ordinal - 1) as usize];
            for (c, name) in names.iter().enumerate() {
                let spelled: Option<String> = row.get(c + 1);
                let spelled = spelled.ok_or_else(|| {
                    Error::invalid(format!("null never matches a key (column {name:?})"))
                })?;
                spellings[member].push((name.to_string(), spelled));
            }
        }
    }
    keys.into_iter()
        .zip(spellings)
        .map(|(key, spelled)| {
            if key.unconfirmed {
                key.confirmed(&spelled)
            } else {
                Ok(key)
            }
        })
        .collect()
}

/// One key, canonically spelled.
pub fn confirm(
    client: &mut Connection,
    table: &TableSchema,
    key: CanonicalPk,
) -> Result<CanonicalPk> {
    if !key.unconfirmed {
        return Ok(key);
    }
    Ok(confirm_all(client, table, vec![key])?.remove(0))
}

fn spelled_columns<'a>(table: &TableSchema, key: &'a CanonicalPk) -> Vec<&'a str> {
    key.columns
        .iter()
        .map(|(c, _)| c.as_str())
        .filter(|c| {
            matches!(
                table.column(c).map(|col| col.kind),
                Some(KeyKind::Rendered(_))
            )
        })
        .collect()
}

fn spelled_param<'a>(table: &'a TableSchema, name: &str) -> SpelledParam<'a> {
    let column = table.column(name).expect("keys name real columns");
    let KeyKind::Rendered(rendering) = column.kind else {
        unreachable!("only Rendered columns are spelled")
    };
    SpelledParam {
        cast_type: &column.cast_type,
        rendering,
    }
}

fn value_of<'a>(key: &'a CanonicalPk, column: &str) -> &'a str {
    key.columns
        .iter()
        .find(|(c, _)| c == column)
        .map(|(_, v)| v.as_str())
        .expect("spelled columns are the key's own")
}
