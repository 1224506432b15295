//! ORDER BY over a table's columns, for a full page (`LIMIT`): a row that sorts strictly
//! after the page's last row cannot enter it. Decided only where every key compares
//! exactly (`value::compare`) and the row's values are known; else the row may enter.

use super::value::{self, SqlType};
use super::{EnteringRow, NewValue};
use std::cmp::Ordering;

/// One ORDER BY key: a column, its type, `DESC`, `NULLS FIRST`.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub column: String,
    pub ty: SqlType,
    pub descending: bool,
    pub nulls_first: bool,
}

/// How `row` sorts against `boundary` (the last row's key values as text, None for NULL),
/// key by key; None when a value is unknown or does not compare exactly.
pub fn against(
    keys: &[SortKey],
    boundary: &[Option<String>],
    row: &EnteringRow,
) -> Option<Ordering> {
    if boundary.len() != keys.len() {
        return None;
    }
    for (key, last) in keys.iter().zip(boundary) {
        let (_, value) = row.iter().find(|(c, _)| *c == key.column)?;
        let order = match (value, last) {
            (NewValue::Null, None) => Ordering::Equal,
            (NewValue::Null, Some(_)) => nulls(key),
            (NewValue::Text(_), None) => nulls(key).reverse(),
            (NewValue::Text(v), Some(l)) => {
                let (v, l) = (value::read(key.ty, v)?, value::read(key.ty, l)?);
                let o = value::compare(key.ty, &v, &l)?;
                if key.descending { o.reverse() } else { o }
            }
        };
        if order != Ordering::Equal {
            return Some(order);
        }
    }
    Some(Ordering::Equal)
}

/// Where a NULL sorts against a value under `key`.
fn nulls(key: &SortKey) -> Ordering {
    if key.nulls_first {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

/// Whether `row` sorts strictly after `boundary`: it cannot enter the full page that ends
/// there (a tie may: PostgreSQL orders ties as it finds them).
pub fn sorts_after(keys: &[SortKey], boundary: &[Option<String>], row: &EnteringRow) -> bool {
    against(keys, boundary, row) == Some(Ordering::Greater)
}

/// Whether every key's type compares exactly, so a boundary can be weighed.
pub fn orderable(ty: SqlType) -> bool {
    match ty {
        SqlType::Text(c) => c.bytewise,
        SqlType::Jsonb | SqlType::TextArray | SqlType::Unresolved => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(column: &str, ty: SqlType, descending: bool, nulls_first: bool) -> SortKey {
        SortKey {
            column: column.into(),
            ty,
            descending,
            nulls_first,
        }
    }

    fn row(values: &[(&str, Option<&str>)]) -> EnteringRow {
        values
            .iter()
            .map(|(c, v)| {
                (
                    c.to_string(),
                    v.map_or(NewValue::Null, |t| NewValue::Text(t.into())),
                )
            })
            .collect()
    }

    #[test]
    fn rows_after_the_last_one_are_told_apart() {
        let keys = [
            key("total", SqlType::Number, true, true),
            key("id", SqlType::Number, false, false),
        ];
        let last = [Some("10.5".to_string()), Some("7".to_string())];
        let after = |t: Option<&str>, id: &str| {
            sorts_after(&keys, &last, &row(&[("total", t), ("id", Some(id))]))
        };
        // DESC: a smaller total sorts after.
        assert!(after(Some("3"), "1"));
        assert!(!after(Some("11"), "1"));
        // A tie on total, then id ascending.
        assert!(after(Some("10.50"), "8"));
        assert!(!after(Some("10.5"), "7"));
        assert!(!after(Some("10.5"), "6"));
        // NULLS FIRST under DESC: a NULL total sorts before every value.
        assert!(!after(None, "100"));
        // Unknown: may enter.
        assert!(!sorts_after(&keys, &last, &row(&[("id", Some("9"))])));
        let nulls_last = [key("name", SqlType::Number, false, false)];
        assert!(sorts_after(
            &nulls_last,
            &[Some("1".into())],
            &row(&[("name", None)])
        ));
        assert!(!sorts_after(&nulls_last, &[None], &row(&[("name", None)])));
    }
}
