//! Random statements over a schema, from the grammar pgcache weighs row by row: comparisons,
//! casts, IS [NOT] NULL, BETWEEN, IN lists, `= ANY($1)`, LIKE/ILIKE, upper/lower, jsonb
//! operators, AND/OR/NOT and NULL constants, with `$n` and constants; projections,
//! aggregates with GROUP BY/HAVING, ORDER BY with ties and LIMIT/OFFSET, joins along foreign
//! keys, IN/EXISTS subqueries, UNION [ALL], a view.
//!
//! A statement is kept as a tree (`Node`, `Cond`), not text, so the shrinker can simplify its
//! WHERE and its parameters are numbered when it is rendered: a `$n` whose condition the
//! shrinker removed leaves no gap. A parameter holds one value per variant: each variant is
//! the same statement text with other values, so results of one statement share its entry.

use crate::schema::{Column, Layout, Schema, Table, Ty, WRAPPER_NAMES};
use crate::{Feature, Gen};

#[derive(Debug, Clone)]
pub enum Node {
    Sql(String),
    /// `$n`: one value per variant.
    Param(Vec<String>),
    Where(Cond),
}

#[derive(Debug, Clone)]
pub enum Cond {
    True,
    Atom(Vec<Node>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone)]
pub struct Stmt {
    pub body: Vec<Node>,
    /// `LIMIT ... OFFSET ...`: left out for the unlimited answer ties are judged by.
    pub tail: Vec<Node>,
    /// The output columns of its ORDER BY, in order (none: the answer is a multiset).
    pub order_keys: Vec<String>,
    /// The output columns whose value PostgreSQL takes from any one of the equal values it
    /// met (a GROUP BY key, min, max): `1.5` or `1.50`, `-0` or `0`, as its plan meets them.
    pub any_of_equals: Vec<String>,
    pub variants: usize,
    /// The schema's tables (and views, after them) it names, for the shrinker.
    pub tables: Vec<usize>,
    pub features: Vec<Feature>,
}

fn render_nodes(nodes: &[Node], variant: usize, sql: &mut String, params: &mut Vec<String>) {
    for n in nodes {
        match n {
            Node::Sql(s) => sql.push_str(s),
            Node::Param(values) => {
                params.push(values[variant].clone());
                sql.push_str(&format!("${}", params.len()));
            }
            Node::Where(c) => render_cond(c, variant, sql, params),
        }
    }
}

fn render_cond(c: &Cond, variant: usize, sql: &mut String, params: &mut Vec<String>) {
    match c {
        Cond::True => sql.push_str("TRUE"),
        Cond::Atom(nodes) => render_nodes(nodes, variant, sql, params),
        Cond::And(cs) | Cond::Or(cs) => {
            let op = if matches!(c, Cond::And(_)) {
                " AND "
            } else {
                " OR "
            };
            sql.push('(');
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    sql.push_str(op);
                }
                render_cond(c, variant, sql, params);
            }
            sql.push(')');
        }
        Cond::Not(c) => {
            sql.push_str("NOT (");
            render_cond(c, variant, sql, params);
            sql.push(')');
        }
    }
}

impl Stmt {
    /// The statement's text and parameters for `variant`; without its LIMIT/OFFSET when not
    /// `limited`.
    pub fn render(&self, variant: usize, limited: bool) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut params = Vec::new();
        render_nodes(&self.body, variant, &mut sql, &mut params);
        if limited {
            render_nodes(&self.tail, variant, &mut sql, &mut params);
        }
        (sql, params)
    }

    pub fn limited(&self) -> bool {
        !self.tail.is_empty()
    }
}

/// An output column of a generated statement: its expression, the name the answer gives
/// it, and the type it compares as (None: not an ORDER BY key: a row, a function's result).
#[derive(Debug, Clone)]
struct Item {
    expr: String,
    /// A parameter as the item (`$n::text`): its value per variant.
    param: Option<Vec<String>>,
    out: String,
    ty: Option<Ty>,
}

impl Item {
    fn column(expr: &str, c: &Column) -> Item {
        Item {
            expr: expr.to_string(),
            param: None,
            out: c.name.clone(),
            ty: Some(c.ty),
        }
    }

    /// The input column's own name (`x.a` is `a`).
    fn bare(&self) -> &str {
        self.expr.rsplit('.').next().unwrap_or(&self.expr)
    }

    /// Its place in the SELECT list (a parameter is numbered as the statement is rendered).
    fn nodes(&self) -> Vec<Node> {
        if let Some(values) = &self.param {
            return vec![
                Node::Param(values.clone()),
                sql(format!("::text AS {}", self.out)),
            ];
        }
        if self.out == self.bare() {
            vec![sql(self.expr.clone())]
        } else {
            vec![sql(format!("{} AS {}", self.expr, self.out))]
        }
    }

    /// Whether it may be an ORDER BY key whose ties the comparison can judge.
    fn orderable(&self) -> bool {
        self.param.is_none()
            && self
                .ty
                .is_some_and(|t| (t.ordered() || t == Ty::Bool) && t.spelled_by_value())
    }

    /// Whether DISTINCT may keep it: values equal under `=` are spelled alike.
    fn distinguishable(&self) -> bool {
        self.param.is_none()
            && self
                .ty
                .is_some_and(|t| t.comparable() && t.spelled_by_value() && t.ordered())
    }
}

pub struct StmtGen<'a> {
    pub g: &'a mut Gen,
    pub schema: &'a Schema,
    pub variants: usize,
}

fn sql(s: impl Into<String>) -> Node {
    Node::Sql(s.into())
}

impl StmtGen<'_> {
    fn param_of(&mut self, mut value: impl FnMut(&mut Gen) -> String) -> Node {
        Node::Param((0..self.variants).map(|_| value(self.g)).collect())
    }

    fn value(&mut self, c: &Column) -> String {
        if c.name == "score" {
            return self.g.rng.below(5).to_string();
        }
        self.g.rng.pick(c.ty.pool()).to_string()
    }

    /// A value of `c`'s type: a parameter, or a constant (quoted, typed by its column).
    fn operand(&mut self, c: &Column) -> Node {
        if self.g.rng.chance(60) {
            let c = c.clone();
            return self.param_of(|g| {
                if c.name == "score" {
                    g.rng.below(5).to_string()
                } else {
                    g.rng.pick(c.ty.pool()).to_string()
                }
            });
        }
        let v = self.value(c);
        // Constants of another type: the comparison is then across types (a real widened
        // to double precision, a timestamp against a date), as PostgreSQL resolves it.
        if c.ty.fractional() && self.g.rng.chance(25) {
            return sql(self
                .g
                .rng
                .pick(&["0.1", "2.5", "1.5", "3.3", "0.30000000000000004"]));
        }
        if matches!(c.ty, Ty::Timestamp | Ty::Timestamptz) && self.g.rng.chance(25) {
            return sql(format!(
                "'{}'::date",
                self.g.rng.pick(&["2024-01-01", "2024-06-01"])
            ));
        }
        if c.ty == Ty::Date && self.g.rng.chance(25) {
            return sql(self.g.rng.pick(&[
                "'2024-01-01 12:00'::timestamp",
                "'2024-01-01 00:00:00+05'::timestamptz",
                "'2024-02-28 23:00:00-02'::timestamptz",
            ]));
        }
        if c.ty.integral() && self.g.rng.chance(20) {
            // A numeric constant against an integer column: compared as numeric.
            return sql(self.g.rng.pick(&["2.5", "1.0", "-0.5"]));
        }
        sql(format!("'{}'", v.replace('\'', "''")))
    }

    fn op(&mut self, ordered: bool) -> &'static str {
        if ordered {
            self.g.rng.pick(&["=", "<>", "<", "<=", ">", ">="])
        } else {
            self.g.rng.pick(&["=", "<>"])
        }
    }

    /// A condition on one column, written `e` (`col`, `x.col`).
    pub fn atom(&mut self, e: &str, c: &Column) -> Cond {
        let ty = c.ty;
        let atom = |nodes: Vec<Node>| Cond::Atom(nodes);
        if !ty.comparable() {
            // json and xml have no `=`: only what their functions and operators say.
            return self.typed_atom(e, c);
        }
        match self.g.rng.below(15) {
            12 if self.g.feature(Feature::IsDistinctFrom) => {
                let not = if self.g.rng.chance(40) { " NOT" } else { "" };
                let o = if self.g.rng.chance(20) {
                    sql("NULL")
                } else {
                    self.operand(c)
                };
                atom(vec![sql(format!("{e} IS{not} DISTINCT FROM ")), o])
            }
            13 => self.conditional_atom(e, c),
            14 if ty.texty() && self.g.feature(Feature::StringFunctions) => self.string_atom(e, c),
            0..=2 => {
                if ty == Ty::Oid && !self.g.feature(Feature::OidOrder) {
                    let o = self.operand(c);
                    return atom(vec![sql(format!("{e} = ")), o]);
                }
                let op = self.op(ty.ordered());
                if ty == Ty::Oid && op != "=" && op != "<>" && self.g.rng.chance(50) {
                    // An oid read as unsigned: -1 is 4294967295.
                    return atom(vec![sql(format!("{e} {op} '-1'"))]);
                }
                let o = self.operand(c);
                atom(vec![sql(format!("{e} {op} ")), o])
            }
            3 => {
                if ty == Ty::Pair && !self.g.feature(Feature::CompositeIsNull) {
                    return atom(vec![sql(format!("({e}).x IS NULL"))]);
                }
                let not = if self.g.rng.chance(50) { " NOT" } else { "" };
                atom(vec![sql(format!("{e} IS{not} NULL"))])
            }
            4 if ty.ordered() && (ty != Ty::Oid || self.g.feature(Feature::OidOrder)) => {
                let (a, b) = (self.operand(c), self.operand(c));
                let not = if self.g.rng.chance(20) { " NOT" } else { "" };
                atom(vec![sql(format!("{e}{not} BETWEEN ")), a, sql(" AND "), b])
            }
            5 => {
                let mut nodes = vec![sql(format!("{e} IN ("))];
                for i in 0..1 + self.g.rng.below(3) {
                    if i > 0 {
                        nodes.push(sql(", "));
                    }
                    nodes.push(self.operand(c));
                }
                if self.g.rng.chance(20) {
                    nodes.push(sql(", NULL"));
                }
                nodes.push(sql(")"));
                atom(nodes)
            }
            6 if !matches!(ty, Ty::Jsonb | Ty::TextArr | Ty::IntArr | Ty::Pair)
                && (ty != Ty::Char || self.g.feature(Feature::CharArrayParam)) =>
            {
                let c2 = c.clone();
                let p = self.param_of(|g| {
                    let n = 1 + g.rng.below(3);
                    let values: Vec<&str> = (0..n).map(|_| g.rng.pick(c2.ty.pool())).collect();
                    Ty::array_param(&values)
                });
                atom(vec![sql(format!("{e} = ANY(")), p, sql(")")])
            }
            7 => {
                let form = self.g.rng.pick(&[
                    format!("{e} = NULL"),
                    format!("{e} <> NULL"),
                    format!("{e} IN (NULL)"),
                    format!("NOT ({e} = NULL)"),
                ]);
                atom(vec![sql(form)])
            }
            _ => self.typed_atom(e, c),
        }
    }

    /// COALESCE, NULLIF, GREATEST/LEAST and CASE around a column.
    fn conditional_atom(&mut self, e: &str, c: &Column) -> Cond {
        let atom = |nodes: Vec<Node>| Cond::Atom(nodes);
        let lit = |g: &mut Gen| c.ty.literal(g.rng.pick(c.ty.pool()));
        match self.g.rng.below(4) {
            0 if self.g.feature(Feature::Coalesce) => {
                let (l, o) = (lit(self.g), self.operand(c));
                atom(vec![sql(format!("COALESCE({e}, {l}) = ")), o])
            }
            1 if self.g.feature(Feature::NullIf) => {
                let l = lit(self.g);
                let not = if self.g.rng.chance(50) { " NOT" } else { "" };
                atom(vec![sql(format!("NULLIF({e}, {l}) IS{not} NULL"))])
            }
            2 if c.ty.ordered() && self.g.feature(Feature::GreatestLeast) => {
                let f = self.g.rng.pick(&["GREATEST", "LEAST"]);
                let (l, o) = (lit(self.g), self.operand(c));
                let op = self.op(true);
                atom(vec![sql(format!("{f}({e}, {l}) {op} ")), o])
            }
            _ if self.g.feature(Feature::Case) => {
                let o = self.operand(c);
                let op = self.op(c.ty.ordered());
                let (a, b) = if self.g.rng.chance(50) {
                    ("1", "0")
                } else {
                    ("0", "1")
                };
                atom(vec![
                    sql(format!("CASE WHEN {e} {op} ")),
                    o,
                    sql(format!(
                        " THEN {a} WHEN {e} IS NULL THEN 2 ELSE {b} END = 1"
                    )),
                ])
            }
            _ => atom(vec![sql(format!("{e} IS NOT NULL"))]),
        }
    }

    /// String functions beyond upper/lower (all IMMUTABLE in PostgreSQL).
    fn string_atom(&mut self, e: &str, c: &Column) -> Cond {
        let atom = |nodes: Vec<Node>| Cond::Atom(nodes);
        match self.g.rng.below(6) {
            0 => {
                let p = self.param_of(|g| g.rng.below(4).to_string());
                let op = self.op(true);
                atom(vec![sql(format!("length({e}) {op} ")), p])
            }
            1 => {
                let o = self.operand(c);
                atom(vec![sql(format!("substr({e}, 1, 1) = ")), o])
            }
            2 => {
                let o = self.operand(c);
                atom(vec![sql(format!("replace({e}, 'a', 'b') = ")), o])
            }
            3 => {
                let o = self.operand(c);
                atom(vec![
                    sql(format!("btrim({e}) || 'x' = ")),
                    o,
                    sql(" || 'x'"),
                ])
            }
            4 => {
                let p = self.param_of(|g| g.rng.pick(&["a", "b", "é", ""]).to_string());
                atom(vec![sql("position("), p, sql(format!(" in {e}) > 0"))])
            }
            _ => {
                let o = self.operand(c);
                atom(vec![sql(format!("left(reverse({e}), 2) = ")), o])
            }
        }
    }

    /// The conditions only some types have: casts, patterns, jsonb and array operators.
    fn typed_atom(&mut self, e: &str, c: &Column) -> Cond {
        let ty = c.ty;
        let atom = |nodes: Vec<Node>| Cond::Atom(nodes);
        let op = self.op(true);
        if ty.fractional() && self.g.rng.chance(60) && self.g.feature(Feature::RoundingCast) {
            let p = self.param_of(|g| g.rng.pick(&["0", "1", "2", "3", "-2", "10"]).into());
            return atom(vec![sql(format!("{e}::integer {op} ")), p]);
        }
        if matches!(ty, Ty::Real | Ty::Double)
            && self.g.rng.chance(50)
            && self.g.feature(Feature::RoundingCast)
        {
            let p = self.param_of(|g| g.rng.pick(Ty::Numeric.pool()).into());
            return atom(vec![sql(format!("{e}::numeric {op} ")), p]);
        }
        if ty.integral() || ty.fractional() {
            let p = self.param_of(|g| g.rng.pick(Ty::Numeric.pool()).into());
            return atom(vec![sql(format!("{e}::numeric {op} ")), p]);
        }
        if ty.texty() {
            let pattern = |g: &mut Gen| {
                g.rng
                    .pick(&["a%", "%b", "_", "a\\%b", "%", "A%", "é%", "a_c", "%a%"])
                    .to_string()
            };
            return match self.g.rng.below(5) {
                0 | 1 => {
                    let like = self.g.rng.pick(&["LIKE", "ILIKE", "NOT LIKE"]);
                    let p = self.param_of(pattern);
                    atom(vec![sql(format!("{e} {like} ")), p])
                }
                2 => {
                    let f = self.g.rng.pick(&["upper", "lower"]);
                    let o = self.operand(c);
                    atom(vec![sql(format!("{f}({e}) = ")), o])
                }
                3 => {
                    let p = self.param_of(pattern);
                    atom(vec![sql(format!("lower({e}) LIKE ")), p])
                }
                _ => {
                    let o = self.operand(c);
                    atom(vec![sql(format!("{e}::text {op} ")), o])
                }
            };
        }
        match ty {
            Ty::Date | Ty::Timestamp | Ty::Timestamptz => {
                let p = self.param_of(|g| g.rng.pick(Ty::Date.pool()).into());
                atom(vec![sql(format!("{e}::date {op} ")), p])
            }
            Ty::Jsonb => match self.g.rng.below(5) {
                0 => {
                    let p = self.param_of(|g| g.rng.pick(&["1", "x", "1.0", "null"]).into());
                    atom(vec![sql(format!("{e}->>'a' = ")), p])
                }
                1 => atom(vec![sql(format!(
                    "{e}->'a' = '{}'",
                    self.g.rng.pick(&["1", "\"x\"", "null", "1.0"])
                ))]),
                2 => {
                    let p = self.param_of(|g| {
                        g.rng
                            .pick(&[r#"{"a": 1}"#, r#"{"b": [1]}"#, "[1]", "{}"])
                            .into()
                    });
                    atom(vec![sql(format!("{e} @> ")), p])
                }
                3 => atom(vec![sql(format!(
                    "{e} ? '{}'",
                    self.g.rng.pick(&["a", "b", "s"])
                ))]),
                _ => atom(vec![sql(format!("{e}->'b'->>'c' = '1'"))]),
            },
            Ty::TextArr | Ty::IntArr => {
                let c2 = c.clone();
                let p = self.param_of(|g| g.rng.pick(c2.ty.pool()).into());
                let op = self.g.rng.pick(&["=", "@>", "<@"]);
                atom(vec![sql(format!("{e} {op} ")), p])
            }
            Ty::Pair => {
                let p = self.param_of(|g| g.rng.pick(&["1", "2", "3"]).into());
                atom(vec![sql(format!("({e}).x {op} ")), p])
            }
            Ty::Bool => atom(vec![sql(self.g.rng.pick(&[
                e.to_string(),
                format!("NOT {e}"),
                format!("{e} IS TRUE"),
            ]))]),
            Ty::Uuid | Ty::Oid | Ty::Mood => {
                let o = self.operand(c);
                atom(vec![sql(format!("{e}::text = ")), o])
            }
            Ty::Interval => {
                let op = self.op(true);
                let p = self.param_of(|g| g.rng.pick(&["0", "3600", "86400", "-1"]).into());
                atom(vec![sql(format!("extract(epoch from {e}) {op} ")), p])
            }
            Ty::Inet | Ty::Cidr => match self.g.rng.below(3) {
                0 => atom(vec![sql(format!(
                    "{e} <<= '{}'",
                    self.g.rng.pick(&["10.0.0.0/8", "192.168.0.0/16", "::/0"])
                ))]),
                1 => atom(vec![sql(format!(
                    "family({e}) = {}",
                    self.g.rng.pick(&[4, 6])
                ))]),
                _ => {
                    let p = self.param_of(|g| g.rng.pick(&["8", "24", "32"]).into());
                    atom(vec![sql(format!("masklen({e}) {op} ")), p])
                }
            },
            Ty::IntRange | Ty::IntMultirange => match self.g.rng.below(3) {
                0 => {
                    let p = self.param_of(|g| g.rng.pick(&["0", "2", "4", "9"]).into());
                    atom(vec![sql(format!("{e} @> ")), p, sql("::integer")])
                }
                1 => atom(vec![sql(format!(
                    "{e} && '{}'::int4range",
                    self.g.rng.pick(&["[2,4)", "empty", "[0,1)"])
                ))]),
                _ => atom(vec![sql(format!("isempty({e}::int4multirange)"))]),
            },
            Ty::Xml => match self.g.rng.below(2) {
                0 => {
                    let o = self.param_of(|g| g.rng.pick(Ty::Xml.pool()).into());
                    atom(vec![sql(format!("{e}::text = ")), o])
                }
                _ => atom(vec![sql(format!("xmlexists('/a' PASSING {e})"))]),
            },
            Ty::Json => match self.g.rng.below(3) {
                0 => {
                    let p = self.param_of(|g| g.rng.pick(&["1", "2", "x"]).into());
                    atom(vec![sql(format!("{e}->>'a' = ")), p])
                }
                1 => atom(vec![sql(format!(
                    "json_typeof({e}) = '{}'",
                    self.g.rng.pick(&["object", "array", "string", "null"])
                ))]),
                _ => atom(vec![sql(format!("{e}::text LIKE '%a%'"))]),
            },
            Ty::Bytea => {
                let p = self.param_of(|g| g.rng.below(4).to_string());
                atom(vec![sql(format!("length({e}) {op} ")), p])
            }
            Ty::Bit => atom(vec![sql(format!(
                "get_bit({e}, {}) = {}",
                self.g.rng.below(4),
                self.g.rng.below(2)
            ))]),
            Ty::Money => {
                let p = self.param_of(|g| g.rng.pick(&["0", "1", "1.5", "-2.5"]).into());
                atom(vec![sql(format!("{e}::numeric {op} ")), p])
            }
            Ty::Time | Ty::TimeTz => {
                let p = self.param_of(|g| g.rng.pick(&["0", "12", "23"]).into());
                atom(vec![sql(format!("extract(hour from {e}) {op} ")), p])
            }
            _ => Cond::True,
        }
    }

    /// A WHERE over `columns` (each with its expression): atoms joined by AND, OR and NOT.
    pub fn cond(&mut self, columns: &[(String, Column)], depth: usize) -> Cond {
        if depth == 0 || self.g.rng.chance(35) {
            let (e, c) = self.g.rng.pick(columns);
            return self.atom(&e, &c);
        }
        match self.g.rng.below(5) {
            0 | 1 => Cond::And((0..2).map(|_| self.cond(columns, depth - 1)).collect()),
            2 | 3 => Cond::Or((0..2).map(|_| self.cond(columns, depth - 1)).collect()),
            _ => Cond::Not(Box::new(self.cond(columns, depth - 1))),
        }
    }

    fn where_of(&mut self, columns: &[(String, Column)]) -> Vec<Node> {
        if self.g.rng.chance(10) {
            return Vec::new();
        }
        let depth = self.g.rng.below(3);
        vec![sql(" WHERE "), Node::Where(self.cond(columns, depth))]
    }

    /// A table's columns as conditions see them (`prefix` is `x.` or empty), id and the
    /// partition key and foreign key among them.
    fn columns_of(&self, t: &Table, prefix: &str) -> Vec<(String, Column)> {
        let mut cols: Vec<(String, Column)> = t
            .columns
            .iter()
            .map(|c| (format!("{prefix}{}", c.name), c.clone()))
            .collect();
        cols.push((
            format!("{prefix}id"),
            Column {
                name: "id".into(),
                ty: Ty::Int,
            },
        ));
        match t.layout {
            Layout::List => cols.push((
                format!("{prefix}part"),
                Column {
                    name: "part".into(),
                    ty: Ty::TextC,
                },
            )),
            Layout::Range => cols.push((
                format!("{prefix}part"),
                Column {
                    name: "part".into(),
                    ty: Ty::Int,
                },
            )),
            _ => {}
        }
        cols
    }

    fn table_ref(&mut self, t: &Table) -> String {
        if t.layout == Layout::Parent && self.g.rng.chance(25) {
            format!("ONLY {}", t.name)
        } else {
            t.name.clone()
        }
    }

    /// A page's LIMIT (and OFFSET): small, or deep on a big table.
    fn page(&mut self, rows: usize) -> Vec<Node> {
        let limit = if rows > 100 && self.g.rng.chance(50) {
            rows / 2 + self.g.rng.below(rows)
        } else {
            1 + self.g.rng.below(6)
        };
        let mut tail = vec![sql(" LIMIT ")];
        if self.g.rng.chance(40) {
            tail.push(self.param_of(move |_| limit.to_string()));
        } else {
            tail.push(sql(limit.to_string()));
        }
        if self.g.rng.chance(30) {
            tail.push(sql(format!(" OFFSET {}", self.g.rng.below(4))));
        }
        tail
    }

    pub fn statement(&mut self) -> Stmt {
        let fk_children: Vec<usize> = (0..self.schema.tables.len())
            .filter(|&i| self.schema.tables[i].parent.is_some())
            .collect();
        // A schema with `meddle` or `slow_for` has statements that call them more often
        // than the kinds' odds give: the defects they find need one to run beside others.
        if self.schema.session_function
            && self.g.rng.chance(15)
            && self.g.feature(Feature::SessionFunction)
        {
            let stmt = self.meddling();
            return self.finished(stmt);
        }
        if self.schema.slow_function && self.g.rng.chance(20) && self.g.feature(Feature::SlowSets) {
            let stmt = self.slow();
            return self.finished(stmt);
        }
        loop {
            let stmt = match self.g.rng.below(30) {
                0..=7 => Some(self.single()),
                8..=10 => Some(self.aggregate()),
                11..=13 if !fk_children.is_empty() => {
                    let c = self.g.rng.pick(&fk_children);
                    Some(self.join(c))
                }
                14 | 15 => {
                    let c = (!fk_children.is_empty()).then(|| self.g.rng.pick(&fk_children));
                    Some(self.subquery(c))
                }
                16 | 17 => Some(self.union()),
                18 | 19 if !self.schema.views.is_empty() => Some(self.view()),
                20 if self.g.feature(Feature::Window) => Some(self.window()),
                21 if self.g.feature(Feature::Cte) => Some(self.cte()),
                22 if self.g.feature(Feature::RecursiveCte) => Some(self.recursive()),
                23 if self.g.feature(Feature::IntersectExcept) => Some(self.set_operation()),
                24 if self.g.feature(Feature::Lateral) => Some(self.lateral(&fk_children)),
                25 if self.g.feature(Feature::CrossJoin) => Some(self.cross_join()),
                26 if self.schema.slow_function && self.g.feature(Feature::SlowSets) => {
                    Some(self.slow())
                }
                27 if self.schema.session_function && self.g.feature(Feature::SessionFunction) => {
                    Some(self.meddling())
                }
                _ => None,
            };
            if let Some(stmt) = stmt {
                return self.finished(stmt);
            }
        }
    }

    /// `stmt` with its variants and the features drawn for it.
    fn finished(&mut self, mut stmt: Stmt) -> Stmt {
        stmt.variants = self.variants;
        stmt.features = self.g.take_features();
        stmt
    }

    fn new_stmt(body: Vec<Node>, tables: Vec<usize>) -> Stmt {
        Stmt {
            body,
            tail: Vec::new(),
            order_keys: Vec::new(),
            any_of_equals: Vec::new(),
            variants: 0,
            tables,
            features: Vec::new(),
        }
    }

    fn single(&mut self) -> Stmt {
        let ti = self.g.rng.below(self.schema.tables.len());
        let t = self.schema.tables[ti].clone();
        let alias = self.g.rng.chance(30);
        let prefix = if alias { "x." } else { "" };
        let cols = self.columns_of(&t, prefix);
        let star = self.g.rng.chance(20);
        let mut items: Vec<Item> = if star {
            cols.iter().map(|(e, c)| Item::column(e, c)).collect()
        } else {
            let mut picked: Vec<Item> = cols
                .iter()
                .filter(|_| self.g.rng.chance(50))
                .map(|(e, c)| Item::column(e, c))
                .collect();
            if picked.is_empty() {
                let (e, c) = &cols[cols.len() - 1];
                picked.push(Item::column(e, c));
            }
            picked
        };
        if !star {
            self.rename(&mut items, &t);
            let whole = if alias {
                "x".to_string()
            } else {
                t.bare().to_string()
            };
            self.computed_items(&mut items, &cols, &whole);
        }
        let keyed_plain = t.keyed && t.layout == Layout::Plain;
        let mut order_keys = Vec::new();
        let mut tail = Vec::new();
        let orderable: Vec<Item> = items.iter().filter(|i| i.orderable()).cloned().collect();
        let distinct = !star
            && items.iter().all(Item::distinguishable)
            && self.g.rng.chance(12)
            && self.g.feature(Feature::Distinct);
        let mut distinct_on = String::new();
        let mut order = String::new();
        if !orderable.is_empty() && self.g.rng.chance(50) {
            let n = 1 + self.g.rng.below(2.min(orderable.len()));
            let mut keys = Vec::new();
            for item in orderable.iter().take(n) {
                // By the output column's name now and then: a bare name in ORDER BY is the
                // output column's first, whatever input column it shadows.
                let by = if item.out != item.bare() && self.g.rng.chance(40) {
                    item.out.clone()
                } else {
                    item.expr.clone()
                };
                keys.push(format!(
                    "{by}{}{}",
                    self.g.rng.pick(&["", " DESC", " ASC"]),
                    self.g.rng.pick(&["", "", " NULLS FIRST", " NULLS LAST"])
                ));
                order_keys.push(item.out.clone());
            }
            if !distinct
                && keyed_plain
                && !star
                && self.g.rng.chance(15)
                && self.g.feature(Feature::DistinctOn)
            {
                // DISTINCT ON the first key, the rest of the order down to the key: one row
                // per value, the same one every time.
                distinct_on = format!("DISTINCT ON ({}) ", keys[0].split(' ').next().unwrap());
                keys.truncate(1);
                order_keys.truncate(1);
                keys.push(format!("{prefix}id"));
                order_keys.push(self.project_id(&mut items, prefix, &cols, &t));
            }
            let paged = distinct_on.is_empty() && self.g.rng.chance(60);
            if paged {
                if !self.g.feature_allowed(Feature::TiedPage) {
                    // A total order: no page with ties (issue #50's item 6 open).
                    if !keyed_plain {
                        order_keys.clear();
                        keys.clear();
                    } else if !order_keys.contains(&"id".to_string()) {
                        keys.push(format!("{prefix}id"));
                        order_keys.push(self.project_id(&mut items, prefix, &cols, &t));
                    }
                } else {
                    self.g.feature(Feature::TiedPage);
                }
                if !keys.is_empty() {
                    tail = if !distinct
                        && self.g.rng.chance(20)
                        && self.g.feature(Feature::FetchWithTies)
                    {
                        vec![sql(format!(
                            " FETCH FIRST {} ROWS WITH TIES",
                            1 + self.g.rng.below(5)
                        ))]
                    } else {
                        self.page(t.rows.len())
                    };
                }
            }
            if !keys.is_empty() {
                order = format!(" ORDER BY {}", keys.join(", "));
            }
        }
        let from = self.table_ref(&t);
        let mut body = vec![sql(format!(
            "SELECT {}{distinct_on}",
            if distinct { "DISTINCT " } else { "" }
        ))];
        if star {
            body.push(sql("*"));
        } else {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    body.push(sql(", "));
                }
                body.extend(item.nodes());
            }
        }
        body.push(sql(format!(
            " FROM {from}{}",
            if alias { " x" } else { "" }
        )));
        body.extend(self.where_of(&cols));
        body.push(sql(order));
        let mut stmt = Self::new_stmt(body, vec![ti]);
        stmt.order_keys = order_keys;
        stmt.tail = tail;
        stmt
    }

    /// `id`, projected if it is not already, for a total order; its output name.
    fn project_id(
        &mut self,
        items: &mut Vec<Item>,
        prefix: &str,
        cols: &[(String, Column)],
        t: &Table,
    ) -> String {
        if let Some(item) = items.iter().find(|i| i.expr == format!("{prefix}id")) {
            return item.out.clone();
        }
        let (e, c) = &cols[t.columns.len()];
        let mut item = Item::column(e, c);
        if items.iter().any(|i| i.out == "id") {
            item.out = "the_id".into();
        }
        let out = item.out.clone();
        items.push(item);
        out
    }

    /// Output names now and then replaced: by the names pgcache's own SQL uses, and by other
    /// input columns' names (`SELECT a AS b, b AS a`), each output name once.
    fn rename(&mut self, items: &mut [Item], t: &Table) {
        let mut names: Vec<String> = WRAPPER_NAMES.iter().map(|n| n.to_string()).collect();
        names.extend(t.columns.iter().map(|c| c.name.clone()));
        names.push("id".into());
        for i in 0..items.len() {
            if !self.g.rng.chance(25) {
                continue;
            }
            let name = self.g.rng.pick(&names);
            if items.iter().any(|it| it.out == name) {
                continue;
            }
            if WRAPPER_NAMES.contains(&name.as_str()) && !self.g.feature(Feature::WrapperName) {
                continue;
            }
            items[i].out = name;
        }
        // Now and then one output named as pgcache's own SQL names what it wraps around a
        // statement, whatever the draws above did (three calls in ten).
        if !items.is_empty()
            && self.g.feature_allowed(Feature::WrapperName)
            && self.g.rng.chance(30)
        {
            let name = self.g.rng.pick(WRAPPER_NAMES).to_string();
            if !items.iter().any(|it| it.out == name) {
                let i = self.g.rng.below(items.len());
                self.g.feature(Feature::WrapperName);
                items[i].out = name;
            }
        }
    }

    /// Computed output columns: a row, a whole row, COALESCE/NULLIF/GREATEST/CASE of a
    /// column, a string function of one, a parameter.
    fn computed_items(&mut self, items: &mut Vec<Item>, cols: &[(String, Column)], whole: &str) {
        let out = |items: &Vec<Item>, base: &str| -> String {
            (0..)
                .map(|n| format!("{base}{n}"))
                .find(|name| !items.iter().any(|i| i.out == *name))
                .unwrap()
        };
        for _ in 0..self.g.rng.below(3) {
            let (e, c) = self.g.rng.pick(cols);
            let lit = c.ty.literal(self.g.rng.pick(c.ty.pool()));
            let (expr, ty, base) = match self.g.rng.below(8) {
                0 if self.g.feature(Feature::RowColumn) => {
                    let (e2, _) = self.g.rng.pick(cols);
                    (format!("ROW({e}, {e2})"), None, "r")
                }
                1 if self.g.feature(Feature::RowColumn) => (whole.to_string(), None, "whole"),
                2 if self.g.feature(Feature::Coalesce) => {
                    (format!("COALESCE({e}, {lit})"), Some(c.ty), "co")
                }
                3 if c.ty.comparable() && self.g.feature(Feature::NullIf) => {
                    (format!("NULLIF({e}, {lit})"), Some(c.ty), "ni")
                }
                4 if c.ty.ordered() && self.g.feature(Feature::GreatestLeast) => {
                    let f = self.g.rng.pick(&["GREATEST", "LEAST"]);
                    (format!("{f}({e}, {lit})"), Some(c.ty), "gl")
                }
                5 if c.ty.comparable() && self.g.feature(Feature::Case) => (
                    format!(
                        "CASE WHEN {e} = {lit} THEN 'same' WHEN {e} IS NULL THEN NULL ELSE 'other' END"
                    ),
                    Some(Ty::Text),
                    "cs",
                ),
                6 if c.ty.texty() && self.g.feature(Feature::StringFunctions) => {
                    let f = self.g.rng.pick(&[
                        format!("substr({e}, 2)"),
                        format!("length({e})"),
                        format!("lpad({e}, 3, '*')"),
                        format!("initcap({e})"),
                        format!("split_part({e}, '_', 1)"),
                        format!("md5({e})"),
                    ]);
                    (f, None, "sf")
                }
                7 if self.g.feature(Feature::ParamInProjection) => {
                    let p = self.g.rng.below(100).to_string();
                    let name = out(items, "p");
                    // A parameter's value is only known at render time: kept as a node.
                    items.push(Item {
                        expr: String::new(),
                        param: Some(vec![p; self.variants]),
                        out: name,
                        ty: None,
                    });
                    continue;
                }
                _ => continue,
            };
            let name = out(items, base);
            items.push(Item {
                expr,
                param: None,
                out: name,
                ty,
            });
        }
    }
    fn aggregate(&mut self) -> Stmt {
        let ti = self.g.rng.below(self.schema.tables.len());
        let t = self.schema.tables[ti].clone();
        let cols = self.columns_of(&t, "");
        let mut items = Vec::new();
        let group: Vec<(String, Column)> = cols
            .iter()
            .filter(|(_, c)| (c.ty.ordered() || c.ty == Ty::Bool) && c.ty.spelled_by_value())
            .cloned()
            .collect();
        let grouped = !group.is_empty() && self.g.rng.chance(70);
        let mut by = String::new();
        let mut order_keys = Vec::new();
        let mut any_of_equals = Vec::new();
        if grouped {
            let (e, _) = self.g.rng.pick(&group);
            items.push(format!("{e} AS g"));
            any_of_equals.push("g".to_string());
            by = e;
        }
        items.push("count(*) AS n".into());
        let sums: Vec<&(String, Column)> = cols.iter().filter(|(_, c)| c.ty.summable()).collect();
        if !sums.is_empty() && self.g.rng.chance(60) {
            items.push(format!("sum({}) AS s", self.g.rng.pick(&sums).0));
        }
        let ordered: Vec<&(String, Column)> = cols
            .iter()
            .filter(|(_, c)| c.ty.has_min_max() && c.ty.spelled_by_value())
            .collect();
        if !ordered.is_empty() && self.g.rng.chance(60) {
            let (e, _) = self.g.rng.pick(&ordered);
            items.push(format!("min({e}) AS mn, max({e}) AS mx"));
            any_of_equals.extend(["mn".to_string(), "mx".to_string()]);
        }
        let mut body = vec![sql(format!("SELECT {} FROM {}", items.join(", "), t.name))];
        body.extend(self.where_of(&cols));
        if grouped {
            // ROLLUP and CUBE add a total row (its key NULL) to the groups.
            let by = if self.g.rng.chance(20) && self.g.feature(Feature::RollupCube) {
                format!("{}({by})", self.g.rng.pick(&["ROLLUP", "CUBE"]))
            } else {
                by
            };
            body.push(sql(format!(" GROUP BY {by}")));
            if self.g.rng.chance(30) {
                body.push(sql(" HAVING count(*) > "));
                body.push(self.param_of(|g| g.rng.below(3).to_string()));
            }
            if self.g.rng.chance(50) {
                body.push(sql(" ORDER BY g"));
                order_keys.push("g".into());
            }
        }
        let mut stmt = Self::new_stmt(body, vec![ti]);
        stmt.order_keys = order_keys;
        stmt.any_of_equals = any_of_equals;
        stmt
    }

    /// Projection items `x.col AS x_col` of a side.
    fn side_items(&mut self, cols: &[(String, Column)], alias: &str) -> Vec<String> {
        let mut items = vec![format!("{alias}.id AS {alias}_id")];
        for (e, c) in cols {
            if c.name != "id" && self.g.rng.chance(40) {
                items.push(format!("{e} AS {alias}_{}", c.name));
            }
        }
        items
    }

    fn join(&mut self, ci: usize) -> Stmt {
        let child = self.schema.tables[ci].clone();
        let pi = child.parent.unwrap();
        let parent = self.schema.tables[pi].clone();
        let ccols = self.columns_of(&child, "c.");
        let pcols = self.columns_of(&parent, "p.");
        let mut items = self.side_items(&ccols, "c");
        items.extend(self.side_items(&pcols, "p"));
        let kind = match self.g.rng.below(10) {
            0..=3 => "LEFT JOIN",
            4 if self.g.feature(Feature::RightJoin) => "RIGHT JOIN",
            5 if self.g.feature(Feature::FullJoin) => "FULL JOIN",
            _ => "JOIN",
        };
        let mut body = vec![sql(format!(
            "SELECT {} FROM {} c {kind} {} p ON p.id = c.ref",
            items.join(", "),
            child.name,
            parent.name
        ))];
        let mut both = ccols.clone();
        if self.g.rng.chance(50) {
            both.extend(pcols);
        }
        body.extend(self.where_of(&both));
        let mut stmt = Self::new_stmt(body, vec![ci, pi]);
        if self.g.rng.chance(40) {
            stmt.body.push(sql(" ORDER BY c_id"));
            stmt.order_keys.push("c_id".into());
            if self.g.rng.chance(50) && child.keyed && child.layout == Layout::Plain {
                stmt.tail = self.page(child.rows.len());
            }
        }
        stmt
    }

    fn subquery(&mut self, child: Option<usize>) -> Stmt {
        let n = self.schema.tables.len();
        let (outer, inner, outer_col, inner_col) = match child {
            Some(ci) if self.g.rng.chance(50) => {
                (ci, self.schema.tables[ci].parent.unwrap(), "ref", "id")
            }
            Some(ci) => {
                // EXISTS: the parent's rows that have (or lack) a child.
                let pi = self.schema.tables[ci].parent.unwrap();
                let parent = self.schema.tables[pi].clone();
                let child_t = self.schema.tables[ci].clone();
                let ccols = self.columns_of(&child_t, "c.");
                let pcols = self.columns_of(&parent, "p.");
                let not = if self.g.rng.chance(30) { "NOT " } else { "" };
                let mut items = self.side_items(&pcols, "p");
                items.truncate(3);
                let depth = self.g.rng.below(2);
                let inner_cond = self.cond(&ccols, depth);
                let mut body = vec![sql(format!(
                    "SELECT {} FROM {} p WHERE {not}EXISTS (SELECT 1 FROM {} c WHERE c.ref = p.id AND ",
                    items.join(", "),
                    parent.name,
                    child_t.name
                ))];
                body.push(Node::Where(inner_cond));
                body.push(sql(")"));
                if self.g.rng.chance(50) {
                    body.push(sql(" AND "));
                    let (e, c) = self.g.rng.pick(&pcols);
                    body.push(Node::Where(self.atom(&e, &c)));
                }
                return Self::new_stmt(body, vec![pi, ci]);
            }
            None => (self.g.rng.below(n), self.g.rng.below(n), "id", "id"),
        };
        let ot = self.schema.tables[outer].clone();
        let it = self.schema.tables[inner].clone();
        let ocols = self.columns_of(&ot, "o.");
        let icols = self.columns_of(&it, "i.");
        let mut items = self.side_items(&ocols, "o");
        items.truncate(3);
        let depth = self.g.rng.below(3);
        let inner_cond = self.cond(&icols, depth);
        let mut body = vec![sql(format!(
            "SELECT {} FROM {} o WHERE o.{outer_col} IN (SELECT i.{inner_col} FROM {} i WHERE ",
            items.join(", "),
            ot.name,
            it.name
        ))];
        body.push(Node::Where(inner_cond));
        body.push(sql(")"));
        if self.g.rng.chance(50) {
            body.push(sql(" AND "));
            let (e, c) = self.g.rng.pick(&ocols);
            body.push(Node::Where(self.atom(&e, &c)));
        }
        Self::new_stmt(body, vec![outer, inner])
    }

    fn union(&mut self) -> Stmt {
        let n = self.schema.tables.len();
        let (a, b) = (self.g.rng.below(n), self.g.rng.below(n));
        let mut body = Vec::new();
        for (i, ti) in [a, b].into_iter().enumerate() {
            let t = self.schema.tables[ti].clone();
            let cols = self.columns_of(&t, "");
            let (e, _) = self.g.rng.pick(
                &t.columns
                    .iter()
                    .map(|c| (c.name.clone(), c.clone()))
                    .collect::<Vec<_>>(),
            );
            if i > 0 {
                body.push(sql(self.g.rng.pick(&[" UNION ", " UNION ALL "])));
            }
            body.push(sql(format!("SELECT id, {e}::text AS v FROM {}", t.name)));
            body.extend(self.where_of(&cols));
        }
        let mut stmt = Self::new_stmt(body, vec![a, b]);
        if self.g.rng.chance(30) {
            stmt.body.push(sql(" ORDER BY id"));
            stmt.order_keys.push("id".into());
        }
        stmt
    }

    /// Window functions over one table: counts and sums per partition, ranks, and row numbers
    /// and lags over a key (a total order).
    fn window(&mut self) -> Stmt {
        let ti = self.g.rng.below(self.schema.tables.len());
        let t = self.schema.tables[ti].clone();
        let cols = self.columns_of(&t, "");
        let (e, c) = self.g.rng.pick(&cols);
        let mut items = vec!["id".to_string(), format!("{e} AS v")];
        if c.ty.comparable() {
            items.push(format!("count(*) OVER (PARTITION BY {e}) AS w"));
        }
        if c.ty.ordered() {
            items.push(format!("rank() OVER (ORDER BY {e}) AS rk"));
        }
        if let Some((s, _)) = cols.iter().find(|(_, c)| c.ty.summable()) {
            items.push(format!("sum({s}) OVER () AS total"));
        }
        if t.keyed && t.layout == Layout::Plain {
            items.push("row_number() OVER (ORDER BY id DESC) AS rn".into());
            items.push(format!("lag({e}) OVER (ORDER BY id) AS prev"));
        }
        let mut body = vec![sql(format!("SELECT {} FROM {}", items.join(", "), t.name))];
        body.extend(self.where_of(&cols));
        Self::new_stmt(body, vec![ti])
    }

    /// A WITH query over one table, sometimes MATERIALIZED, read with a condition of its own.
    fn cte(&mut self) -> Stmt {
        let ti = self.g.rng.below(self.schema.tables.len());
        let t = self.schema.tables[ti].clone();
        let cols = self.columns_of(&t, "");
        let picked: Vec<(String, Column)> = cols
            .iter()
            .filter(|(e, _)| e == "id" || self.g.rng.chance(50))
            .cloned()
            .collect();
        let list: Vec<String> = picked.iter().map(|(e, _)| e.clone()).collect();
        let materialized = self.g.rng.pick(&["", "MATERIALIZED ", "NOT MATERIALIZED "]);
        let mut body = vec![sql(format!(
            "WITH c AS {materialized}(SELECT {} FROM {}",
            list.join(", "),
            t.name
        ))];
        body.extend(self.where_of(&cols));
        body.push(sql(") SELECT * FROM c"));
        body.extend(self.where_of(&picked));
        let mut stmt = Self::new_stmt(body, vec![ti]);
        if self.g.rng.chance(40) && t.keyed && t.layout == Layout::Plain {
            stmt.body.push(sql(" ORDER BY id"));
            stmt.order_keys.push("id".into());
        }
        stmt
    }

    /// WITH RECURSIVE counting up to a parameter, joined to a table's rows by id.
    fn recursive(&mut self) -> Stmt {
        let ti = self.g.rng.below(self.schema.tables.len());
        let t = self.schema.tables[ti].clone();
        let c = self.g.rng.pick(&t.columns);
        let mut body = vec![sql(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < ",
        )];
        body.push(self.param_of(|g| (1 + g.rng.below(6)).to_string()));
        body.push(sql(format!(
            "::integer) SELECT r.n, t.{} FROM r JOIN {} t ON t.id = r.n",
            c.name, t.name
        )));
        Self::new_stmt(body, vec![ti])
    }

    /// INTERSECT or EXCEPT [ALL] of two tables' rows.
    fn set_operation(&mut self) -> Stmt {
        let mut stmt = self.union();
        for node in &mut stmt.body {
            if let Node::Sql(s) = node
                && (s == " UNION " || s == " UNION ALL ")
            {
                *s = self
                    .g
                    .rng
                    .pick(&[" INTERSECT ", " INTERSECT ALL ", " EXCEPT ", " EXCEPT ALL "])
                    .to_string();
            }
        }
        stmt
    }

    /// LATERAL: a parent's rows each with its first children (a total order), or any table's
    /// rows each with a count over another.
    fn lateral(&mut self, fk_children: &[usize]) -> Stmt {
        let keyed_children: Vec<usize> = fk_children
            .iter()
            .copied()
            .filter(|&c| {
                let t = &self.schema.tables[c];
                t.keyed && t.layout == Layout::Plain
            })
            .collect();
        if !keyed_children.is_empty() && self.g.rng.chance(50) {
            let ci = self.g.rng.pick(&keyed_children);
            let child = self.schema.tables[ci].clone();
            let pi = child.parent.unwrap();
            let parent = self.schema.tables[pi].clone();
            let c = self.g.rng.pick(&child.columns);
            let pcols = self.columns_of(&parent, "p.");
            let mut body = vec![sql(format!(
                "SELECT p.id AS p_id, l.c_id, l.v FROM {} p CROSS JOIN LATERAL \
                 (SELECT c.id AS c_id, c.{} AS v FROM {} c WHERE c.ref = p.id ORDER BY c.id LIMIT ",
                parent.name, c.name, child.name
            ))];
            body.push(self.param_of(|g| (1 + g.rng.below(3)).to_string()));
            body.push(sql(") l"));
            body.extend(self.where_of(&pcols));
            return Self::new_stmt(body, vec![pi, ci]);
        }
        let n = self.schema.tables.len();
        let (a, b) = (self.g.rng.below(n), self.g.rng.below(n));
        let (ta, tb) = (self.schema.tables[a].clone(), self.schema.tables[b].clone());
        let bcols = self.columns_of(&tb, "b.");
        let depth = self.g.rng.below(2);
        let inner = self.cond(&bcols, depth);
        let body = vec![
            sql(format!(
                "SELECT a.id, l.cnt FROM {} a CROSS JOIN LATERAL (SELECT count(*) AS cnt FROM {} b \
                 WHERE b.id <= a.id AND ",
                ta.name, tb.name
            )),
            Node::Where(inner),
            sql(") l WHERE a.id <= 30"),
        ];
        Self::new_stmt(body, vec![a, b])
    }

    /// A CROSS JOIN of two tables' first rows.
    fn cross_join(&mut self) -> Stmt {
        let n = self.schema.tables.len();
        let (a, b) = (self.g.rng.below(n), self.g.rng.below(n));
        let (ta, tb) = (self.schema.tables[a].clone(), self.schema.tables[b].clone());
        let ac = self.g.rng.pick(&ta.columns);
        let bc = self.g.rng.pick(&tb.columns);
        let mut both = self.columns_of(&ta, "a.");
        both.extend(self.columns_of(&tb, "b."));
        let mut body = vec![sql(format!(
            "SELECT a.id AS a_id, a.{} AS a_v, b.id AS b_id, b.{} AS b_v FROM {} a CROSS JOIN {} b \
             WHERE a.id <= 6 AND b.id <= 6",
            ac.name, bc.name, ta.name, tb.name
        ))];
        if self.g.rng.chance(60) {
            body.push(sql(" AND "));
            let depth = self.g.rng.below(2);
            body.push(Node::Where(self.cond(&both, depth)));
        }
        Self::new_stmt(body, vec![a, b])
    }

    /// A statement that calls `slow_for`, which sleeps for its argument's set: batched with
    /// others, the sets together may pass statement_timeout where alone none does (issue #70
    /// item 4). Four variants, each slow: together they take longer than the round's
    /// statement_timeout, each alone well within it.
    fn slow(&mut self) -> Stmt {
        let ti = self.g.rng.below(self.schema.tables.len());
        let t = self.schema.tables[ti].clone();
        self.variants = 4;
        // `slow_for` in the projection runs once a call (once a set, batched), whatever rows
        // the table holds; each variant counts other rows, so none shares another's fill.
        let mut body = vec![sql(format!(
            "SELECT (SELECT count(*) FROM {} WHERE id <= ",
            t.name
        ))];
        let mut k = 0;
        body.push(self.param_of(|_| {
            k += 1;
            k.to_string()
        }));
        body.push(sql(") AS n, slow_for("));
        body.push(self.param_of(|_| "1".to_string()));
        body.push(sql(") AS s"));
        Self::new_stmt(body, vec![ti])
    }

    /// A statement that calls `meddle`, IMMUTABLE by its label, which changes its session's
    /// settings and takes an advisory lock (issue #70 item 2): nothing of it may reach
    /// another statement's run.
    fn meddling(&mut self) -> Stmt {
        let ti = self.g.rng.below(self.schema.tables.len());
        let t = self.schema.tables[ti].clone();
        let cols = self.columns_of(&t, "");
        let mut body = vec![sql(format!(
            "SELECT id, meddle(id) AS m FROM {} WHERE id <= ",
            t.name
        ))];
        body.push(self.param_of(|g| (1 + g.rng.below(8)).to_string()));
        if self.g.rng.chance(50) {
            body.push(sql(" AND "));
            let (e, c) = self.g.rng.pick(&cols);
            body.push(Node::Where(self.atom(&e, &c)));
        }
        Self::new_stmt(body, vec![ti])
    }

    fn view(&mut self) -> Stmt {
        let vi = self.g.rng.below(self.schema.views.len());
        let v = self.schema.views[vi].clone();
        let cols = vec![
            (
                "id".to_string(),
                Column {
                    name: "id".into(),
                    ty: Ty::Int,
                },
            ),
            (v.column.name.clone(), v.column.clone()),
        ];
        let mut body = vec![sql(format!("SELECT * FROM {}", v.name))];
        body.extend(self.where_of(&cols));
        Self::new_stmt(body, vec![v.table, self.schema.tables.len() + vi])
    }
}
