//! Whether pgcache's answer is one PostgreSQL could have given, ties considered.
//!
//! - No ORDER BY: the rows, as multisets.
//! - An ORDER BY: the sequence of its values must be PostgreSQL's, row for row; within a run
//!   of equal values (a tie group) the order is free, so each group's rows must be rows
//!   PostgreSQL's *unlimited* answer holds at those values (with LIMIT/OFFSET the page's
//!   first and last groups may legitimately hold other tied rows than PostgreSQL picked).
//!   A group wholly inside the page then holds exactly PostgreSQL's rows, since its size
//!   is fixed by the sequence. So a tie-order difference is never a failure, and a stale
//!   row never passes: it is not among PostgreSQL's rows at its sort values.
//! - A column whose value PostgreSQL takes from any one of equal values (a GROUP BY key,
//!   min, max) is compared as a sort compares it: `1.5` for `1.50` is one it could give.

use serde_json::Value;
use std::collections::BTreeMap;

/// A number as a sort compares it: `1.50` and `1.5` tie, so do `-0` and `0`; integers
/// beyond a double's precision stay apart.
fn number_key(text: &str) -> String {
    if text.contains(['e', 'E']) {
        return text
            .parse::<f64>()
            .map_or(text.to_string(), |f| format!("{:e}", f + 0.0));
    }
    let mut t = text.to_string();
    if t.contains('.') {
        t = t.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if t == "-0" { "0".into() } else { t }
}

/// A sort value as a string that is equal exactly when the values tie.
fn sort_key(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("n:{}", number_key(&n.to_string())),
        other => format!("v:{other}"),
    }
}

fn row_key(row: &Value, keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| sort_key(row.get(k).unwrap_or(&Value::Null)))
        .collect()
}

fn multiset(rows: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.to_string()).or_insert(0) += 1;
    }
    m
}

/// `rows` with the numbers of the `columns` spelled as a sort compares them.
fn as_equals(rows: &[Value], columns: &[String]) -> Vec<Value> {
    rows.iter()
        .map(|row| {
            let mut row = row.clone();
            for c in columns {
                if let Some(v @ Value::Number(_)) = row.get_mut(c) {
                    *v = Value::String(sort_key(v));
                }
            }
            row
        })
        .collect()
}

fn rows(v: &Value) -> Result<&Vec<Value>, String> {
    v.as_array().ok_or_else(|| format!("not an array: {v}"))
}

/// `got` (pgcache) against `page` (PostgreSQL's answer to the same statement) and `full`
/// (PostgreSQL's answer without LIMIT/OFFSET; `page` itself when there is none).
pub fn compare(
    order_keys: &[String],
    any_of_equals: &[String],
    got: &Value,
    page: &Value,
    full: &Value,
) -> Result<(), String> {
    let equals = |v: &Value| rows(v).map(|rows| as_equals(rows, any_of_equals));
    let (got, page, full) = (&equals(got)?, &equals(page)?, &equals(full)?);
    if order_keys.is_empty() {
        let (a, b) = (multiset(got), multiset(page));
        if a == b {
            return Ok(());
        }
        let extra: Vec<&String> = a.keys().filter(|k| a.get(*k) > b.get(*k)).collect();
        let missing: Vec<&String> = b.keys().filter(|k| b.get(*k) > a.get(*k)).collect();
        return Err(format!(
            "rows differ: pgcache has {} PostgreSQL lacks {extra:?}, lacks {} PostgreSQL has {missing:?}",
            extra.len(),
            missing.len()
        ));
    }
    let got_keys: Vec<Vec<String>> = got.iter().map(|r| row_key(r, order_keys)).collect();
    let page_keys: Vec<Vec<String>> = page.iter().map(|r| row_key(r, order_keys)).collect();
    if got_keys != page_keys {
        let at = got_keys
            .iter()
            .zip(&page_keys)
            .position(|(a, b)| a != b)
            .unwrap_or(got_keys.len().min(page_keys.len()));
        return Err(format!(
            "ORDER BY values differ at row {at} ({} rows against PostgreSQL's {}): pgcache {:?}, PostgreSQL {:?}",
            got.len(),
            page.len(),
            got.get(at),
            page.get(at)
        ));
    }
    // Each tie group of pgcache's answer within PostgreSQL's rows at those values.
    let mut by_key: BTreeMap<Vec<String>, Vec<Value>> = BTreeMap::new();
    for r in full {
        by_key
            .entry(row_key(r, order_keys))
            .or_default()
            .push(r.clone());
    }
    let mut groups: BTreeMap<Vec<String>, Vec<Value>> = BTreeMap::new();
    for (r, k) in got.iter().zip(got_keys) {
        groups.entry(k).or_default().push(r.clone());
    }
    for (k, rows) in groups {
        let held = multiset(by_key.get(&k).map_or(&[][..], |v| &v[..]));
        for (row, n) in multiset(&rows) {
            if held.get(&row).copied().unwrap_or(0) < n {
                return Err(format!(
                    "row {row} (×{n}) is not among PostgreSQL's rows at ORDER BY values {k:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Every row of pgcache's answer (its text: a `Value` forgets the order of keys) has the
/// statement's columns, in the statement's order.
pub fn columns(answer: &str, columns: &[String]) -> Result<(), String> {
    for keys in pgcache_testkit::oracle::keys_in_order(answer)? {
        if keys != columns {
            return Err(format!(
                "a row's columns are {keys:?}; the statement's are {columns:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ties_at_a_page_edge_may_differ_and_stale_rows_may_not() {
        let keys = vec!["s".to_string()];
        let full = json!([{"s":2,"id":1},{"s":1,"id":2},{"s":1,"id":3},{"s":0,"id":4}]);
        let page = json!([{"s":2,"id":1},{"s":1,"id":2}]);
        let other_tie = json!([{"s":2,"id":1},{"s":1,"id":3}]);
        assert!(compare(&keys, &[], &other_tie, &page, &full).is_ok());
        let stale = json!([{"s":2,"id":1},{"s":1,"id":9}]);
        assert!(compare(&keys, &[], &stale, &page, &full).is_err());
        let wrong_order = json!([{"s":1,"id":2},{"s":2,"id":1}]);
        assert!(compare(&keys, &[], &wrong_order, &page, &full).is_err());
        // 1.5 and 1.50 tie (numeric keeps its digits), and -0 and 0.
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        let (got, pg) = (parse(r#"[{"s":1.50}]"#), parse(r#"[{"s":1.5}]"#));
        assert!(compare(&keys, &[], &got, &pg, &got).is_ok());
        let (got, pg) = (parse(r#"[{"s":-0}]"#), parse(r#"[{"s":0}]"#));
        assert!(compare(&keys, &[], &got, &pg, &got).is_ok());
        // Integers past a double's precision stay apart.
        let (got, pg) = (
            parse(r#"[{"s":9007199254740993}]"#),
            parse(r#"[{"s":9007199254740992}]"#),
        );
        assert!(compare(&keys, &[], &got, &pg, &pg).is_err());
    }

    #[test]
    fn a_group_key_may_be_any_of_its_equal_values_and_other_columns_may_not() {
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        let got = parse(r#"[{"g":1.5,"n":2}]"#);
        let pg = parse(r#"[{"g":1.50,"n":2}]"#);
        let group = ["g".to_string()];
        assert!(compare(&[], &group, &got, &pg, &pg).is_ok());
        assert!(compare(&[], &[], &got, &pg, &pg).is_err());
        let other_count = parse(r#"[{"g":1.50,"n":3}]"#);
        assert!(compare(&[], &group, &got, &other_count, &other_count).is_err());
    }
}
