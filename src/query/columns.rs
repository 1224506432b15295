//! The columns of a statement's result, each named with the type a client decodes its JSON
//! value as (EXPLAIN's `columns`): learned once per statement from the statement PostgreSQL
//! prepared, so a client asks once and decodes every later result without asking again.
//!
//! A type is named by what PostgreSQL's `row_to_json` makes of it: a domain by its base type
//! (`row_to_json` writes the base type's value), an array by its element's name and `[]`
//! (nested lists for several dimensions), an enum `enum` (its label, a JSON string), a
//! composite `record` (a JSON object); any other by `pg_type.typname` (`int4`, `numeric`,
//! `timestamptz`, `int4range`).
//!
//! Each column also names the types it is of (EXPLAIN's `column_types`), for a client's own
//! decoders of a type (issue #54): the column's declared type (its element's, for an array),
//! then each domain's base type under it, down to the base type, each with its oid. A domain
//! is known for a column of a table or view (PostgreSQL describes any column by its base
//! type; the table's attribute says the domain), not for an expression's value.

use crate::error::Result;
use crate::pg::errors::statement_error;
use crate::pg::pool::Connection;

/// One column of a statement's result: its name as the result's JSON objects spell it (two
/// columns may share one), and its type as a client decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultColumn {
    pub name: String,
    pub type_name: String,
    /// The types it is of, `(typname, oid)`: declared (an array's element), then each
    /// domain's base type, to the base type.
    pub types: Vec<(String, u32)>,
}

/// For each column (its type oid, and the table and attribute it comes from, 0 where none, in
/// order), its declared type (PostgreSQL describes a table's domain column by the base
/// type; the table says the domain): whether it is an array, and the base type of it (or of its
/// element) past any domains: its name and `typtype`; then the types it is of (`types`):
/// every step but the array the walk stepped into, names and oids in order; for an array,
/// only its element's (a domain over an array type is none a client decodes elements by). Domains over
/// domains and arrays of domains resolve all the way down.
const COLUMN_TYPES_SQL: &str = "WITH RECURSIVE resolved(n, oid, in_array, depth) AS ( \
       SELECT p.n, COALESCE((SELECT a.atttypid FROM pg_catalog.pg_attribute a \
                              WHERE p.rel <> 0 AND a.attrelid = p.rel AND a.attnum = p.att), \
                             p.oid), false, 0 \
         FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), \
                         pg_catalog.unnest($2::pg_catalog.oid[]), \
                         pg_catalog.unnest($3::pg_catalog.int2[])) \
              WITH ORDINALITY AS p(oid, rel, att, n) \
       UNION ALL \
       SELECT r.n, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END, \
              r.in_array OR t.typtype <> 'd', r.depth + 1 \
         FROM resolved r JOIN pg_catalog.pg_type t ON t.oid = r.oid \
        WHERE r.depth < 32 AND (t.typtype = 'd' \
              OR (t.typelem <> 0 AND t.typlen = -1 AND NOT r.in_array)) \
     ), \
     typed AS ( \
       SELECT r.n, r.depth, r.in_array, t.typname::text AS typname, t.typtype::text AS typtype, \
              t.oid, NOT (t.typtype <> 'd' AND t.typelem <> 0 AND t.typlen = -1 \
                          AND NOT r.in_array) AS is_of \
         FROM resolved r JOIN pg_catalog.pg_type t ON t.oid = r.oid \
     ) \
     SELECT DISTINCT ON (r.n) r.in_array, r.typname, r.typtype, \
            (SELECT pg_catalog.array_agg(x.typname ORDER BY x.depth) \
               FROM typed x WHERE x.n = r.n AND x.is_of AND x.in_array = r.in_array), \
            (SELECT pg_catalog.array_agg(x.oid ORDER BY x.depth) \
               FROM typed x WHERE x.n = r.n AND x.is_of AND x.in_array = r.in_array) \
       FROM typed r \
      ORDER BY r.n, r.depth DESC";

/// The result columns of `sql` (a statement PostgreSQL admitted), with their types.
pub fn learn(client: &mut Connection, sql: &str) -> Result<Vec<ResultColumn>> {
    let prepared = client.prepare(sql).map_err(|e| statement_error(&e))?;
    let oids: Vec<u32> = prepared.columns().iter().map(|c| c.type_().oid()).collect();
    let tables: Vec<u32> = (prepared.columns().iter())
        .map(|c| c.table_oid().unwrap_or(0))
        .collect();
    let attributes: Vec<i16> = (prepared.columns().iter())
        .map(|c| c.column_id().unwrap_or(0))
        .collect();
    let types = client
        .query(COLUMN_TYPES_SQL, &[&oids, &tables, &attributes])
        .map_err(|e| statement_error(&e))?;
    Ok(prepared
        .columns()
        .iter()
        .zip(&types)
        .map(|(column, row)| {
            let names: Option<Vec<String>> = row.get(3);
            let oids: Option<Vec<u32>> = row.get(4);
            let (names, oids) = (names.unwrap_or_default(), oids.unwrap_or_default());
            ResultColumn {
                name: column.name().to_string(),
                type_name: type_name(row.get(0), row.get(1), row.get(2)),
                types: names.into_iter().zip(oids).collect(),
            }
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
