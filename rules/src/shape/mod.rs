//! Whether a statement's results can be dropped row by row, from the grammar alone: one
//! table in FROM, or a join of tables (`joins`), with no subquery, set operation or CTE,
//! and a WHERE, read as a condition on each table's row (`predicate`). Projection, aggregates, GROUP BY, HAVING,
//! windows, DISTINCT, ORDER BY and LIMIT are free: the rows such a result is computed from
//! are exactly the table's rows the WHERE admits, so a change can affect the result only if
//! the changed row may satisfy the WHERE now (its new values: a row entering) or did when
//! the result was built (a member: a row leaving or changing inside it). A piece of the
//! WHERE not read here is a condition any row may satisfy. What the grammar cannot tell
//! (that the relation is a plain table with a primary key, that the functions called are
//! PostgreSQL's own, the columns' types and collations) the catalog tells (`precision`).

use crate::predicate::{BoolTest, Cmp, Expr, Keys, Literal, Pred};
use crate::quote_ident;
use crate::{Error, Result};
use pg_query::NodeEnum;
use pg_query::protobuf::{
    self, AExprKind, BoolExprType, BoolTestType, LimitOption, Node, NullTestType, SelectStmt,
    SetOperation, SortByDir, SortByNulls, a_const,
};
use serde_json::Value;

mod joins;
mod subqueries;

pub use joins::{Edge, Join, Side};

/// A statement's row shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// The relations it reads, in FROM's order, each with the conditions that bind its
    /// rows (one for a statement over one table, its WHERE).
    pub sides: Vec<Side>,
    /// A join's equalities of two sides' columns.
    pub edges: Vec<Edge>,
    /// A join's condition names a column pgcache could not place on a side.
    pub unplaced: bool,
    /// `SELECT * FROM <the FROM> WHERE <the WHERE>`, with the statement's `$n`: the rows its
    /// result is built from, whatever its projection, order and limit.
    pub candidates_sql: String,
    /// Its ORDER BY ... LIMIT, when it is a page of one table's rows.
    pub page: Option<Page>,
}

/// A statement's shape, or why it has none.
pub type Shaped = std::result::Result<Shape, String>;

/// A page of a table's rows: `ORDER BY` columns, `LIMIT` and `OFFSET` of a constant or a
/// parameter, with no DISTINCT, grouping or window (and, as the catalog tells, no
/// aggregate): its rows are the first `offset + limit` the WHERE admits, in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// `(column, DESC, NULLS FIRST)`, in order.
    pub keys: Vec<(String, bool, bool)>,
    pub limit: Count,
    pub offset: Option<Count>,
    /// `candidates_sql` with the statement's ORDER BY.
    pub ordered_sql: String,
}

/// A LIMIT or OFFSET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    /// `$n`.
    Param(usize),
    Const(i64),
}

impl Count {
    /// Its value for parameters `params` (None: not a count, as `LIMIT NULL`).
    pub fn value(&self, params: &[String]) -> Option<u64> {
        match self {
            Count::Const(n) => u64::try_from(*n).ok(),
            Count::Param(n) => params.get(n.checked_sub(1)?)?.trim().parse().ok(),
        }
    }

    /// As SQL, with `$n` for a parameter.
    pub fn sql(&self) -> String {
        match self {
            Count::Const(n) => n.to_string(),
            Count::Param(n) => format!("${n}"),
        }
    }
}

/// The row shape of `tree` (one SELECT), or why it has none.
pub fn of(tree: &protobuf::ParseResult) -> Result<Shaped> {
    let Some(NodeEnum::SelectStmt(select)) = tree
        .stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|n| n.node.as_ref())
    else {
        return Ok(Err("it is not a SELECT".into()));
    };
    if select.op != SetOperation::SetopNone as i32 && select.with_clause.is_none() {
        return Ok(subqueries::set_operation(tree, select)?.map(|sides| Shape {
            sides,
            edges: Vec::new(),
            unplaced: false,
            candidates_sql: String::new(),
            page: None,
        }));
    }
    if let Some(why) = not_plain(select) {
        return Ok(Err(why.into()));
    }
    let (sides, edges, unplaced, page) = match one_table(select) {
        Some(relation) => {
            let names = Names {
                schema: &relation.schemaname,
                relation: &relation.relname,
                alias: relation.alias.as_ref().map(|a| a.aliasname.as_str()),
                alone: true,
            };
            let page = names.page(select);
            let filter = match select.where_clause.as_deref() {
                Some(where_clause) => names.condition(where_clause),
                // A page of the whole table: rows after its last one cannot enter it.
                None if page.is_some() => Pred::And(Vec::new()),
                // Every row of the table is a member: per table is as exact, and cheaper.
                None => {
                    return Ok(Err(
                        "it has no WHERE and is not a page of the table's rows \
                                   (ORDER BY columns with a LIMIT): any change may change it"
                            .into(),
                    ));
                }
            };
            let side = Side {
                relation: (relation.schemaname.clone(), relation.relname.clone()),
                reference: names.alias.unwrap_or(names.relation).to_string(),
                mentioned: filter != Pred::And(Vec::new()),
                filter,
                step: 0,
                join: Join::Base,
                own_rows: None,
                unqualified: Vec::new(),
            };
            (vec![side], Vec::new(), false, page)
        }
        None if select.from_clause.is_empty() => return Ok(Err("it reads no table".into())),
        None => match joins::read(&select.from_clause, select.where_clause.as_deref()) {
            Ok(read) => (read.sides, read.edges, read.unplaced, None),
            Err(why) => return Ok(Err(format!("it reads {why}"))),
        },
    };
    let mut sides = sides;
    match subqueries::sides(tree, select, sides.len())? {
        Ok(more) => sides.extend(more),
        Err(why) => return Ok(Err(format!("it has {why}"))),
    }
    Ok(Ok(Shape {
        sides,
        edges,
        unplaced,
        candidates_sql: rows_sql(tree, select, false)?,
        page: match page {
            Some((keys, limit, offset)) => Some(Page {
                keys,
                limit,
                offset,
                ordered_sql: rows_sql(tree, select, true)?,
            }),
            None => None,
        },
    }))
}

/// Why the statement reads more than its FROM's rows and its subqueries' (None: it does
/// not): a set operation, a CTE or VALUES.
fn not_plain(select: &SelectStmt) -> Option<&'static str> {
    if select.op != SetOperation::SetopNone as i32 {
        Some("it is a set operation (UNION, INTERSECT or EXCEPT)")
    } else if select.with_clause.is_some() {
        Some("it has a WITH query")
    } else if !select.values_lists.is_empty() {
        Some("it is a VALUES list")
    } else {
        None
    }
}

/// The FROM's one plain relation, when it has no other.
fn one_table(select: &SelectStmt) -> Option<&protobuf::RangeVar> {
    let [only] = select.from_clause.as_slice() else {
        return None;
    };
    match only.node.as_ref()? {
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

/// Whether a function is called anywhere in `nodes`.
fn calls_a_function(nodes: &[Node]) -> bool {
    nodes.iter().any(|node| {
        serde_json::to_value(node).map_or(true, |tree| count_nodes(&tree, "FuncCall") > 0)
    })
}

/// Whether a subquery sits anywhere in the statement.
fn has_sublink(select: &SelectStmt) -> bool {
    serde_json::to_value(select).map_or(true, |tree| count_nodes(&tree, "SubLink") > 0)
}

/// How many nodes of type `name` (`SubLink`, `FuncCall`) a serialized tree holds, at any
/// depth.
fn count_nodes(value: &Value, name: &str) -> usize {
    match value {
        Value::Object(fields) => fields
            .iter()
            .map(|(field, inner)| usize::from(field == name) + count_nodes(inner, name))
            .sum(),
        Value::Array(items) => items.iter().map(|item| count_nodes(item, name)).sum(),
        _ => 0,
    }
}

/// How the one relation is named, to read its columns however they are qualified.
struct Names<'a> {
    schema: &'a str,
    relation: &'a str,
    alias: Option<&'a str>,
    /// The only relation in scope: a column written without its relation is its.
    alone: bool,
}

fn unknown(why: impl Into<String>) -> Pred {
    Pred::Unknown(why.into())
}

/// A page's sort keys, LIMIT and OFFSET.
type PageParts = (Vec<(String, bool, bool)>, Count, Option<Count>);

impl Names<'_> {
    /// The statement's ORDER BY, LIMIT and OFFSET, when its rows are a page of the table's.
    fn page(&self, select: &SelectStmt) -> Option<PageParts> {
        let plain = select.distinct_clause.is_empty()
            && select.group_clause.is_empty()
            && select.having_clause.is_none()
            && select.window_clause.is_empty()
            && !select.sort_clause.is_empty()
            && select.limit_option != LimitOption::WithTies as i32
            // A set-returning function in the projection could make a row yield no output
            // row, moving the page's rows past `offset + limit` of the table's.
            && !calls_a_function(&select.target_list);
        if !plain {
            return None;
        }
        fn count(node: &Node) -> Option<Count> {
            match node.node.as_ref()? {
                NodeEnum::ParamRef(p) => Some(Count::Param(usize::try_from(p.number).ok()?)),
                NodeEnum::AConst(c) if !c.isnull => match c.val.as_ref()? {
                    a_const::Val::Ival(i) => Some(Count::Const(i.ival.into())),
                    _ => None,
                },
                // `$1::INTEGER`, as SQLAlchemy binds a LIMIT.
                NodeEnum::TypeCast(cast)
                    if type_name(cast.type_name.as_ref()?).is_some_and(|t| {
                        matches!(t.as_str(), "smallint" | "integer" | "bigint")
                    }) =>
                {
                    count(cast.arg.as_deref()?)
                }
                _ => None,
            }
        }
        let limit = count(select.limit_count.as_deref()?)?;
        let offset = match select.limit_offset.as_deref() {
            Some(node) => Some(count(node)?),
            None => None,
        };
        let keys = select
            .sort_clause
            .iter()
            .map(|node| {
                let Some(NodeEnum::SortBy(by)) = node.node.as_ref() else {
                    return None;
                };
                let Some(NodeEnum::ColumnRef(column)) = by.node.as_deref()?.node.as_ref() else {
                    return None;
                };
                let descending = match SortByDir::try_from(by.sortby_dir).ok()? {
                    SortByDir::SortbyDefault | SortByDir::SortbyAsc => false,
                    SortByDir::SortbyDesc => true,
                    _ => return None,
                };
                let nulls_first = match SortByNulls::try_from(by.sortby_nulls).ok()? {
                    SortByNulls::SortbyNullsDefault => descending,
                    SortByNulls::SortbyNullsFirst => true,
                    SortByNulls::SortbyNullsLast => false,
                    SortByNulls::Undefined => return None,
                };
                Some((self.column(column)?, descending, nulls_first))
            })
            .collect::<Option<Vec<_>>>()?;
        // ORDER BY a name sorts by the output column of that name first: one renamed to a
        // sort key's name (`SELECT total AS id ... ORDER BY id`) is not the table's column.
        let renamed_over_a_key = select.target_list.iter().any(|target| {
            let Some(NodeEnum::ResTarget(t)) = target.node.as_ref() else {
                return true;
            };
            let same_column = || match t.val.as_deref().and_then(|v| v.node.as_ref()) {
                Some(NodeEnum::ColumnRef(c)) => self.column(c).as_deref() == Some(t.name.as_str()),
                _ => false,
            };
            !t.name.is_empty() && keys.iter().any(|(k, ..)| *k == t.name) && !same_column()
        });
        if renamed_over_a_key {
            return None;
        }
        Some((keys, limit, offset))
    }

    /// A boolean expression as a condition.
    fn condition(&self, node: &Node) -> Pred {
        let Some(inner) = node.node.as_ref() else {
            return unknown("an empty expression");
        };
        match inner {
            NodeEnum::BoolExpr(b) => {
                let args: Vec<Pred> = b.args.iter().map(|a| self.condition(a)).collect();
                match BoolExprType::try_from(b.boolop) {
                    Ok(BoolExprType::AndExpr) => Pred::And(args),
                    Ok(BoolExprType::OrExpr) => Pred::Or(args),
                    Ok(BoolExprType::NotExpr) if args.len() == 1 => Pred::Not(Box::new(
                        args.into_iter().next().unwrap_or(Pred::And(vec![])),
                    )),
                    _ => unknown("a boolean expression"),
                }
            }
            NodeEnum::AExpr(expr) => self.operation(expr),
            NodeEnum::NullTest(test) => {
                let Some(arg) = test.arg.as_deref().and_then(|a| self.expr(a)) else {
                    return unknown("IS NULL of an expression pgcache does not read");
                };
                match NullTestType::try_from(test.nulltesttype) {
                    Ok(NullTestType::IsNull) => Pred::IsNull(arg),
                    Ok(NullTestType::IsNotNull) => Pred::Not(Box::new(Pred::IsNull(arg))),
                    _ => unknown("a null test"),
                }
            }
            NodeEnum::BooleanTest(test) => {
                let Some(arg) = test.arg.as_deref() else {
                    return unknown("a boolean test");
                };
                let kind = match BoolTestType::try_from(test.booltesttype) {
                    Ok(BoolTestType::IsTrue) => BoolTest::True,
                    Ok(BoolTestType::IsNotTrue) => BoolTest::NotTrue,
                    Ok(BoolTestType::IsFalse) => BoolTest::False,
                    Ok(BoolTestType::IsNotFalse) => BoolTest::NotFalse,
                    Ok(BoolTestType::IsUnknown) => BoolTest::Unknown,
                    Ok(BoolTestType::IsNotUnknown) => BoolTest::NotUnknown,
                    _ => return unknown("a boolean test"),
                };
                Pred::Test(Box::new(self.condition(arg)), kind)
            }
            NodeEnum::ColumnRef(_) => match self.expr(node) {
                Some(column) => Pred::Boolean(column),
                None => unknown("a reference pgcache does not read as a column"),
            },
            NodeEnum::CollateClause(_) => unknown("a COLLATE clause"),
            NodeEnum::FuncCall(f) => unknown(format!("a call of {}", dotted(&f.funcname))),
            _ => unknown("an expression pgcache does not evaluate"),
        }
    }

    fn operation(&self, expr: &protobuf::AExpr) -> Pred {
        let Some(op) = operator(&expr.name) else {
            return unknown(format!("the operator {}", dotted(&expr.name)));
        };
        let kind = AExprKind::try_from(expr.kind).unwrap_or(AExprKind::Undefined);
        let (Some(left), Some(right)) = (expr.lexpr.as_deref(), expr.rexpr.as_deref()) else {
            return unknown(format!("the prefix operator {op}"));
        };
        match kind {
            AExprKind::AexprOp | AExprKind::AexprLike | AExprKind::AexprIlike => {
                self.binary(op, left, right)
            }
            // `x op ANY(ARRAY[a, b])` is `x op a OR x op b` (AND for ALL), NULLs alike.
            AExprKind::AexprOpAny | AExprKind::AexprOpAll
                if matches!(right.node.as_ref(), Some(NodeEnum::AArrayExpr(_))) =>
            {
                let Some(NodeEnum::AArrayExpr(array)) = right.node.as_ref() else {
                    return unknown("ANY/ALL of an array");
                };
                let each: Vec<Pred> = array
                    .elements
                    .iter()
                    .map(|element| self.binary(op, left, element))
                    .collect();
                if each.is_empty() {
                    unknown("ANY/ALL of an empty array")
                } else if kind == AExprKind::AexprOpAll {
                    Pred::And(each)
                } else {
                    Pred::Or(each)
                }
            }
            AExprKind::AexprOpAny | AExprKind::AexprOpAll => {
                let (Some(cmp), Some(left), Some(array)) =
                    (Cmp::named(op), self.expr(left), self.expr(right))
                else {
                    return unknown(format!("{op} ANY/ALL of what pgcache does not read"));
                };
                Pred::Quantified {
                    op: cmp,
                    left,
                    array,
                    all: kind == AExprKind::AexprOpAll,
                    ty: crate::predicate::SqlType::Unresolved,
                }
            }
            AExprKind::AexprIn => {
                let Some(NodeEnum::List(list)) = right.node.as_ref() else {
                    return unknown("IN of what pgcache does not read");
                };
                let any = Pred::Or(
                    list.items
                        .iter()
                        .map(|item| self.binary("=", left, item))
                        .collect(),
                );
                if op == "=" {
                    any
                } else {
                    Pred::Not(Box::new(any))
                }
            }
            AExprKind::AexprBetween
            | AExprKind::AexprNotBetween
            | AExprKind::AexprBetweenSym
            | AExprKind::AexprNotBetweenSym => {
                let Some(NodeEnum::List(list)) = right.node.as_ref() else {
                    return unknown("BETWEEN of what pgcache does not read");
                };
                let [low, high] = list.items.as_slice() else {
                    return unknown("BETWEEN of what pgcache does not read");
                };
                let between = |low: &Node, high: &Node| {
                    Pred::And(vec![
                        self.binary(">=", left, low),
                        self.binary("<=", left, high),
                    ])
                };
                let symmetric = matches!(
                    kind,
                    AExprKind::AexprBetweenSym | AExprKind::AexprNotBetweenSym
                );
                let holds = if symmetric {
                    Pred::Or(vec![between(low, high), between(high, low)])
                } else {
                    between(low, high)
                };
                if matches!(
                    kind,
                    AExprKind::AexprNotBetween | AExprKind::AexprNotBetweenSym
                ) {
                    Pred::Not(Box::new(holds))
                } else {
                    holds
                }
            }
            AExprKind::AexprDistinct | AExprKind::AexprNotDistinct => {
                unknown("IS [NOT] DISTINCT FROM")
            }
            AExprKind::AexprSimilar => unknown("SIMILAR TO"),
            _ => unknown(format!("the operator {op}")),
        }
    }

    /// `left op right` for a binary operator.
    fn binary(&self, op: &str, left: &Node, right: &Node) -> Pred {
        let (l, r) = match (self.expr(left), self.expr(right)) {
            (Some(l), Some(r)) => (l, r),
            (None, _) => return unknown(format!("{op} on {}", unread(left))),
            (_, None) => return unknown(format!("{op} on {}", unread(right))),
        };
        let like = |fold: bool, negated: bool| {
            let like = Pred::Like {
                text: l.clone(),
                pattern: r.clone(),
                fold,
                ty: crate::predicate::SqlType::Unresolved,
            };
            if negated {
                Pred::Not(Box::new(like))
            } else {
                like
            }
        };
        if let Some(cmp) = Cmp::named(op) {
            return Pred::Compare {
                op: cmp,
                left: l,
                right: r,
                ty: crate::predicate::SqlType::Unresolved,
            };
        }
        match op {
            "~~" => like(false, false),
            "!~~" => like(false, true),
            "~~*" => like(true, false),
            "!~~*" => like(true, true),
            "?" => Pred::JsonKeys {
                doc: l,
                keys: r,
                how: Keys::One,
            },
            "?|" => Pred::JsonKeys {
                doc: l,
                keys: r,
                how: Keys::Any,
            },
            "?&" => Pred::JsonKeys {
                doc: l,
                keys: r,
                how: Keys::All,
            },
            "@>" => Pred::JsonContains { doc: l, part: r },
            "<@" => Pred::JsonContains { doc: r, part: l },
            "~" | "~*" | "!~" | "!~*" => {
                let regex = Pred::Regex {
                    text: l,
                    pattern: r,
                    fold: op.ends_with('*'),
                };
                if op.starts_with('!') {
                    Pred::Not(Box::new(regex))
                } else {
                    regex
                }
            }
            _ => unknown(format!("the operator {op}")),
        }
    }

    /// A value: a column of the relation, `$n`, a constant, or upper/lower/||/a cast of
    /// them (None: anything else).
    fn expr(&self, node: &Node) -> Option<Expr> {
        Some(match node.node.as_ref()? {
            NodeEnum::ColumnRef(column) => Expr::Column(self.column(column)?),
            NodeEnum::ParamRef(p) => Expr::Param(usize::try_from(p.number).ok()?),
            NodeEnum::AConst(c) if c.isnull => Expr::Const(None, Literal::Untyped),
            NodeEnum::AConst(c) => match c.val.as_ref()? {
                a_const::Val::Ival(i) => Expr::Const(Some(i.ival.to_string()), Literal::Number),
                a_const::Val::Fval(f) => Expr::Const(Some(f.fval.clone()), Literal::Number),
                a_const::Val::Boolval(b) => Expr::Const(Some(b.boolval.to_string()), Literal::Bool),
                a_const::Val::Sval(s) => Expr::Const(Some(s.sval.clone()), Literal::Untyped),
                a_const::Val::Bsval(_) => return None,
            },
            NodeEnum::FuncCall(f) => {
                let plain = f.agg_order.is_empty()
                    && f.agg_filter.is_none()
                    && f.over.is_none()
                    && !f.agg_star
                    && !f.agg_distinct
                    && !f.func_variadic;
                if !plain {
                    return None;
                }
                let mut args = f.args.iter().map(|a| self.expr(a).map(Box::new));
                let name = operator(&f.funcname)?;
                match (name, f.args.len()) {
                    ("upper" | "lower", 1) => Expr::Fold {
                        upper: name == "upper",
                        arg: args.next()??,
                        collation: crate::predicate::Collation::UNKNOWN,
                    },
                    ("date_trunc", 2) => Expr::Trunc {
                        unit: args.next()??,
                        arg: args.next()??,
                    },
                    // `arg AT TIME ZONE zone` is read as `timezone(zone, arg)`.
                    ("timezone", 2) => Expr::AtZone {
                        zone: args.next()??,
                        arg: args.next()??,
                        to_zoned: false,
                    },
                    _ => return None,
                }
            }
            NodeEnum::AExpr(e)
                if e.kind == AExprKind::AexprOp as i32
                    && matches!(operator(&e.name)?, "->" | "->>") =>
            {
                Expr::JsonField {
                    doc: Box::new(self.expr(e.lexpr.as_deref()?)?),
                    key: Box::new(self.expr(e.rexpr.as_deref()?)?),
                    as_text: operator(&e.name)? == "->>",
                    index: false,
                }
            }
            NodeEnum::AExpr(e)
                if e.kind == AExprKind::AexprOp as i32 && operator(&e.name)? == "||" =>
            {
                Expr::Concat(
                    Box::new(self.expr(e.lexpr.as_deref()?)?),
                    Box::new(self.expr(e.rexpr.as_deref()?)?),
                )
            }
            NodeEnum::TypeCast(cast) => {
                let to = type_name(cast.type_name.as_ref()?)?;
                Expr::Cast(Box::new(self.expr(cast.arg.as_deref()?)?), to)
            }
            _ => return None,
        })
    }

    /// The column a reference names: `c`, `t.c` (`t` the relation or its alias),
    /// `s.t.c`. With one relation in FROM and no subquery, nothing else is in scope.
    fn column(&self, column: &protobuf::ColumnRef) -> Option<String> {
        let fields = fields_of(column)?;
        let (name, qualifiers) = fields.split_last()?;
        let ours = if qualifiers.is_empty() {
            self.alone
        } else {
            self.named_by(qualifiers)
        };
        ours.then(|| name.to_string())
    }

    /// Whether a column reference's fields before the column's own name (`t` of `t.c`, or
    /// `s`, `t` of `s.t.c`) name this relation.
    fn named_by<S: AsRef<str>>(&self, qualifiers: &[S]) -> bool {
        match qualifiers {
            [qualifier] => self.alias.unwrap_or(self.relation) == qualifier.as_ref(),
            [schema, relation] => {
                self.alias.is_none()
                    && self.relation == relation.as_ref()
                    && (self.schema.is_empty() || self.schema == schema.as_ref())
            }
            _ => false,
        }
    }
}

/// The names a column reference is written with (`c`, `t.c`, `s.t.c`); None for `t.*`.
fn fields_of(column: &protobuf::ColumnRef) -> Option<Vec<&str>> {
    column
        .fields
        .iter()
        .map(|f| match f.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect()
}

/// A type's name as `format_type` spells it, when the cast keeps a value's spelling: no
/// type modifier (`varchar(3)` would cut it), no schema but pg_catalog.
fn type_name(t: &protobuf::TypeName) -> Option<String> {
    if !t.typmods.is_empty() || t.setof || t.pct_type {
        return None;
    }
    let base = match operator(&t.names)? {
        "int2" | "smallint" => "smallint",
        "int4" | "int" | "integer" => "integer",
        "int8" | "bigint" => "bigint",
        "numeric" | "decimal" => "numeric",
        "float4" | "real" => "real",
        "float8" => "double precision",
        "bool" | "boolean" => "boolean",
        "text" => "text",
        "varchar" => "character varying",
        "uuid" => "uuid",
        "date" => "date",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "jsonb" => "jsonb",
        _ => return None,
    };
    Some(match t.array_bounds.len() {
        0 => base.to_string(),
        1 => format!("{base}[]"),
        _ => return None,
    })
}

/// What an operand pgcache does not read is, for a reason.
fn unread(node: &Node) -> String {
    match node.node.as_ref() {
        Some(NodeEnum::FuncCall(f)) => format!("a call of {}", dotted(&f.funcname)),
        Some(NodeEnum::TypeCast(_)) => "a cast pgcache does not read".into(),
        Some(NodeEnum::CollateClause(_)) => "a COLLATE clause".into(),
        Some(NodeEnum::ColumnRef(_)) => "a reference pgcache does not read as a column".into(),
        Some(NodeEnum::AExpr(e)) => format!("the operator {}", dotted(&e.name)),
        _ => "an expression pgcache does not evaluate".into(),
    }
}

/// A dotted name, for a reason.
fn dotted(name: &[Node]) -> String {
    name.iter()
        .filter_map(|n| match n.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(".")
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

/// The statement with its projection made `*` and its grouping, windows, DISTINCT, LIMIT
/// and (unless `ordered`) ORDER BY gone: the rows its result is computed from.
fn rows_sql(tree: &protobuf::ParseResult, select: &SelectStmt, ordered: bool) -> Result<String> {
    spelled(tree, rows_of(select, ordered)?)
}

/// `select` with its projection made `*` and its grouping, windows, DISTINCT, LIMIT and
/// (unless `ordered`) ORDER BY gone.
fn rows_of(select: &SelectStmt, ordered: bool) -> Result<SelectStmt> {
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
    candidates.group_clause.clear();
    candidates.group_distinct = false;
    candidates.having_clause = None;
    candidates.window_clause.clear();
    if !ordered {
        candidates.sort_clause.clear();
    }
    candidates.limit_count = None;
    candidates.limit_offset = None;
    Ok(candidates)
}

/// A page's statement, and its rows in its order (`Page::ordered_sql`), each with `key` (the
/// table's primary key, columns of `reference`) appended to its ORDER BY.
///
/// PostgreSQL orders ties as it finds them: the page it answers and the rows read beside it
/// for the page's members (a second scan of the table, which a synchronized scan or a
/// parallel plan starts elsewhere) may hold different tied rows, and a member missed is a
/// deleted row served. Ordered down to the primary key, both hold the same rows: one of the
/// answers PostgreSQL may give the statement.
pub fn tie_broken(canonical: &str, reference: &str, key: &[String]) -> Result<(String, String)> {
    let tree = pg_query::parse(canonical)
        .map_err(|e| Error::internal(format!("parsing a canonical statement again: {e}")))?
        .protobuf;
    let tail: Vec<String> = key
        .iter()
        .map(|c| format!("{}.{}", quote_ident(reference), quote_ident(c)))
        .collect();
    let order = pg_query::parse(&format!("SELECT 1 ORDER BY {}", tail.join(", ")))
        .map_err(|e| Error::internal(format!("spelling a page's tie-break: {e}")))?
        .protobuf;
    let (Some(NodeEnum::SelectStmt(select)), Some(NodeEnum::SelectStmt(order))) =
        (top_node(&tree), top_node(&order))
    else {
        return Err(Error::internal("a page that is not a SELECT"));
    };
    let mut select = (**select).clone();
    select.sort_clause.extend(order.sort_clause.iter().cloned());
    let ordered = rows_sql(&tree, &select, true)?;
    Ok((spelled(&tree, select)?, ordered))
}

/// The first statement's node.
fn top_node(tree: &protobuf::ParseResult) -> Option<&NodeEnum> {
    tree.stmts.first()?.stmt.as_ref()?.node.as_ref()
}

/// `select` as text, in the tree `tree` came with.
fn spelled(tree: &protobuf::ParseResult, select: SelectStmt) -> Result<String> {
    let mut tree = tree.clone();
    tree.stmts.truncate(1);
    if let Some(stmt) = tree.stmts[0].stmt.as_mut() {
        stmt.node = Some(NodeEnum::SelectStmt(Box::new(select)));
    }
    tree.deparse()
        .map_err(|e| Error::internal(format!("spelling the statement's rows: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predicate::SqlType;

    fn shape(sql: &str) -> Option<Shape> {
        of(&pg_query::parse(sql).unwrap().protobuf).unwrap().ok()
    }

    fn filter(sql: &str) -> Pred {
        shape(sql).unwrap().sides.remove(0).filter
    }

    fn column(c: &str) -> Expr {
        Expr::Column(c.into())
    }

    fn compare(op: Cmp, left: Expr, right: Expr) -> Pred {
        Pred::Compare {
            op,
            left,
            right,
            ty: SqlType::Unresolved,
        }
    }

    #[test]
    fn a_where_over_one_table_is_read_as_a_condition_on_its_row() {
        let s = shape(
            "SELECT id, total FROM orders o WHERE o.customer_id = $1 AND 'open' = status \
             AND region IN ($2, 3) ORDER BY created_at DESC LIMIT 20",
        )
        .unwrap();
        assert_eq!(s.sides[0].relation, (String::new(), "orders".into()));
        assert_eq!(
            s.sides[0].filter,
            Pred::And(vec![
                compare(Cmp::Eq, column("customer_id"), Expr::Param(1)),
                compare(
                    Cmp::Eq,
                    Expr::Const(Some("open".into()), Literal::Untyped),
                    column("status")
                ),
                Pred::Or(vec![
                    compare(Cmp::Eq, column("region"), Expr::Param(2)),
                    compare(
                        Cmp::Eq,
                        column("region"),
                        Expr::Const(Some("3".into()), Literal::Number)
                    ),
                ]),
            ])
        );
        assert_eq!(
            s.candidates_sql,
            "SELECT * FROM orders o WHERE o.customer_id = $1 AND 'open' = status \
             AND region IN ($2, 3)"
        );
        let s = shape("SELECT DISTINCT email FROM public.users WHERE users.id = $1").unwrap();
        assert_eq!(s.sides[0].relation, ("public".into(), "users".into()));
        assert_eq!(
            s.candidates_sql,
            "SELECT * FROM public.users WHERE users.id = $1"
        );
        // However the column is qualified.
        assert_eq!(
            filter("SELECT * FROM shop.users WHERE shop.users.id > $1"),
            compare(Cmp::Gt, column("id"), Expr::Param(1))
        );
        assert!(matches!(
            filter("SELECT * FROM users u WHERE users.id = $1"),
            Pred::Unknown(_)
        ));
    }

    #[test]
    fn ranges_patterns_nulls_and_negations_are_read() {
        assert_eq!(
            filter("SELECT * FROM t WHERE a BETWEEN $1 AND 5"),
            Pred::And(vec![
                compare(Cmp::Ge, column("a"), Expr::Param(1)),
                compare(
                    Cmp::Le,
                    column("a"),
                    Expr::Const(Some("5".into()), Literal::Number)
                ),
            ])
        );
        assert!(matches!(
            filter("SELECT * FROM t WHERE a NOT IN (1, 2)"),
            Pred::Not(inner) if matches!(*inner, Pred::Or(ref items) if items.len() == 2)
        ));
        assert_eq!(
            filter("SELECT * FROM t WHERE a IS NOT NULL"),
            Pred::Not(Box::new(Pred::IsNull(column("a"))))
        );
        assert_eq!(
            filter("SELECT * FROM t WHERE NOT active"),
            Pred::Not(Box::new(Pred::Boolean(column("active"))))
        );
        assert_eq!(
            filter("SELECT * FROM t WHERE a = ANY($1)"),
            Pred::Quantified {
                op: Cmp::Eq,
                left: column("a"),
                array: Expr::Param(1),
                all: false,
                ty: SqlType::Unresolved,
            }
        );
        assert_eq!(
            filter(r#"SELECT * FROM t WHERE UPPER("t"."name"::text) LIKE UPPER($1)"#),
            Pred::Like {
                text: Expr::Fold {
                    upper: true,
                    arg: Box::new(Expr::Cast(Box::new(column("name")), "text".into())),
                    collation: crate::predicate::Collation::UNKNOWN,
                },
                pattern: Expr::Fold {
                    upper: true,
                    arg: Box::new(Expr::Param(1)),
                    collation: crate::predicate::Collation::UNKNOWN,
                },
                fold: false,
                ty: SqlType::Unresolved,
            }
        );
        assert!(matches!(
            filter("SELECT * FROM t WHERE name ILIKE '%' || $1 || '%'"),
            Pred::Like { fold: true, .. }
        ));
        assert!(matches!(
            filter("SELECT * FROM t WHERE doc @> $1 AND doc ? 'k'"),
            Pred::And(items) if matches!(items[1], Pred::JsonKeys { how: Keys::One, .. })
        ));
        for (sql, why) in [
            ("SELECT * FROM t WHERE a SIMILAR TO $1", "SIMILAR TO"),
            ("SELECT * FROM t WHERE a IS DISTINCT FROM $1", "DISTINCT"),
            ("SELECT * FROM t WHERE length(a) = 3", "length"),
            ("SELECT * FROM t WHERE a OPERATOR(public.=) $1", "public.="),
            ("SELECT * FROM t WHERE a::varchar(3) = $1", "cast"),
        ] {
            let Pred::Unknown(reason) = filter(sql) else {
                panic!("{sql}");
            };
            assert!(reason.contains(why), "{sql}: {reason}");
        }
    }

    #[test]
    fn an_order_by_columns_with_a_limit_is_a_page() {
        let page = shape(
            "SELECT id FROM orders o WHERE o.user_id = $1 \
             ORDER BY o.placed DESC, id NULLS FIRST LIMIT $2 OFFSET 20",
        )
        .unwrap()
        .page
        .unwrap();
        assert_eq!(
            page.keys,
            [
                ("placed".to_string(), true, true),
                ("id".into(), false, true)
            ]
        );
        assert_eq!(page.limit, Count::Param(2));
        assert_eq!(page.offset, Some(Count::Const(20)));
        assert_eq!(
            page.ordered_sql,
            "SELECT * FROM orders o WHERE o.user_id = $1 ORDER BY o.placed DESC, id NULLS FIRST"
        );
        assert_eq!(page.limit.value(&["7".into(), "10".into()]), Some(10));
        assert!(
            shape("SELECT id AS id, total FROM t WHERE a = 1 ORDER BY id LIMIT 5")
                .unwrap()
                .page
                .is_some()
        );
        for sql in [
            "SELECT id FROM t WHERE a = 1 ORDER BY id",
            "SELECT id FROM t WHERE a = 1 ORDER BY lower(name) LIMIT 5",
            "SELECT DISTINCT id FROM t WHERE a = 1 ORDER BY id LIMIT 5",
            "SELECT id FROM t WHERE a = 1 ORDER BY id FETCH FIRST 5 ROWS WITH TIES",
            "SELECT id FROM t WHERE a = 1 ORDER BY id LIMIT ALL",
            "SELECT a, count(*) FROM t WHERE a = 1 GROUP BY a ORDER BY a LIMIT 5",
            "SELECT id, unnest(tags) FROM t WHERE a = 1 ORDER BY id LIMIT 5",
            "SELECT total AS id FROM t WHERE a = 1 ORDER BY id LIMIT 5",
        ] {
            assert_eq!(shape(sql).unwrap().page, None, "{sql}");
        }
    }

    #[test]
    fn a_page_is_ordered_down_to_its_primary_key() {
        let (statement, ordered) = tie_broken(
            "SELECT id, score FROM public.t \"T\" WHERE score > $1 ORDER BY score DESC LIMIT $2",
            "T",
            &["id".into(), "Kind".into()],
        )
        .unwrap();
        assert_eq!(
            statement,
            "SELECT id, score FROM public.t \"T\" WHERE score > $1 \
             ORDER BY score DESC, \"T\".id, \"T\".\"Kind\" LIMIT $2"
        );
        assert_eq!(
            ordered,
            "SELECT * FROM public.t \"T\" WHERE score > $1 ORDER BY score DESC, \"T\".id, \"T\".\"Kind\""
        );
    }

    #[test]
    fn aggregates_groups_and_windows_are_computed_from_the_rows_the_where_admits() {
        let s = shape(
            "SELECT status, count(*) FROM orders WHERE customer_id = $1 GROUP BY status \
             HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 3",
        )
        .unwrap();
        assert_eq!(
            s.candidates_sql,
            "SELECT * FROM orders WHERE customer_id = $1"
        );
        let s = shape(
            "SELECT id, rank() OVER w FROM orders WHERE total > 5 WINDOW w AS (ORDER BY total)",
        )
        .unwrap();
        assert_eq!(s.candidates_sql, "SELECT * FROM orders WHERE total > 5");
    }

    #[test]
    fn every_statement_that_reads_other_rows_has_no_shape_and_says_why() {
        for (sql, why) in [
            ("SELECT * FROM orders", "no WHERE"),
            ("SELECT * FROM ONLY orders WHERE id = $1", "ONLY"),
            (
                "SELECT * FROM orders AS o (a, b) WHERE a = $1",
                "renames columns",
            ),
            (
                "SELECT * FROM (SELECT * FROM orders) s WHERE id = $1",
                "subquery",
            ),
            (
                "SELECT id FROM orders WHERE id = $1 UNION SELECT a.id FROM a JOIN b ON a.id = b.id",
                "set operation whose branch",
            ),
            (
                "WITH o AS (SELECT * FROM orders) SELECT * FROM o WHERE id = $1",
                "WITH",
            ),
            ("SELECT *, (SELECT 1) FROM orders WHERE id = $1", "subquery"),
            (
                "SELECT *, (SELECT name FROM users WHERE users.id = orders.user_id) \
                 FROM orders WHERE id = $1",
                "correlated subquery",
            ),
            ("SELECT 1", "no table"),
            (
                "SELECT * FROM orders o FULL JOIN users u ON u.id = o.user_id",
                "FULL",
            ),
        ] {
            let shaped = of(&pg_query::parse(sql).unwrap().protobuf).unwrap();
            let e = shaped.err().unwrap_or_default();
            assert!(e.contains(why), "{sql}: {e}");
        }
    }

    #[test]
    fn a_join_has_a_side_per_table_and_its_rows_as_candidates() {
        let s = shape(
            "SELECT o.id, u.name FROM orders o JOIN users u ON u.id = o.user_id \
             WHERE o.id = $1 ORDER BY o.id LIMIT 5",
        )
        .unwrap();
        assert_eq!(s.sides.len(), 2);
        assert_eq!(s.edges.len(), 1);
        assert_eq!(s.page, None, "pages are one table's");
        assert_eq!(
            s.candidates_sql,
            "SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = $1"
        );
        let s = shape("SELECT * FROM orders, users WHERE orders.id = $1").unwrap();
        assert_eq!(s.sides[1].join, Join::Inner);
        assert!(!s.sides[1].mentioned);
    }
}
