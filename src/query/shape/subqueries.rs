//! A statement's subqueries (`IN (SELECT ...)`, `EXISTS (...)`, a scalar subquery, in the
//! WHERE or anywhere else), each over one plain table and naming none of the outer query's
//! columns, read as sides of their own (`Join::Semi`). A subquery's answer is computed from
//! the rows of its table its WHERE admits, whatever its projection, grouping, order or
//! limit: a change to that table can change the statement's result only if the changed row
//! is one of those rows (a member) or its new values may enter them (the subquery's WHERE
//! on them). The outer condition that holds a subquery binds no outer row: pgcache does not
//! weigh it.

use super::joins::{Join, Side, column_refs};
use super::{Names, has_sublink, not_plain, one_table, rows_sql};
use crate::error::Result;
use crate::query::predicate::Pred;
use pg_query::protobuf::{self, SelectStmt};
use pg_query::{NodeEnum, NodeRef};
use serde_json::Value;

/// The sides of `select`'s subqueries, numbered from `first`, or why they are not read.
pub fn sides(
    tree: &protobuf::ParseResult,
    select: &SelectStmt,
    first: usize,
) -> Result<std::result::Result<Vec<Side>, String>> {
    let Ok(serialized) = serde_json::to_value(select) else {
        return Ok(Err("a subquery pgcache cannot read".into()));
    };
    let expected = count_sublinks(&serialized);
    if expected == 0 {
        return Ok(Ok(Vec::new()));
    }
    let whole = NodeEnum::SelectStmt(Box::new(select.clone()));
    let found: Vec<&SelectStmt> = whole
        .nodes()
        .into_iter()
        .filter_map(|(node, ..)| match node {
            NodeRef::SubLink(link) => match link.subselect.as_deref()?.node.as_ref()? {
                NodeEnum::SelectStmt(sub) => Some(&**sub),
                _ => None,
            },
            _ => None,
        })
        .collect();
    // The walk that finds them must have found every one the tree holds.
    if found.len() != expected {
        return Ok(Err("a subquery where pgcache does not look for one".into()));
    }
    let mut sides = Vec::with_capacity(found.len());
    for (n, sub) in found.into_iter().enumerate() {
        match side(tree, sub, first + n)? {
            Ok(side) => sides.push(side),
            Err(why) => return Ok(Err(why)),
        }
    }
    Ok(Ok(sides))
}

/// One subquery's side.
fn side(
    tree: &protobuf::ParseResult,
    sub: &SelectStmt,
    step: usize,
) -> Result<std::result::Result<Side, String>> {
    if has_sublink(sub) {
        return Ok(Err("a subquery inside a subquery".into()));
    }
    if let Some(why) = not_plain(sub) {
        return Ok(Err(format!("a subquery pgcache does not read ({why})")));
    }
    let Some(relation) = one_table(sub) else {
        return Ok(Err(
            "a subquery that reads no table or more than one (a join)".into(),
        ));
    };
    let names = Names {
        schema: &relation.schemaname,
        relation: &relation.relname,
        alias: relation.alias.as_ref().map(|a| a.aliasname.as_str()),
        alone: true,
    };
    let reference = names.alias.unwrap_or(names.relation);
    let mut unqualified = Vec::new();
    let Ok(serialized) = serde_json::to_value(sub) else {
        return Ok(Err("a subquery pgcache cannot read".into()));
    };
    for fields in column_refs(&serialized) {
        let own = match fields.as_deref() {
            Some([name]) => {
                if name != "*" && !unqualified.contains(name) {
                    unqualified.push(name.clone());
                }
                true
            }
            Some([qualifier, _]) => qualifier == reference,
            Some([schema, table, _]) => {
                names.alias.is_none()
                    && table == names.relation
                    && (names.schema.is_empty() || schema == names.schema)
            }
            _ => false,
        };
        if !own {
            return Ok(Err(
                "a correlated subquery (it names the outer query's columns)".into(),
            ));
        }
    }
    let filter = match sub.where_clause.as_deref() {
        Some(where_clause) => names.condition(where_clause),
        None => Pred::And(Vec::new()),
    };
    Ok(Ok(Side {
        relation: (relation.schemaname.clone(), relation.relname.clone()),
        reference: reference.to_string(),
        filter,
        step,
        join: Join::Semi,
        mentioned: true,
        own_rows: Some(rows_sql(tree, sub, false)?),
        unqualified,
    }))
}

/// How many subqueries a serialized tree holds, at any depth.
fn count_sublinks(value: &Value) -> usize {
    match value {
        Value::Object(fields) => fields
            .iter()
            .map(|(name, inner)| usize::from(name == "SubLink") + count_sublinks(inner))
            .sum(),
        Value::Array(items) => items.iter().map(count_sublinks).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use crate::query::predicate::{Cmp, Expr, Literal, Pred, SqlType};
    use crate::query::shape::{Join, of};

    fn shaped(sql: &str) -> std::result::Result<crate::query::shape::Shape, String> {
        of(&pg_query::parse(sql).unwrap().protobuf).unwrap()
    }

    #[test]
    fn an_uncorrelated_subquery_is_a_side_bound_by_its_where() {
        let s = shaped(
            "SELECT * FROM orders WHERE customer_id IN \
             (SELECT U0.id FROM customers U0 WHERE U0.country = 'FR') AND total > $1",
        )
        .unwrap();
        assert_eq!(s.sides.len(), 2);
        let sub = &s.sides[1];
        assert_eq!(sub.join, Join::Semi);
        assert_eq!(sub.relation.1, "customers");
        assert_eq!(
            sub.filter,
            Pred::Compare {
                op: Cmp::Eq,
                left: Expr::Column("country".into()),
                right: Expr::Const(Some("FR".into()), Literal::Untyped),
                ty: SqlType::Unresolved,
            }
        );
        assert_eq!(
            sub.own_rows.as_deref(),
            Some("SELECT * FROM customers u0 WHERE u0.country = 'FR'")
        );
        assert!(sub.unqualified.is_empty());
        // The outer condition that holds it is not weighed; the other one is.
        assert!(matches!(&s.sides[0].filter, Pred::And(parts) if parts.len() == 2));
        assert_eq!(s.page, None);
        // EXISTS and scalar subqueries too, anywhere in the statement.
        let s = shaped(
            "SELECT id, (SELECT count(*) FROM users) AS n FROM orders o \
             WHERE NOT EXISTS (SELECT 1 FROM refunds WHERE amount > 5 LIMIT 1) AND o.id = $1",
        )
        .unwrap();
        assert_eq!(s.sides.len(), 3);
        assert_eq!(s.sides[2].unqualified, ["amount"]);
    }

    #[test]
    fn correlated_and_nested_subqueries_are_said() {
        for (sql, why) in [
            (
                "SELECT * FROM orders o WHERE EXISTS \
                 (SELECT 1 FROM lines l WHERE l.order_id = o.id)",
                "correlated",
            ),
            (
                "SELECT * FROM orders WHERE id IN (SELECT order_id FROM lines \
                 WHERE product_id IN (SELECT id FROM products))",
                "inside a subquery",
            ),
            (
                "SELECT * FROM orders WHERE id IN (SELECT l.order_id FROM lines l \
                 JOIN products p ON p.id = l.product_id)",
                "more than one",
            ),
            (
                "SELECT * FROM orders WHERE id IN (SELECT 1 UNION SELECT 2)",
                "set operation",
            ),
        ] {
            let e = shaped(sql).err().unwrap_or_default();
            assert!(e.contains(why), "{sql}: {e}");
        }
    }
}
