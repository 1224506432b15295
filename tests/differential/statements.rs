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

use crate::schema::{Column, Layout, Schema, Table, Ty};
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
        match self.g.rng.below(12) {
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
        loop {
            let stmt = match self.g.rng.below(20) {
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
                _ => None,
            };
            if let Some(mut stmt) = stmt {
                stmt.variants = self.variants;
                stmt.features = self.g.take_features();
                return stmt;
            }
        }
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
        let mut projected: Vec<(String, Column)> = if star {
            cols.clone()
        } else {
            let mut p: Vec<(String, Column)> = cols
                .iter()
                .filter(|_| self.g.rng.chance(50))
                .cloned()
                .collect();
            if p.is_empty() {
                p.push(cols[cols.len() - 1].clone());
            }
            p
        };
        let mut order_keys = Vec::new();
        let mut tail = Vec::new();
        let orderable: Vec<(String, Column)> = projected
            .iter()
            .filter(|(_, c)| c.ty.ordered() || c.ty == Ty::Bool)
            .cloned()
            .collect();
        let mut order = String::new();
        if !orderable.is_empty() && self.g.rng.chance(50) {
            let n = 1 + self.g.rng.below(2.min(orderable.len()));
            let mut keys = Vec::new();
            for (e, c) in orderable.iter().take(n) {
                keys.push(format!(
                    "{e}{}{}",
                    self.g.rng.pick(&["", " DESC", " ASC"]),
                    self.g.rng.pick(&["", "", " NULLS FIRST", " NULLS LAST"])
                ));
                order_keys.push(c.name.clone());
            }
            if self.g.rng.chance(60) {
                if !self.g.feature_allowed(Feature::TiedPage) {
                    // A total order: no page with ties (issue #50's item 6 open).
                    if !t.keyed || t.layout != Layout::Plain {
                        order_keys.clear();
                        keys.clear();
                    } else if !order_keys.contains(&"id".to_string()) {
                        keys.push(format!("{prefix}id"));
                        order_keys.push("id".into());
                        if !star && !projected.iter().any(|(_, c)| c.name == "id") {
                            projected
                                .push((format!("{prefix}id"), cols[t.columns.len()].1.clone()));
                        }
                    }
                } else {
                    self.g.feature(Feature::TiedPage);
                }
                if !keys.is_empty() {
                    tail = self.page(t.rows.len());
                }
            }
            if !keys.is_empty() {
                order = format!(" ORDER BY {}", keys.join(", "));
            }
        }
        let list = if star {
            "*".to_string()
        } else {
            projected
                .iter()
                .map(|(e, _)| e.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let from = self.table_ref(&t);
        let mut body = vec![sql(format!(
            "SELECT {list} FROM {from}{}",
            if alias { " x" } else { "" }
        ))];
        body.extend(self.where_of(&cols));
        body.push(sql(order));
        let mut stmt = Self::new_stmt(body, vec![ti]);
        stmt.order_keys = order_keys;
        stmt.tail = tail;
        stmt
    }

    fn aggregate(&mut self) -> Stmt {
        let ti = self.g.rng.below(self.schema.tables.len());
        let t = self.schema.tables[ti].clone();
        let cols = self.columns_of(&t, "");
        let mut items = Vec::new();
        let group: Vec<(String, Column)> = cols
            .iter()
            .filter(|(_, c)| c.ty.ordered() || c.ty == Ty::Bool)
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
        let ordered: Vec<&(String, Column)> = cols.iter().filter(|(_, c)| c.ty.ordered()).collect();
        if !ordered.is_empty() && self.g.rng.chance(60) {
            let (e, _) = self.g.rng.pick(&ordered);
            items.push(format!("min({e}) AS mn, max({e}) AS mx"));
            any_of_equals.extend(["mn".to_string(), "mx".to_string()]);
        }
        let mut body = vec![sql(format!("SELECT {} FROM {}", items.join(", "), t.name))];
        body.extend(self.where_of(&cols));
        if grouped {
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
        let kind = if self.g.rng.chance(40) {
            "LEFT JOIN"
        } else {
            "JOIN"
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
