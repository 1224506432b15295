//! SQL text for row lookups. Identifiers come from the catalog and are always quoted; key
//! values are never spliced in: they are bound as `text` parameters and cast to the column's
//! type inside PostgreSQL, which keeps the primary-key index usable.

use crate::model::ident::quote_ident;
use crate::model::key::Rendering;

/// One key column as the query needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParam<'a> {
    pub column: &'a str,
    /// The type to cast the text parameter to, as PostgreSQL's `format_type` names it.
    pub cast_type: &'a str,
}

/// Single-row lookup: `$1..$n` are the key values as text, in `keys` order. `LIMIT 2` lets
/// the caller see a non-unique key instead of silently picking a row.
pub fn select_one(table_sql: &str, keys: &[KeyParam]) -> String {
    let conditions: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            format!(
                "t.{} = (${}::text)::{}",
                quote_ident(k.column),
                i + 1,
                k.cast_type
            )
        })
        .collect();
    format!(
        "SELECT row_to_json(t.*)::text FROM {table_sql} AS t WHERE {} LIMIT 2",
        conditions.join(" AND ")
    )
}

/// Batch lookup: `$1..$n` are `text[]`, one array per key column, element i of each array
/// forming key i. Returns `(ordinal, row json)` pairs, ordinal 1-based into the arrays, so
/// one query serves any number of keys, composite or not.
pub fn select_many(table_sql: &str, keys: &[KeyParam]) -> String {
    let arrays: Vec<String> = (1..=keys.len()).map(|i| format!("${i}::text[]")).collect();
    let aliases: Vec<String> = (0..keys.len()).map(|i| format!("k{i}")).collect();
    let conditions: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("t.{} = k.k{i}::{}", quote_ident(k.column), k.cast_type))
        .collect();
    format!(
        "SELECT k.ord, row_to_json(t.*)::text FROM unnest({}) WITH ORDINALITY AS k({}, ord) \
         JOIN {table_sql} AS t ON {}",
        arrays.join(", "),
        aliases.join(", "),
        conditions.join(" AND ")
    )
}

/// One key column whose values PostgreSQL spells (`KeyKind::Rendered`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpelledParam<'a> {
    pub cast_type: &'a str,
    pub rendering: Rendering,
}

/// PostgreSQL's canonical JSON spelling of key values: `$1..$n` are `text[]`, one array per
/// column, element i of each forming key i. Returns `(ordinal, spelling, ...)` rows.
pub fn spell_many(columns: &[SpelledParam]) -> String {
    let arrays: Vec<String> = (1..=columns.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("k{i}")).collect();
    let spellings: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let value = format!("(k.k{i})::{}", c.cast_type);
            match c.rendering {
                Rendering::Plain => format!("to_json({value})::text"),
                Rendering::BlankPadded => format!("to_json(({value})::text)::text"),
                Rendering::CaseInsensitive => format!("to_json(lower(({value})::text))::text"),
                Rendering::Instant => format!("to_json(({value}) AT TIME ZONE 'UTC')::text"),
            }
        })
        .collect();
    format!(
        "SELECT k.ord, {} FROM unnest({}) WITH ORDINALITY AS k({}, ord)",
        spellings.join(", "),
        arrays.join(", "),
        aliases.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_cast_then_render_each_kind() {
        let columns = [
            SpelledParam {
                cast_type: "timestamp without time zone",
                rendering: Rendering::Plain,
            },
            SpelledParam {
                cast_type: "bpchar",
                rendering: Rendering::BlankPadded,
            },
            SpelledParam {
                cast_type: "citext",
                rendering: Rendering::CaseInsensitive,
            },
            SpelledParam {
                cast_type: "timestamp with time zone",
                rendering: Rendering::Instant,
            },
        ];
        assert_eq!(
            spell_many(&columns),
            "SELECT k.ord, to_json((k.k0)::timestamp without time zone)::text, \
             to_json(((k.k1)::bpchar)::text)::text, to_json(lower(((k.k2)::citext)::text))::text, \
             to_json(((k.k3)::timestamp with time zone) AT TIME ZONE 'UTC')::text \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS k(k0, k1, k2, k3, ord)"
        );
    }

    fn keys() -> Vec<KeyParam<'static>> {
        vec![
            KeyParam {
                column: "id",
                cast_type: "integer",
            },
            KeyParam {
                column: "re\"gion",
                cast_type: "text",
            },
        ]
    }

    #[test]
    fn single_lookup_binds_every_value() {
        assert_eq!(
            select_one("\"public\".\"t\"", &keys()),
            "SELECT row_to_json(t.*)::text FROM \"public\".\"t\" AS t \
             WHERE t.\"id\" = ($1::text)::integer AND t.\"re\"\"gion\" = ($2::text)::text LIMIT 2"
        );
    }

    #[test]
    fn batch_lookup_unnests_parallel_arrays() {
        assert_eq!(
            select_many("\"public\".\"t\"", &keys()),
            "SELECT k.ord, row_to_json(t.*)::text FROM unnest($1::text[], $2::text[]) \
             WITH ORDINALITY AS k(k0, k1, ord) JOIN \"public\".\"t\" AS t \
             ON t.\"id\" = k.k0::integer AND t.\"re\"\"gion\" = k.k1::text"
        );
    }
}
