//! A column a condition pins to values (`col = $1`, `col IN (...)`, `col = ANY($1)`): results
//! are found by the key of a row's value instead of weighed one by one.

use super::eval::Val;
use super::*;

impl Pred {
    /// The top-level conjunct that pins a column to values (`col = v`, `col IN (...)`,
    /// `col = ANY($n)`) on a type whose equal values share a key (`value::key`): a
    /// change's row needs to be weighed only against results whose values hold its own.
    pub fn pinned(&self) -> Option<Pinned> {
        self.conjuncts().into_iter().find_map(Pred::pins)
    }

    fn pins(&self) -> Option<Pinned> {
        let keyed = keyable;
        match self {
            Pred::Compare {
                op: Cmp::Eq,
                left,
                right,
                ty,
            } if keyed(*ty) => match (left, right) {
                (Expr::Column(c), other) | (other, Expr::Column(c)) if other.is_bound_value() => {
                    Some(Pinned {
                        column: c.clone(),
                        ty: *ty,
                        values: vec![PinnedValue::One(other.clone())],
                    })
                }
                _ => None,
            },
            Pred::Quantified {
                op: Cmp::Eq,
                left: Expr::Column(c),
                array,
                all: false,
                ty,
            } if keyed(*ty) && array.is_bound_value() => Some(Pinned {
                column: c.clone(),
                ty: *ty,
                values: vec![PinnedValue::Array(array.clone())],
            }),
            Pred::Or(items) => {
                let pins: Vec<Pinned> = items.iter().map(Pred::pins).collect::<Option<_>>()?;
                let first = pins.first()?;
                if pins
                    .iter()
                    .any(|p| p.column != first.column || p.ty != first.ty)
                {
                    return None;
                }
                Some(Pinned {
                    column: first.column.clone(),
                    ty: first.ty,
                    values: pins.into_iter().flat_map(|p| p.values).collect(),
                })
            }
            _ => None,
        }
    }
}

/// Whether equal values of `ty` share a key.
fn keyable(ty: SqlType) -> bool {
    match ty {
        SqlType::Text(c) => c.deterministic,
        SqlType::Jsonb | SqlType::TextArray | SqlType::Unresolved => false,
        _ => true,
    }
}

/// A column pinned to values by a conjunct (`Pred::pinned`).
#[derive(Debug, Clone, PartialEq)]
pub struct Pinned {
    pub column: String,
    pub ty: SqlType,
    values: Vec<PinnedValue>,
}

#[derive(Debug, Clone, PartialEq)]
enum PinnedValue {
    One(Expr),
    Array(Expr),
}

impl Pinned {
    /// The keys of the values a result of `params` pins the column to; None when one is
    /// not read here (the result is then weighed against every row).
    pub fn keys(&self, params: &[String]) -> Option<Vec<String>> {
        let no_row = EnteringRow::new();
        let mut keys = Vec::new();
        for value in &self.values {
            match value {
                PinnedValue::One(e) => match e.eval(&no_row, params) {
                    Val::Null => {}
                    Val::Text(t) => keys.push(value::key(self.ty, &t)?),
                    Val::Unknown => return None,
                },
                PinnedValue::Array(e) => {
                    let Val::Text(t) = e.eval(&no_row, params) else {
                        return None;
                    };
                    for element in array::elements(&t)?.into_iter().flatten() {
                        keys.push(value::key(self.ty, &element)?);
                    }
                }
            }
        }
        keys.sort();
        keys.dedup();
        Some(keys)
    }

    /// The key of `row`'s value of the column: `Nowhere` when it is NULL (it equals
    /// nothing), `Everywhere` when not known or not read here.
    pub fn row_key(&self, row: &EnteringRow) -> Lookup {
        match row.iter().find(|(c, _)| *c == self.column) {
            None => Lookup::Everywhere,
            Some((_, NewValue::Null)) => Lookup::Nowhere,
            Some((_, NewValue::Text(t))) => {
                value::key(self.ty, t).map_or(Lookup::Everywhere, Lookup::Key)
            }
        }
    }
}
