//! Whether a statement's results can be dropped row by row, from the grammar alone: one
//! table in FROM (no join, no subquery, no set operation, no CTE, no GROUP BY, HAVING or
//! window), and a WHERE that is a conjunction of `column = $n | constant` and
//! `column IN ($n | constant, ...)`. Projection, DISTINCT, ORDER BY and LIMIT are free: the
//! rows such a result is built from are exactly the table's rows the WHERE admits, so a
//! change can affect the result only if the changed row matches the WHERE now (its new
//! values: a row entering) or matched it when the result was built (a member: a row
//! leaving or changing inside it). What the grammar cannot tell (that the relation is a
//! plain table with a primary key, that no aggregate hides behind a function name, which
//! column types compare exactly by their text) the catalog tells (`precision`).

use crate::error::{Error, Result};
use pg_query::NodeEnum;
use pg_query::protobuf::{self, AExprKind, BoolExprType, Node, SelectStmt, SetOperation, a_const};
use serde_json::Value;

/// A statement's row shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The relation in FROM, as written: `(schema, name)`, the schema empty when unwritten.
    pub relation: (String, String),
    /// The WHERE's conditions, one per conjunct.
    pub conditions: Vec<Condition>,
    /// `SELECT * FROM <the FROM> WHERE <the WHERE>`, with the statement's `$n`: the rows its
    /// result is built from, whatever its projection, order and limit.
    pub candidates_sql: String,
}

/// `column = operand` or `column IN (operand, ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub column: String,
    pub operands: Vec<Operand>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// `$n`.
    Param(usize),
    /// A constant, as its text.
    Const(String),
}

/// The row shape of `tree` (one SELECT), if it has one.
pub fn of(tree: &protobuf::ParseResult) -> Result<Option<Shape>> {
    let Some(NodeEnum::SelectStmt(select)) = tree
        .stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|n| n.node.as_ref())
    else {
        return Ok(None);
    };
    let Some(relation) = single_table(select) else {
        return Ok(None);
    };
    let Some(where_clause) = select.where_clause.as_deref() else {
        // Every row of the table is a member: per table is as exact, and cheaper.
        return Ok(None);
    };
    let alias = relation.alias.as_ref().map(|a| a.aliasname.as_str());
    let mut conditions = Vec::new();
    for conjunct in conjuncts(where_clause) {
        match condition(conjunct, &relation.relname, alias) {
            Some(c) => conditions.push(c),
            None => return Ok(None),
        }
    }
    Ok(Some(Shape {
        relation: (relation.schemaname.clone(), relation.relname.clone()),
        conditions,
        candidates_sql: candidates_sql(tree, select)?,
    }))
}

/// The FROM's one plain relation, when the statement has nothing that mixes rows: no
/// join, subquery, set operation, CTE, grouping or window.
fn single_table(select: &SelectStmt) -> Option<&protobuf::RangeVar> {
    let plain = select.op == SetOperation::SetopNone as i32
        && select.with_clause.is_none()
        && select.group_clause.is_empty()
        && select.having_clause.is_none()
        && select.window_clause.is_empty()
        && select.values_lists.is_empty()
        && select.from_clause.len() == 1;
    if !plain || has_sublink_or_window(select) {
        return None;
    }
    match select.from_clause[0].node.as_ref()? {
        // Columns renamed by the alias would not be found by their names.
        NodeEnum::RangeVar(relation)
            if relation.inh
                && relation
                    .alias
                    .as_ref()
                    .is_none_or(|a| a.colnames.is_empty()) =>
        {
            Some(relation)
        }
        _ => None,
    }
}

/// Whether a subquery or a window function sits anywhere in the statement.
fn has_sublink_or_window(select: &SelectStmt) -> bool {
    fn walk(value: &Value) -> bool {
        match value {
            Value::Object(fields) => fields.iter().any(|(name, inner)| {
                name == "SubLink" || (name == "over" && !inner.is_null()) || walk(inner)
            }),
            Value::Array(items) => items.iter().any(walk),
            _ => false,
        }
    }
    serde_json::to_value(select).map_or(true, |tree| walk(&tree))
}

/// The conjuncts of an AND (nested ANDs flattened), or the expression itself.
fn conjuncts(node: &Node) -> Vec<&Node> {
    match node.node.as_ref() {
        Some(NodeEnum::BoolExpr(b)) if b.boolop == BoolExprType::AndExpr as i32 => {
            b.args.iter().flat_map(conjuncts).collect()
        }
        _ => vec![node],
    }
}

/// `column = operand`, `operand = column` or `column IN (operands)` of the relation.
fn condition(node: &Node, relname: &str, alias: Option<&str>) -> Option<Condition> {
    let Some(NodeEnum::AExpr(expr)) = node.node.as_ref() else {
        return None;
    };
    if operator(&expr.name)? != "=" {
        return None;
    }
    let (left, right) = (expr.lexpr.as_deref()?, expr.rexpr.as_deref()?);
    if expr.kind == AExprKind::AexprOp as i32 {
        let (column, other) = match column_of(left, relname, alias) {
            Some(column) => (column, right),
            None => (column_of(right, relname, alias)?, left),
        };
        return Some(Condition {
            column,
            operands: vec![operand(other)?],
        });
    }
    if expr.kind == AExprKind::AexprIn as i32 {
        let Some(NodeEnum::List(list)) = right.node.as_ref() else {
            return None;
        };
        return Some(Condition {
            column: column_of(left, relname, alias)?,
            operands: list.items.iter().map(operand).collect::<Option<_>>()?,
        });
    }
    None
}

/// An operator's name: unqualified, or in `pg_catalog` (`OPERATOR(pg_catalog.=)`); one of
/// another schema may be any function.
fn operator(name: &[Node]) -> Option<&str> {
    fn text(node: &Node) -> Option<&str> {
        match node.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.as_str()),
            _ => None,
        }
    }
    match name {
        [op] => text(op),
        [schema, op] if text(schema)? == "pg_catalog" => text(op),
        _ => None,
    }
}

/// The column a reference names, if it is a column of the relation (`c`, `t.c`, `alias.c`).
fn column_of(node: &Node, relname: &str, alias: Option<&str>) -> Option<String> {
    let Some(NodeEnum::ColumnRef(column)) = node.node.as_ref() else {
        return None;
    };
    let names: Vec<&str> = column
        .fields
        .iter()
        .map(|f| match f.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match names.as_slice() {
        [name] => Some(name.to_string()),
        [qualifier, name] if Some(*qualifier) == alias.or(Some(relname)) => Some(name.to_string()),
        _ => None,
    }
}

fn operand(node: &Node) -> Option<Operand> {
    match node.node.as_ref()? {
        NodeEnum::ParamRef(p) => Some(Operand::Param(usize::try_from(p.number).ok()?)),
        NodeEnum::AConst(c) if !c.isnull => Some(Operand::Const(match c.val.as_ref()? {
            a_const::Val::Ival(i) => i.ival.to_string(),
            a_const::Val::Fval(f) => f.fval.clone(),
            a_const::Val::Boolval(b) => b.boolval.to_string(),
            a_const::Val::Sval(s) => s.sval.clone(),
            a_const::Val::Bsval(_) => return None,
        })),
        _ => None,
    }
}

/// The statement with its projection made `*` and its DISTINCT, ORDER BY and LIMIT gone.
fn candidates_sql(tree: &protobuf::ParseResult, select: &SelectStmt) -> Result<String> {
    let star = pg_query::parse("SELECT * FROM t")
        .ok()
        .and_then(
            |t| match t.protobuf.stmts[0].stmt.as_ref()?.node.as_ref()? {
                NodeEnum::SelectStmt(s) => Some(s.target_list.clone()),
                _ => None,
            },
        )
        .ok_or_else(|| Error::internal("spelling SELECT *"))?;
    let mut candidates = select.clone();
    candidates.target_list = star;
    candidates.distinct_clause.clear();
    candidates.sort_clause.clear();
    candidates.limit_count = None;
    candidates.limit_offset = None;
    let mut tree = tree.clone();
    tree.stmts.truncate(1);
    if let Some(stmt) = tree.stmts[0].stmt.as_mut() {
        stmt.node = Some(NodeEnum::SelectStmt(Box::new(candidates)));
    }
    tree.deparse()
        .map_err(|e| Error::internal(format!("spelling the statement's rows: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str) -> Option<Shape> {
        of(&pg_query::parse(sql).unwrap().protobuf).unwrap()
    }

    fn param(n: usize) -> Operand {
        Operand::Param(n)
    }

    fn constant(s: &str) -> Operand {
        Operand::Const(s.into())
    }

    #[test]
    fn equalities_and_in_lists_of_one_table_have_a_row_shape() {
        let s = shape(
            "SELECT id, total FROM orders o WHERE o.customer_id = $1 AND 'open' = status \
             AND region IN ($2, 3) ORDER BY created_at DESC LIMIT 20",
        )
        .unwrap();
        assert_eq!(s.relation, (String::new(), "orders".into()));
        assert_eq!(
            s.conditions,
            vec![
                Condition {
                    column: "customer_id".into(),
                    operands: vec![param(1)]
                },
                Condition {
                    column: "status".into(),
                    operands: vec![constant("open")]
                },
                Condition {
                    column: "region".into(),
                    operands: vec![param(2), constant("3")]
                },
            ]
        );
        assert_eq!(
            s.candidates_sql,
            "SELECT * FROM orders o WHERE o.customer_id = $1 AND 'open' = status \
             AND region IN ($2, 3)"
        );
        let s = shape("SELECT DISTINCT email FROM public.users WHERE users.id = $1").unwrap();
        assert_eq!(s.relation, ("public".into(), "users".into()));
        assert_eq!(
            s.candidates_sql,
            "SELECT * FROM public.users WHERE users.id = $1"
        );
    }

    #[test]
    fn every_other_shape_has_none() {
        for sql in [
            "SELECT * FROM orders",
            "SELECT * FROM orders WHERE customer_id > $1",
            "SELECT * FROM orders WHERE customer_id = $1 OR status = $2",
            "SELECT * FROM orders WHERE NOT customer_id = $1",
            "SELECT * FROM orders WHERE customer_id <> $1",
            "SELECT * FROM orders WHERE customer_id NOT IN ($1)",
            "SELECT * FROM orders WHERE customer_id = $1::int",
            "SELECT * FROM orders WHERE customer_id = ANY($1)",
            "SELECT * FROM orders WHERE customer_id = total",
            "SELECT * FROM orders WHERE customer_id = NULL",
            "SELECT * FROM orders WHERE lower(status) = $1",
            "SELECT * FROM orders WHERE other.customer_id = $1",
            "SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = $1",
            "SELECT * FROM orders, users WHERE orders.id = $1",
            "SELECT * FROM ONLY orders WHERE id = $1",
            "SELECT * FROM orders AS o (a, b) WHERE a = $1",
            "SELECT * FROM orders WHERE id OPERATOR(public.=) $1",
            "SELECT * FROM (SELECT * FROM orders) s WHERE id = $1",
            "SELECT status, count(*) FROM orders WHERE customer_id = $1 GROUP BY status",
            "SELECT * FROM orders WHERE id = $1 UNION SELECT * FROM orders WHERE id = $2",
            "WITH o AS (SELECT * FROM orders) SELECT * FROM o WHERE id = $1",
            "SELECT *, (SELECT 1) FROM orders WHERE id = $1",
            "SELECT * FROM orders WHERE id = $1 AND EXISTS (SELECT 1 FROM users)",
            "SELECT id, rank() OVER (ORDER BY total) FROM orders WHERE customer_id = $1",
            "SELECT 1",
        ] {
            assert_eq!(shape(sql), None, "{sql}");
        }
    }
}
