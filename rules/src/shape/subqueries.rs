//! A statement's subqueries (`IN (SELECT ...)`, `EXISTS (...)`, a scalar subquery), each
//! over one plain table, read as sides of their own (`Join::Semi`). A subquery's answer is
//! computed from the rows of its table its WHERE admits, whatever its projection, grouping,
//! order or limit: a change to that table can change the statement's result only if the
//! changed row is one of those rows (a member) or its new values may enter them (the
//! subquery's WHERE on them; a condition naming the outer query's columns may hold). The
//! outer condition that holds a subquery binds no outer row: pgcache does not weigh it.
//!
//! A subquery that names none of the outer query's columns may sit anywhere; its members are
//! the rows its WHERE admits. A correlated one (`EXISTS (SELECT 1 FROM lines l WHERE
//! l.order_id = o.id)`) only in the WHERE, where it is asked of the outer rows the rest of the
//! WHERE admits: its members are the rows it admits for any of those (read with the subquery
//! joined LATERALly to the outer rows), so a row of its table that no such outer row could
//! see is none.

use super::joins::{Join, Side, column_refs};
use super::{Names, count_nodes, has_sublink, not_plain, one_table, rows_of, rows_sql, spelled};
use crate::predicate::Pred;
use crate::{Error, Result};
use pg_query::protobuf::{self, SelectStmt};
use pg_query::{NodeEnum, NodeRef};

/// The sides of `select`'s subqueries, numbered from `first`, or why they are not read.
pub fn sides(
    tree: &protobuf::ParseResult,
    select: &SelectStmt,
    first: usize,
) -> Result<std::result::Result<Vec<Side>, String>> {
    let Ok(serialized) = serde_json::to_value(select) else {
        return Ok(Err("a subquery pgcache cannot read".into()));
    };
    let expected = count_nodes(&serialized, "SubLink");
    if expected == 0 {
        return Ok(Ok(Vec::new()));
    }
    let whole = NodeEnum::SelectStmt(Box::new(select.clone()));
    let found = subselects(&whole);
    // The walk that finds them must have found every one the tree holds.
    if found.len() != expected {
        return Ok(Err("a subquery where pgcache does not look for one".into()));
    }
    let NodeEnum::SelectStmt(cloned) = &whole else {
        return Ok(Err("a subquery pgcache cannot read".into()));
    };
    let in_where: Vec<*const SelectStmt> = cloned
        .where_clause
        .as_deref()
        .and_then(|w| w.node.as_ref())
        .map(|w| subselects(w).into_iter().map(|s| s as *const _).collect())
        .unwrap_or_default();
    let mut sides = Vec::with_capacity(found.len());
    for (n, sub) in found.into_iter().enumerate() {
        let outer = in_where
            .contains(&(sub as *const _))
            .then_some((tree, select));
        match side(tree, sub, outer, first + n)? {
            Ok(side) => sides.push(side),
            Err(why) => return Ok(Err(why)),
        }
    }
    Ok(Ok(sides))
}

/// The subqueries' SELECTs under `node`, at any depth.
fn subselects(node: &NodeEnum) -> Vec<&SelectStmt> {
    node.nodes()
        .into_iter()
        .filter_map(|(node, ..)| match node {
            NodeRef::SubLink(link) => match link.subselect.as_deref()?.node.as_ref()? {
                NodeEnum::SelectStmt(sub) => Some(&**sub),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The outer statement a subquery of its WHERE is asked of.
type Outer<'a> = (&'a protobuf::ParseResult, &'a SelectStmt);

/// One subquery's side; `outer` when it sits in the outer statement's WHERE (where it may
/// name the outer query's columns).
fn side(
    tree: &protobuf::ParseResult,
    sub: &SelectStmt,
    outer: Option<Outer>,
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
    let mut correlated = false;
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
        // A qualified column of another relation is the outer query's.
        if !own {
            if outer.is_none() || fields.is_none() {
                return Ok(Err("a correlated subquery (it names the outer query's \
                               columns) outside the WHERE"
                    .into()));
            }
            correlated = true;
        }
    }
    let own_rows = match outer {
        Some(outer) if correlated => lateral_rows(outer, sub)?,
        _ => rows_sql(tree, sub, false)?,
    };
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
        own_rows: Some(own_rows),
        unqualified,
    }))
}

/// The rows of a correlated subquery's table it admits for any outer row the rest of the
/// outer WHERE admits: `SELECT <name>.* FROM <outer FROM>, LATERAL (SELECT * FROM <its
/// table> WHERE <its WHERE>) AS <name> WHERE <the outer WHERE's conjuncts without a
/// subquery>`, `<name>` one the statement does not use.
fn lateral_rows((tree, select): Outer, sub: &SelectStmt) -> Result<String> {
    let text = serde_json::to_string(select)
        .unwrap_or_default()
        .to_lowercase();
    let name = (0..)
        .map(|n| format!("pgcache_sub{n}"))
        .find(|name| !text.contains(name.as_str()))
        .unwrap_or_default();
    let spelling = |e: String| Error::internal(format!("spelling a subquery's rows: {e}"));
    let template = pg_query::parse(&format!(
        "SELECT {name}.* FROM t, LATERAL (SELECT 1) AS {name}"
    ))
    .map_err(|e| spelling(e.to_string()))?;
    let Some(NodeEnum::SelectStmt(template)) = template.protobuf.stmts[0]
        .stmt
        .as_ref()
        .and_then(|s| s.node.clone())
    else {
        return Err(spelling("no SELECT".into()));
    };
    let mut lateral = template.from_clause[1].clone();
    if let Some(NodeEnum::RangeSubselect(range)) = lateral.node.as_mut() {
        range.subquery = Some(Box::new(protobuf::Node {
            node: Some(NodeEnum::SelectStmt(Box::new(rows_of(sub, false)?))),
        }));
    }
    let mut rows = rows_of(select, false)?;
    rows.target_list = template.target_list.clone();
    rows.from_clause.push(lateral);
    rows.where_clause = select.where_clause.as_deref().and_then(without_subqueries);
    spelled(tree, rows)
}

/// A condition's conjuncts that hold no subquery, ANDed (None: none is left).
fn without_subqueries(condition: &protobuf::Node) -> Option<Box<protobuf::Node>> {
    let plain = |node: &protobuf::Node| {
        serde_json::to_value(node).is_ok_and(|tree| count_nodes(&tree, "SubLink") == 0)
    };
    match condition.node.as_ref()? {
        NodeEnum::BoolExpr(b) if b.boolop == protobuf::BoolExprType::AndExpr as i32 => {
            let mut kept = (**b).clone();
            kept.args.retain(plain);
            match kept.args.len() {
                0 => None,
                1 => kept.args.pop().map(Box::new),
                _ => Some(Box::new(protobuf::Node {
                    node: Some(NodeEnum::BoolExpr(Box::new(kept))),
                })),
            }
        }
        _ => plain(condition).then(|| Box::new(condition.clone())),
    }
}

/// The sides of a set operation (UNION [ALL], INTERSECT, EXCEPT, nested): one per branch,
/// each a SELECT over one plain table with no subquery, its members the rows its WHERE
/// admits (what a set operation answers is computed from those alone), or why not.
pub fn set_operation(
    tree: &protobuf::ParseResult,
    select: &SelectStmt,
) -> Result<std::result::Result<Vec<Side>, String>> {
    fn branches<'a>(select: &'a SelectStmt, out: &mut Vec<&'a SelectStmt>) -> bool {
        if select.op == protobuf::SetOperation::SetopNone as i32 {
            out.push(select);
            return true;
        }
        match (select.larg.as_deref(), select.rarg.as_deref()) {
            (Some(l), Some(r)) => {
                select.with_clause.is_none() && branches(l, out) && branches(r, out)
            }
            _ => false,
        }
    }
    let mut found = Vec::new();
    if !branches(select, &mut found) {
        return Ok(Err("a set operation pgcache does not read".into()));
    }
    let mut sides = Vec::with_capacity(found.len());
    for (step, branch) in found.into_iter().enumerate() {
        if has_sublink(branch) || not_plain(branch).is_some() {
            return Ok(Err(
                "a set operation whose branch has a subquery, a WITH query \
                           or VALUES"
                    .into(),
            ));
        }
        let Some(relation) = one_table(branch) else {
            return Ok(Err(
                "a set operation whose branch reads no table or a join".into()
            ));
        };
        let names = Names {
            schema: &relation.schemaname,
            relation: &relation.relname,
            alias: relation.alias.as_ref().map(|a| a.aliasname.as_str()),
            alone: true,
        };
        sides.push(Side {
            relation: (relation.schemaname.clone(), relation.relname.clone()),
            reference: names.alias.unwrap_or(names.relation).to_string(),
            filter: match branch.where_clause.as_deref() {
                Some(where_clause) => names.condition(where_clause),
                None => Pred::And(Vec::new()),
            },
            step,
            join: Join::Semi,
            mentioned: true,
            own_rows: Some(rows_sql(tree, branch, false)?),
            unqualified: Vec::new(),
        });
    }
    Ok(Ok(sides))
}

#[cfg(test)]
mod tests {
    use crate::predicate::{Cmp, Expr, Literal, Pred, SqlType};
    use crate::shape::{Join, of};

    fn shaped(sql: &str) -> std::result::Result<crate::shape::Shape, String> {
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
    fn a_correlated_subquery_of_the_where_reads_its_rows_for_the_outer_rows() {
        let s = shaped(
            "SELECT * FROM orders o WHERE o.customer_id = $1 AND EXISTS \
             (SELECT 1 AS a FROM lines l WHERE l.order_id = o.id AND l.qty > $2 LIMIT 1)",
        )
        .unwrap();
        assert_eq!(
            s.sides[1].own_rows.as_deref(),
            Some(
                "SELECT pgcache_sub0.* FROM orders o, LATERAL (SELECT * FROM lines l \
                 WHERE l.order_id = o.id AND l.qty > $2) pgcache_sub0 WHERE o.customer_id = $1"
            )
        );
        // Its condition on the outer row may hold; its own binds.
        assert!(matches!(&s.sides[1].filter, Pred::And(parts)
            if matches!(parts[0], Pred::Unknown(_)) && !matches!(parts[1], Pred::Unknown(_))));
        // An outer side it names is named: no foreign key keeps that side's rows out.
        let s = shaped(
            "SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id WHERE EXISTS \
             (SELECT 1 FROM lines l WHERE l.note = u.name)",
        )
        .unwrap();
        assert!(s.sides[1].mentioned);
    }

    #[test]
    fn a_set_operation_has_a_side_per_branch() {
        let s = shaped(
            "SELECT id FROM posts WHERE author_id = $1 UNION ALL \
             SELECT id FROM posts WHERE author_id = $2 UNION SELECT id FROM drafts \
             ORDER BY id LIMIT 10",
        )
        .unwrap();
        assert_eq!(s.sides.len(), 3);
        assert!(s.sides.iter().all(|side| side.join == Join::Semi));
        assert_eq!(s.sides[2].own_rows.as_deref(), Some("SELECT * FROM drafts"));
        for sql in [
            "SELECT id FROM posts UNION SELECT post_id FROM a JOIN b ON a.id = b.id",
            "SELECT id FROM posts UNION SELECT id FROM drafts WHERE id IN (SELECT 1 FROM x)",
        ] {
            assert!(shaped(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn correlated_and_nested_subqueries_are_said() {
        for (sql, why) in [
            (
                "SELECT o.id, (SELECT count(*) FROM lines l WHERE l.order_id = o.id) \
                 FROM orders o WHERE o.id = $1",
                "outside the WHERE",
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
