//! A WHERE over one table, read for what a changed row's new values make of it: whether
//! the row may satisfy it. Pure: no Redis, no PostgreSQL.
//!
//! A condition's value is the set of truth values it may take (`Truth`): TRUE, FALSE,
//! NULL, or any mix of them when a piece is not decided here (an operator not read, a
//! value the change did not carry, a collation whose order is a locale's). AND, OR and
//! NOT combine the sets by SQL's three-valued logic, so the verdict "may be TRUE" is never
//! "no" where PostgreSQL would say "yes".
//!
//! - `order`: where a row sorts against a full page's last row (`ORDER BY ... LIMIT`).
//! - `bind`: types a condition's operands by the table's columns and the parameters.
//! - `eval`: weighs a bound condition on a row. `pinned`: a column pinned to values, for
//!   an index by value.
//! - `ranged`: a column bounded on one side, for an index ordered by the bound.
//! - `value`: the one table of the types compared exactly, and how they are read.
//! - `pattern`: LIKE and ILIKE. `json`: jsonb's `?`, `?|`, `?&`, `@>`.
//! - `array`: array literals (`= ANY($1)`). `time`: ISO dates and timestamps.

mod array;
mod bind;
mod decimal;
mod eval;
mod json;
pub mod order;
mod pattern;
mod pinned;
mod ranged;
mod time;
mod value;

pub use pinned::Pinned;
pub use ranged::{KeyRange, OrdKey, Ranged};
pub use value::{Collation, SqlType};

/// Where an index finds the results a row may enter, by its value of a pinned column
/// (`Pinned::row_key`) or a bounded one (`Ranged::range`), beside the results filed under
/// no key and no bound, which it weighs against every row.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// None: the row's value is NULL, which equals nothing and passes no bound.
    Nowhere,
    /// Those filed under this key of the pinned column's value (`Pinned::keys`).
    Key(String),
    /// Those whose bound lies in this range (`Ranged::key`).
    Range(KeyRange),
    /// Every result: the value is not known, or not read here.
    Everywhere,
}

/// A changed row's new value of a column, as the change carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewValue {
    Null,
    /// Canonical text (booleans as `true`/`false`).
    Text(String),
}

/// A row a change wrote (inserted, or updated to), by the columns some statement reads in
/// its WHERE; a column not here is unknown, and may match anything.
pub type EnteringRow = Vec<(String, NewValue)>;

/// The truth values a condition may take, as a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truth(u8);

impl Truth {
    pub const TRUE: Truth = Truth(1);
    pub const FALSE: Truth = Truth(2);
    pub const NULL: Truth = Truth(4);
    pub const ANY: Truth = Truth(7);
    const EMPTY: Truth = Truth(0);

    fn of(b: bool) -> Truth {
        if b { Truth::TRUE } else { Truth::FALSE }
    }

    pub fn may_be_true(self) -> bool {
        self.0 & 1 != 0
    }

    fn union(self, other: Truth) -> Truth {
        Truth(self.0 | other.0)
    }

    fn each(self) -> impl Iterator<Item = Truth> {
        [Truth::TRUE, Truth::FALSE, Truth::NULL]
            .into_iter()
            .filter(move |t| self.0 & t.0 != 0)
    }

    fn pairwise(self, other: Truth, f: impl Fn(Truth, Truth) -> Truth) -> Truth {
        self.each().fold(Truth::EMPTY, |acc, a| {
            other.each().fold(acc, |acc, b| acc.union(f(a, b)))
        })
    }

    fn and(self, other: Truth) -> Truth {
        self.pairwise(other, |a, b| {
            if a == Truth::FALSE || b == Truth::FALSE {
                Truth::FALSE
            } else if a == Truth::NULL || b == Truth::NULL {
                Truth::NULL
            } else {
                Truth::TRUE
            }
        })
    }

    fn or(self, other: Truth) -> Truth {
        self.pairwise(other, |a, b| {
            if a == Truth::TRUE || b == Truth::TRUE {
                Truth::TRUE
            } else if a == Truth::NULL || b == Truth::NULL {
                Truth::NULL
            } else {
                Truth::FALSE
            }
        })
    }

    fn not(self) -> Truth {
        self.each().fold(Truth::EMPTY, |acc, t| {
            acc.union(match t {
                Truth::TRUE => Truth::FALSE,
                Truth::FALSE => Truth::TRUE,
                _ => Truth::NULL,
            })
        })
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    pub fn named(op: &str) -> Option<Cmp> {
        Some(match op {
            "=" => Cmp::Eq,
            "<>" | "!=" => Cmp::Ne,
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            ">" => Cmp::Gt,
            ">=" => Cmp::Ge,
            _ => return None,
        })
    }
}

/// `IS [NOT] TRUE | FALSE | UNKNOWN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolTest {
    True,
    NotTrue,
    False,
    NotFalse,
    Unknown,
    NotUnknown,
}

/// jsonb's key operators: `?`, `?|`, `?&`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    One,
    Any,
    All,
}

/// A constant's type as the grammar gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literal {
    Number,
    Bool,
    /// A quoted string or NULL: its type is the other operand's.
    Untyped,
}

/// A value in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(String),
    /// `$n` (1-based).
    Param(usize),
    /// A constant's text (None: NULL).
    Const(Option<String>, Literal),
    /// `upper(arg)` / `lower(arg)`, folding by `collation` (set when bound).
    Fold {
        upper: bool,
        arg: Box<Expr>,
        collation: Collation,
    },
    /// `a || b`, of text.
    Concat(Box<Expr>, Box<Expr>),
    /// jsonb `doc -> key` (`as_text`: `->>`): a text key names an object's field, an
    /// integer one (`index`, set when bound) an array's element.
    JsonField {
        doc: Box<Expr>,
        key: Box<Expr>,
        as_text: bool,
        index: bool,
    },
    /// `arg::to`, `to` as `format_type` spells it.
    Cast(Box<Expr>, String),
    /// `date_trunc(unit, arg)` of a timestamp without time zone.
    Trunc {
        unit: Box<Expr>,
        arg: Box<Expr>,
    },
    /// `arg AT TIME ZONE zone` (`timezone(zone, arg)`): a timestamptz as the zone's wall
    /// clock, or (`to_zoned`, set when bound) a timestamp read as the zone's wall clock.
    AtZone {
        zone: Box<Expr>,
        arg: Box<Expr>,
        to_zoned: bool,
    },
    /// A timestamp's date: binding makes it of `arg::date`.
    DateOf(Box<Expr>),
}

/// A condition. `ty` fields are the type the operands compare as, set when bound.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    /// Not decided here, and why.
    Unknown(String),
    And(Vec<Pred>),
    Or(Vec<Pred>),
    Not(Box<Pred>),
    Compare {
        op: Cmp,
        left: Expr,
        right: Expr,
        ty: SqlType,
    },
    /// `left op ANY(array)` / `left op ALL(array)`.
    Quantified {
        op: Cmp,
        left: Expr,
        array: Expr,
        all: bool,
        ty: SqlType,
    },
    IsNull(Expr),
    Test(Box<Pred>, BoolTest),
    /// A boolean value as a condition (`WHERE active`).
    Boolean(Expr),
    Like {
        text: Expr,
        pattern: Expr,
        fold: bool,
        ty: SqlType,
    },
    /// `text ~ pattern` (`~*` when `fold`).
    Regex {
        text: Expr,
        pattern: Expr,
        fold: bool,
    },
    JsonKeys {
        doc: Expr,
        keys: Expr,
        how: Keys,
    },
    /// `doc @> part`.
    JsonContains {
        doc: Expr,
        part: Expr,
    },
}

/// What binding needs to know: the table's columns and the statement's parameters.
pub trait Scope {
    /// The column's type as `format_type` spells it, and its collation.
    fn column(&self, name: &str) -> Option<(String, Collation)>;
    /// Whether the column's values are rows (a composite type): `IS NULL` is TRUE of a row
    /// whose every field is NULL, and `IS NOT NULL` is not its negation.
    fn row_valued(&self, name: &str) -> bool;
    /// `$n`'s type as `format_type` spells it.
    fn param(&self, n: usize) -> Option<String>;
    /// The database's default collation (parameters' and constants').
    fn default_collation(&self) -> Collation;
}

impl Pred {
    /// Why the condition is never decided here (every row may satisfy it whatever its
    /// values), if it is not.
    pub fn undecided(&self) -> Option<String> {
        match self {
            Pred::Unknown(why) => Some(why.clone()),
            // TRUE (no condition) is decided: every row satisfies it.
            Pred::And(items) => {
                let reasons: Vec<String> =
                    items.iter().map(Pred::undecided).collect::<Option<_>>()?;
                reasons.into_iter().next()
            }
            Pred::Or(items) => items.iter().find_map(Pred::undecided),
            Pred::Not(inner) | Pred::Test(inner, _) => inner.undecided(),
            _ => None,
        }
    }

    /// Whether it is never TRUE on a row whose every column is NULL (a left join's
    /// NULL-extended row): its operators return NULL for a NULL operand, as PostgreSQL's
    /// comparisons, patterns and jsonb operators do, or it is `IS NOT NULL`. Unknown
    /// pieces, `IS NULL` and the boolean tests are not.
    pub fn rejects_null_rows(&self) -> bool {
        match self {
            Pred::Compare { .. }
            | Pred::Quantified { .. }
            | Pred::Boolean(_)
            | Pred::Like { .. }
            | Pred::Regex { .. }
            | Pred::JsonKeys { .. }
            | Pred::JsonContains { .. } => !self.columns().is_empty(),
            Pred::And(items) => items.iter().any(Pred::rejects_null_rows),
            Pred::Or(items) => !items.is_empty() && items.iter().all(Pred::rejects_null_rows),
            Pred::Not(inner) => match &**inner {
                Pred::IsNull(expr) => {
                    let mut columns = Vec::new();
                    expr.columns(&mut columns);
                    !columns.is_empty()
                }
                inner => inner.rejects_null_rows(),
            },
            Pred::Unknown(_) | Pred::IsNull(_) | Pred::Test(..) => false,
        }
    }

    /// Whether it is no condition at all (an empty AND, or ANDs of those).
    pub fn is_true(&self) -> bool {
        matches!(self, Pred::And(items) if items.iter().all(Pred::is_true))
    }

    /// Its top-level conjuncts, nested ANDs (a BETWEEN's) flattened.
    fn conjuncts(&self) -> Vec<&Pred> {
        match self {
            Pred::And(items) => items.iter().flat_map(Pred::conjuncts).collect(),
            other => vec![other],
        }
    }

    /// The columns it reads.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit_exprs(&mut |e| e.columns(&mut out));
        out.sort();
        out.dedup();
        out
    }

    fn visit_exprs(&self, f: &mut dyn FnMut(&Expr)) {
        match self {
            Pred::Unknown(_) => {}
            Pred::And(items) | Pred::Or(items) => items.iter().for_each(|p| p.visit_exprs(f)),
            Pred::Not(inner) | Pred::Test(inner, _) => inner.visit_exprs(f),
            Pred::Compare { left, right, .. } => {
                f(left);
                f(right);
            }
            Pred::Quantified { left, array, .. } => {
                f(left);
                f(array);
            }
            Pred::IsNull(e) | Pred::Boolean(e) => f(e),
            Pred::Like { text, pattern, .. } | Pred::Regex { text, pattern, .. } => {
                f(text);
                f(pattern);
            }
            Pred::JsonKeys { doc, keys, .. } => {
                f(doc);
                f(keys);
            }
            Pred::JsonContains { doc, part } => {
                f(doc);
                f(part);
            }
        }
    }
}

impl Expr {
    fn columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Column(c) => out.push(c.clone()),
            Expr::Fold { arg, .. } | Expr::Cast(arg, _) | Expr::DateOf(arg) => arg.columns(out),
            Expr::Concat(a, b)
            | Expr::JsonField { doc: a, key: b, .. }
            | Expr::Trunc { unit: a, arg: b }
            | Expr::AtZone {
                zone: a, arg: b, ..
            } => {
                a.columns(out);
                b.columns(out);
            }
            Expr::Param(_) | Expr::Const(..) => {}
        }
    }

    /// Whether its value depends on the parameters and constants only.
    fn is_bound_value(&self) -> bool {
        let mut columns = Vec::new();
        self.columns(&mut columns);
        columns.is_empty()
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
