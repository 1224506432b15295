//! A column a condition bounds on one side (`col > $1`, `col <= 5`, `col BETWEEN $1 AND $2`):
//! results are kept ordered by their bound, so a row is weighed only against the results
//! whose bound its value passes (those with `bound < value` for `col > bound`), not against
//! every result of the statement.

use super::eval::Val;
use super::order::orderable;
use super::value::{self, Decimal, Typed};
use super::*;
use std::cmp::Ordering;
use std::ops::Bound;

/// A top-level conjunct `column op bound`, the column on the left.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranged {
    pub column: String,
    ty: SqlType,
    op: Cmp,
    bound: Expr,
}

/// The bounds a result's key lies within.
pub type KeyRange = (Bound<OrdKey>, Bound<OrdKey>);

/// A value of an ordered type, owned, ordered as PostgreSQL orders it.
#[derive(Debug, Clone)]
pub enum OrdKey {
    Number(Decimal),
    Float(f64),
    Bool(bool),
    Text(String),
    Uuid(String),
    Date(i64),
    Time(i128),
}

impl OrdKey {
    fn of(typed: Typed) -> Option<OrdKey> {
        Some(match typed {
            Typed::Number(d) => OrdKey::Number(d),
            Typed::Real(f) => OrdKey::Float(f.into()),
            Typed::Double(f) => OrdKey::Float(f),
            Typed::Bool(b) => OrdKey::Bool(b),
            Typed::Text(t) => OrdKey::Text(t.to_string()),
            Typed::Uuid(u) => OrdKey::Uuid(u),
            Typed::Date(d) => OrdKey::Date(d),
            Typed::Time(t) => OrdKey::Time(t),
            Typed::Json(_) => return None,
        })
    }
}

impl Ord for OrdKey {
    fn cmp(&self, other: &Self) -> Ordering {
        use OrdKey::*;
        match (self, other) {
            (Number(a), Number(b)) => a.cmp(b),
            // NaN last and equal to itself, -0 equal to 0, as float8's btree orders them.
            (Float(a), Float(b)) => match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            },
            (Bool(a), Bool(b)) => a.cmp(b),
            (Text(a), Text(b)) | (Uuid(a), Uuid(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Date(a), Date(b)) => a.cmp(b),
            (Time(a), Time(b)) => a.cmp(b),
            // One statement's keys are all of one type; across types, any fixed order.
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl OrdKey {
    fn rank(&self) -> u8 {
        match self {
            OrdKey::Number(_) => 0,
            OrdKey::Float(_) => 1,
            OrdKey::Bool(_) => 2,
            OrdKey::Text(_) => 3,
            OrdKey::Uuid(_) => 4,
            OrdKey::Date(_) => 5,
            OrdKey::Time(_) => 6,
        }
    }
}

impl PartialOrd for OrdKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for OrdKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OrdKey {}

impl Pred {
    /// The first top-level conjunct that bounds a column of an ordered type on one side by
    /// a value of the parameters and constants.
    pub fn ranged(&self) -> Option<Ranged> {
        self.conjuncts().into_iter().find_map(|p| match p {
            Pred::Compare {
                op: op @ (Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge),
                left,
                right,
                ty,
            } if orderable(*ty) => {
                let (column, bound, op) = match (left, right) {
                    (Expr::Column(c), b) if b.is_bound_value() => (c, b, *op),
                    (b, Expr::Column(c)) if b.is_bound_value() => (c, b, mirrored(*op)),
                    _ => return None,
                };
                Some(Ranged {
                    column: column.clone(),
                    ty: *ty,
                    op,
                    bound: bound.clone(),
                })
            }
            _ => None,
        })
    }
}

/// `a op b` as `b op' a`.
fn mirrored(op: Cmp) -> Cmp {
    match op {
        Cmp::Lt => Cmp::Gt,
        Cmp::Le => Cmp::Ge,
        Cmp::Gt => Cmp::Lt,
        Cmp::Ge => Cmp::Le,
        other => other,
    }
}

impl Ranged {
    /// A result's bound under `params` (None: NULL or not read here: the result is then
    /// weighed against every row).
    pub fn key(&self, params: &[String]) -> Option<OrdKey> {
        let no_row = EnteringRow::new();
        match self.bound.eval(&no_row, params) {
            Val::Text(t) => OrdKey::of(value::read(self.ty, &t)?),
            _ => None,
        }
    }

    /// The bounds a result's key must lie within for `row` to pass the conjunct:
    /// `Nowhere` when the row's value is NULL (it passes none), `Everywhere` when it is not
    /// known.
    pub fn range(&self, row: &EnteringRow) -> Lookup {
        let value = match row.iter().find(|(c, _)| *c == self.column) {
            None => return Lookup::Everywhere,
            Some((_, NewValue::Null)) => return Lookup::Nowhere,
            Some((_, NewValue::Text(t))) => match value::read(self.ty, t).and_then(OrdKey::of) {
                Some(value) => value,
                None => return Lookup::Everywhere,
            },
        };
        Lookup::Range(match self.op {
            // col > bound: bound < value.
            Cmp::Gt => (Bound::Unbounded, Bound::Excluded(value)),
            Cmp::Ge => (Bound::Unbounded, Bound::Included(value)),
            // col < bound: bound > value.
            Cmp::Lt => (Bound::Excluded(value), Bound::Unbounded),
            _ => (Bound::Included(value), Bound::Unbounded),
        })
    }
}
