//! The columns of a statement's result, each named with the type a client decodes its JSON
//! value as (EXPLAIN's `columns`): learned once per statement from the statement PostgreSQL
//! prepared, so a client asks once and decodes every later result without asking again.
//!
//! A type is named by what PostgreSQL's `row_to_json` makes of it: a domain by its base type
//! (`row_to_json` writes the base type's value), an array by its element's name and `[]`
//! (nested lists for several dimensions), an enum `enum` (its label, a JSON string), a
//! composite `record` (a JSON object); any other by `pg_type.typname` (`int4`, `numeric`,
//! `timestamptz`, `int4range`).

use crate::error::Result;
use crate::pg::errors::statement_error;
use crate::pg::pool::Connection;

/// One column of a statement's result: its name as the result's JSON objects spell it (two
/// columns may share one), and its type as a client decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultColumn {
    pub name: String,
    pub type_name: String,
}

/// For each type oid (in order): whether it is an array, and the base type of it (or of its
/// element) past any domains: its name and `typtype`. Domains over domains and arrays of
/// domains resolve all the way down.
const COLUMN_TYPES_SQL: &str = "WITH RECURSIVE resolved(n, oid, in_array, depth) AS ( \
       SELECT p.n, p.oid, false, 0 \
         FROM pg_catalog.unnest($1::pg_catalog.oid[]) WITH ORDINALITY AS p(oid, n) \
       UNION ALL \
       SELECT r.n, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END, \
              r.in_array OR t.typtype <> 'd', r.depth + 1 \
         FROM resolved r JOIN pg_catalog.pg_type t ON t.oid = r.oid \
        WHERE r.depth < 32 AND (t.typtype = 'd' \
              OR (t.typelem <> 0 AND t.typlen = -1 AND NOT r.in_array)) \
     ) \
     SELECT DISTINCT ON (r.n) r.in_array, t.typname::text, t.typtype::text \
       FROM resolved r JOIN pg_catalog.pg_type t ON t.oid = r.oid \
      ORDER BY r.n, r.depth DESC";

/// The result columns of `sql` (a statement PostgreSQL admitted), with their types.
pub fn learn(client: &mut Connection, sql: &str) -> Result<Vec<ResultColumn>> {
    let prepared = client.prepare(sql).map_err(|e| statement_error(&e))?;
    let oids: Vec<u32> = prepared.columns().iter().map(|c| c.type_().oid()).collect();
    let types = client
        .query(COLUMN_TYPES_SQL, &[&oids])
        .map_err(|e| statement_error(&e))?;
    Ok(prepared
        .columns()
        .iter()
        .zip(&types)
        .map(|(column, row)| ResultColumn {
            name: column.name().to_string(),
            type_name: type_name(row.get(0), row.get(1), row.get(2)),
        })
        .collect())
}

/// How a client knows a base type (`typname`, `typtype`), or an array of it.
fn type_name(in_array: bool, typname: &str, typtype: &str) -> String {
    let base = match typtype {
        "e" => "enum",
        "c" => "record",
        _ => typname,
    };
    if in_array {
        format!("{base}[]")
    } else {
        base.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_and_composites_are_named_by_their_kind_and_arrays_by_their_element() {
        assert_eq!(type_name(false, "int4", "b"), "int4");
        assert_eq!(type_name(true, "int4", "b"), "int4[]");
        assert_eq!(type_name(false, "mood", "e"), "enum");
        assert_eq!(type_name(true, "mood", "e"), "enum[]");
        assert_eq!(type_name(false, "address", "c"), "record");
        assert_eq!(type_name(false, "int4range", "r"), "int4range");
        assert_eq!(type_name(false, "record", "p"), "record");
    }
}
