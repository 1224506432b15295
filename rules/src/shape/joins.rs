//! A join's FROM and WHERE, read side by side: which relations it joins and how (a chain
//! of inner and left joins, or a comma list), which conditions bind one side's rows alone,
//! and which are equalities of two sides' columns (the join's edges, from which the
//! catalog's foreign keys may tell that a side's rows enter only with another's).
//!
//! A condition binds a side when every result row that holds one of its rows passed it:
//! a conjunct of the WHERE or of an inner join's ON binds the side it alone names, unless
//! a left join may NULL-extend that side (a row of it arriving may then remove a
//! NULL-extended row, whatever the condition says); a left join's ON binds only the side it
//! brings in. A conjunct whose columns pgcache cannot place (a column written without its
//! relation) binds nothing, and may name any side.

use super::Names;
use crate::predicate::Pred;
use pg_query::NodeEnum;
use pg_query::protobuf::{self, AExprKind, BoolExprType, JoinType, Node};
use serde_json::Value;

/// How a side comes into the join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// The first relation of FROM.
    Base,
    /// An inner or cross join (or a comma).
    Inner,
    /// The right side of a LEFT JOIN: NULL-extended where nothing matches.
    Left,
    /// The table of a subquery (`shape::subqueries`): its rows decide the result without
    /// being joined to it.
    Semi,
}

/// One relation a join reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// As written: `(schema, name)`, the schema empty when unwritten.
    pub relation: (String, String),
    /// The name the statement refers to it by (its alias, else its name).
    pub reference: String,
    /// The conditions every result row holding one of its rows passed (unbound).
    pub filter: Pred,
    /// Where it comes into the join: its position in FROM, and how.
    pub step: usize,
    pub join: Join,
    /// A condition other than an edge names it: its rows may matter for more than
    /// the edges' keys.
    pub mentioned: bool,
    /// A subquery's side: `SELECT * FROM <its table> WHERE <its WHERE>`, its members.
    pub own_rows: Option<String>,
    /// A subquery's columns written without their table: its table's, unless it has no
    /// such column (then the outer query's: the catalog tells).
    pub unqualified: Vec<String>,
}

/// `a.x = b.y` of two sides' columns, in the WHERE or in the ON of join step `on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub left: (usize, String),
    pub right: (usize, String),
    pub on: Option<usize>,
}

/// A relation of FROM with how it is joined.
struct Item<'a> {
    relation: &'a protobuf::RangeVar,
    join: Join,
    on: Option<&'a Node>,
}

/// What a join reads: its sides, its edges, and whether a conjunct names a column pgcache
/// could not place on a side.
pub struct Read {
    pub sides: Vec<Side>,
    pub edges: Vec<Edge>,
    pub unplaced: bool,
}

/// The join of FROM's items with the WHERE `where_clause`, or why it is not read.
pub fn read(from: &[Node], where_clause: Option<&Node>) -> Result<Read, String> {
    let mut items = Vec::new();
    for (i, node) in from.iter().enumerate() {
        let first = items.len();
        push(node, &mut items)?;
        // A comma is a cross join: the WHERE holds its conditions.
        if i > 0 {
            items[first].join = Join::Inner;
        }
    }
    let names: Vec<Names> = items
        .iter()
        .map(|item| Names {
            schema: &item.relation.schemaname,
            relation: &item.relation.relname,
            alias: item.relation.alias.as_ref().map(|a| a.aliasname.as_str()),
            alone: false,
        })
        .collect();
    let mut read = Read {
        sides: items
            .iter()
            .zip(&names)
            .enumerate()
            .map(|(step, (item, names))| Side {
                relation: (
                    item.relation.schemaname.clone(),
                    item.relation.relname.clone(),
                ),
                reference: names.alias.unwrap_or(names.relation).to_string(),
                filter: Pred::And(Vec::new()),
                step,
                join: item.join,
                mentioned: false,
                own_rows: None,
                unqualified: Vec::new(),
            })
            .collect(),
        edges: Vec::new(),
        unplaced: false,
    };
    if let Some((_, name)) = names.iter().enumerate().find(|(n, a)| {
        names[..*n]
            .iter()
            .any(|b| b.alias.unwrap_or(b.relation) == a.alias.unwrap_or(a.relation))
    }) {
        return Err(format!(
            "two tables named {} without an alias",
            name.alias.unwrap_or(name.relation)
        ));
    }
    let mut parts: Vec<Vec<Pred>> = vec![Vec::new(); items.len()];
    // A left join's right side named by a condition outside its ON: a row of it that the
    // ON matched but that condition filtered out is no member, yet leaving would bring a
    // NULL-extended row back (`WHERE o.id IS NULL`).
    let mut tested_outside: Option<usize> = None;
    let mut place = |conjunct: &Node, on: Option<usize>| {
        // A correlated subquery names outer sides too: their rows may change its answer.
        let in_subqueries = sides_in_subqueries(conjunct, &names);
        let Some(sides) = sides_named(conjunct, &names) else {
            read.unplaced = true;
            for (side, item) in items.iter().enumerate() {
                if item.join == Join::Left && on != Some(side) {
                    tested_outside.get_or_insert(side);
                }
            }
            return;
        };
        if in_subqueries.is_empty()
            && let Some(edge) = edge(conjunct, &names, on)
        {
            read.edges.push(edge);
            return;
        }
        // A condition of its side alone that no NULL-extended row passes is no test of
        // one (`WHERE o.total > 5`).
        let null_rejected = match (sides.as_slice(), in_subqueries.is_empty()) {
            ([side], true) => names[*side].condition(conjunct).rejects_null_rows(),
            _ => false,
        };
        for &side in sides.iter().chain(&in_subqueries) {
            read.sides[side].mentioned = true;
            if items[side].join == Join::Left && on != Some(side) && !null_rejected {
                tested_outside.get_or_insert(side);
            }
        }
        let [side] = sides.as_slice() else {
            return;
        };
        let nullable = items[*side].join == Join::Left;
        let binds = match on {
            None => !nullable,
            Some(step) if items[step].join == Join::Left => *side == step,
            Some(_) => !nullable,
        };
        if binds {
            parts[*side].push(names[*side].condition(conjunct));
        }
    };
    for (step, item) in items.iter().enumerate() {
        if let Some(on) = item.on {
            for conjunct in conjuncts(on) {
                place(conjunct, Some(step));
            }
        }
    }
    if let Some(where_clause) = where_clause {
        for conjunct in conjuncts(where_clause) {
            place(conjunct, None);
        }
    }
    if let Some(side) = tested_outside {
        return Err(format!(
            "a condition on {}, the right side of a LEFT JOIN, outside its ON (as \
             `WHERE {0}.id IS NULL`)",
            read.sides[side].reference
        ));
    }
    for (side, parts) in read.sides.iter_mut().zip(parts) {
        side.filter = Pred::And(parts);
    }
    Ok(read)
}

/// Adds the relations of a FROM item, left to right.
fn push<'a>(node: &'a Node, items: &mut Vec<Item<'a>>) -> Result<(), String> {
    match node.node.as_ref() {
        Some(NodeEnum::RangeVar(relation)) => {
            items.push(Item {
                relation: plain(relation)?,
                join: Join::Base,
                on: None,
            });
            Ok(())
        }
        Some(NodeEnum::JoinExpr(join)) => {
            if join.is_natural || !join.using_clause.is_empty() {
                return Err("a join with USING or NATURAL".into());
            }
            if join.alias.is_some() {
                return Err("a join with an alias of its own".into());
            }
            let how = match JoinType::try_from(join.jointype) {
                Ok(JoinType::JoinInner) => Join::Inner,
                Ok(JoinType::JoinLeft) => Join::Left,
                _ => return Err("a RIGHT or FULL join".into()),
            };
            push(
                join.larg.as_deref().ok_or("a join without its left side")?,
                items,
            )?;
            let Some(NodeEnum::RangeVar(relation)) =
                join.rarg.as_deref().and_then(|r| r.node.as_ref())
            else {
                return Err(
                    "a join whose right side is not a table (a join in parentheses, \
                            a subquery or a function)"
                        .into(),
                );
            };
            items.push(Item {
                relation: plain(relation)?,
                join: how,
                on: join.quals.as_deref(),
            });
            Ok(())
        }
        _ => Err("a FROM item that is not a table (a subquery, a function or VALUES)".into()),
    }
}

fn plain(relation: &protobuf::RangeVar) -> Result<&protobuf::RangeVar, String> {
    if !relation.inh {
        return Err("ONLY".into());
    }
    if relation
        .alias
        .as_ref()
        .is_some_and(|a| !a.colnames.is_empty())
    {
        return Err("an alias that renames columns".into());
    }
    Ok(relation)
}

/// The conjuncts of a condition: its top-level ANDs, flattened.
fn conjuncts(node: &Node) -> Vec<&Node> {
    match node.node.as_ref() {
        Some(NodeEnum::BoolExpr(b)) if b.boolop == BoolExprType::AndExpr as i32 => {
            b.args.iter().flat_map(conjuncts).collect()
        }
        _ => vec![node],
    }
}

/// The sides whose columns `node` names (None: a column pgcache cannot place).
fn sides_named(node: &Node, names: &[Names]) -> Option<Vec<usize>> {
    let mut sides = Vec::new();
    let tree = serde_json::to_value(node).ok()?;
    for fields in column_refs(&tree) {
        let side = side_of(&fields?, names)?;
        if !sides.contains(&side) {
            sides.push(side);
        }
    }
    Some(sides)
}

/// The sides whose columns the subqueries in `node` name (their own tables' columns name
/// none).
fn sides_in_subqueries(node: &Node, names: &[Names]) -> Vec<usize> {
    fn walk(value: &Value, inside: bool, out: &mut Vec<Vec<String>>) {
        match value {
            Value::Object(fields) => {
                for (name, inner) in fields {
                    match name.as_str() {
                        "ColumnRef" if inside => out.extend(column_fields(inner)),
                        "SubLink" => walk(inner, true, out),
                        _ => walk(inner, inside, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, inside, out)),
            _ => {}
        }
    }
    let mut fields = Vec::new();
    if let Ok(tree) = serde_json::to_value(node) {
        walk(&tree, false, &mut fields);
    }
    let mut sides: Vec<usize> = fields.iter().filter_map(|f| side_of(f, names)).collect();
    sides.sort_unstable();
    sides.dedup();
    sides
}

/// The fields of every column reference in a serialized tree, outside its subqueries
/// (None: a field that is neither a name nor `*`).
pub(super) fn column_refs(tree: &Value) -> Vec<Option<Vec<String>>> {
    fn walk(value: &Value, out: &mut Vec<Option<Vec<String>>>) {
        match value {
            Value::Object(fields) => {
                for (name, inner) in fields {
                    match name.as_str() {
                        "ColumnRef" => out.push(column_fields(inner)),
                        // A subquery's columns are its own (`subqueries` refuses one that
                        // names the outer query's); what it is compared with is not.
                        "SubLink" => {
                            if let Some(test) = inner.get("testexpr") {
                                walk(test, out);
                            }
                        }
                        _ => walk(inner, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut out);
    out
}

fn column_fields(column_ref: &Value) -> Option<Vec<String>> {
    column_ref
        .get("fields")?
        .as_array()?
        .iter()
        .map(|field| {
            let node = field.get("node")?;
            if node.get("A_Star").is_some() || node.get("AStar").is_some() {
                return Some("*".to_string());
            }
            Some(node.get("String")?.get("sval")?.as_str()?.to_string())
        })
        .collect()
}

/// The side a column reference's fields name: `t.c` or `s.t.c` (`t.*` too); an
/// unqualified column could be any side's.
fn side_of<S: AsRef<str>>(fields: &[S], names: &[Names]) -> Option<usize> {
    let qualifiers = fields.split_last()?.1;
    let mut found = names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.named_by(qualifiers));
    match (found.next(), found.next()) {
        (Some((side, _)), None) => Some(side),
        _ => None,
    }
}

/// `a.x = b.y` of two sides' columns, as an edge.
fn edge(node: &Node, names: &[Names], on: Option<usize>) -> Option<Edge> {
    let Some(NodeEnum::AExpr(expr)) = node.node.as_ref() else {
        return None;
    };
    if expr.kind != AExprKind::AexprOp as i32 || super::operator(&expr.name)? != "=" {
        return None;
    }
    let column = |node: &Node| -> Option<(usize, String)> {
        let Some(NodeEnum::ColumnRef(c)) = node.node.as_ref() else {
            return None;
        };
        let fields = super::fields_of(c)?;
        let side = side_of(&fields, names)?;
        Some((side, fields.last()?.to_string()))
    };
    let left = column(expr.lexpr.as_deref()?)?;
    let right = column(expr.rexpr.as_deref()?)?;
    (left.0 != right.0).then_some(Edge { left, right, on })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predicate::{Cmp, Expr};

    fn read_sql(sql: &str) -> Result<Read, String> {
        let tree = pg_query::parse(sql).unwrap().protobuf;
        let Some(NodeEnum::SelectStmt(select)) = tree.stmts[0].stmt.as_ref().unwrap().node.as_ref()
        else {
            panic!("a SELECT");
        };
        read(&select.from_clause, select.where_clause.as_deref())
    }

    fn eq_param(column: &str, n: usize) -> Pred {
        Pred::Compare {
            op: Cmp::Eq,
            left: Expr::Column(column.into()),
            right: Expr::Param(n),
            ty: crate::predicate::SqlType::Unresolved,
        }
    }

    #[test]
    fn each_side_is_bound_by_the_conditions_that_name_it_alone() {
        let r = read_sql(
            "SELECT * FROM orders o JOIN customers c ON o.customer_id = c.id AND c.region = $2 \
             LEFT JOIN products p ON p.id = o.product_id AND p.active = $3 \
             WHERE o.status = $1 AND p.price = $4 AND o.total > c.credit",
        )
        .unwrap();
        let joins: Vec<Join> = r.sides.iter().map(|s| s.join).collect();
        assert_eq!(joins, [Join::Base, Join::Inner, Join::Left]);
        assert_eq!(r.sides[0].filter, Pred::And(vec![eq_param("status", 1)]));
        assert_eq!(r.sides[1].filter, Pred::And(vec![eq_param("region", 2)]));
        // A left join's nullable side: its ON alone (not the WHERE's p.price).
        assert_eq!(r.sides[2].filter, Pred::And(vec![eq_param("active", 3)]));
        assert!(r.sides.iter().all(|s| s.mentioned));
        assert_eq!(
            r.edges,
            [
                Edge {
                    left: (0, "customer_id".into()),
                    right: (1, "id".into()),
                    on: Some(1)
                },
                Edge {
                    left: (2, "id".into()),
                    right: (0, "product_id".into()),
                    on: Some(2)
                },
            ]
        );
        assert!(!r.unplaced);
        assert_eq!(r.sides[2].reference, "p");
    }

    #[test]
    fn a_left_joins_on_does_not_bind_its_preserved_side_and_commas_are_inner() {
        let r = read_sql(
            "SELECT * FROM shop.customers LEFT JOIN shop.orders \
             ON orders.customer_id = customers.id AND customers.region = $1, products \
             WHERE shop.customers.id = $2 AND products.id = orders.product_id",
        )
        .unwrap();
        assert_eq!(r.sides[0].filter, Pred::And(vec![eq_param("id", 2)]));
        assert!(r.sides[0].mentioned);
        assert!(!r.sides[1].mentioned, "named by edges only");
        assert_eq!(r.sides[2].join, Join::Inner);
        assert_eq!(r.edges.len(), 2);
        assert_eq!(r.edges[1].on, None);
        // The WHERE may test a left join's right side with what no NULL passes.
        for condition in [
            "b.total > 5",
            "b.x IS NOT NULL",
            "b.k IN (1, 2) AND a.k = 3",
        ] {
            let sql = format!("SELECT * FROM a LEFT JOIN b ON b.a_id = a.id WHERE {condition}");
            assert!(read_sql(&sql).is_ok(), "{sql}");
        }
        for condition in [
            "b.x IS NOT TRUE",
            "b.x IS NULL OR b.y = 1",
            "coalesce(b.x, 0) = 0",
        ] {
            let sql = format!("SELECT * FROM a LEFT JOIN b ON b.a_id = a.id WHERE {condition}");
            assert!(read_sql(&sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn unqualified_columns_and_joins_not_read_are_said() {
        let r = read_sql("SELECT * FROM a JOIN b ON a.id = b.a_id WHERE x = $1").unwrap();
        assert!(r.unplaced);
        assert_eq!(r.sides[0].filter, Pred::And(vec![]));
        for (sql, why) in [
            ("SELECT * FROM a RIGHT JOIN b ON a.id = b.id", "RIGHT"),
            ("SELECT * FROM a JOIN b USING (id)", "USING"),
            (
                "SELECT * FROM a JOIN (b JOIN c ON b.id = c.id) ON a.id = b.id",
                "parentheses",
            ),
            ("SELECT * FROM a, (SELECT 1) s", "subquery"),
            ("SELECT * FROM a JOIN ONLY b ON a.id = b.id", "ONLY"),
            (
                "SELECT * FROM s1.t JOIN s2.t ON s2.t.r = s1.t.id",
                "without an alias",
            ),
            (
                "SELECT * FROM a LEFT JOIN b ON b.a_id = a.id WHERE b.id IS NULL",
                "outside its ON",
            ),
            (
                "SELECT * FROM a LEFT JOIN b ON b.a_id = a.id JOIN c ON c.k = a.k OR b.k = 1",
                "outside its ON",
            ),
            (
                "SELECT * FROM a LEFT JOIN b ON b.a_id = a.id \
                 WHERE EXISTS (SELECT 1 FROM c WHERE c.k = b.k)",
                "outside its ON",
            ),
        ] {
            let e = read_sql(sql).err().unwrap();
            assert!(e.contains(why), "{sql}: {e}");
        }
    }
}
