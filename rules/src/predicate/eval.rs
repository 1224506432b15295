//! A bound condition weighed on a row's new values and a result's parameters.

use super::*;
use std::borrow::Cow;

/// An operand's value on a row.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val<'a> {
    Unknown,
    Null,
    Text(Cow<'a, str>),
}

impl Expr {
    pub(super) fn eval<'a>(&'a self, row: &'a EnteringRow, params: &'a [String]) -> Val<'a> {
        match self {
            Expr::Column(name) => match row.iter().find(|(c, _)| c == name) {
                None => Val::Unknown,
                Some((_, NewValue::Null)) => Val::Null,
                Some((_, NewValue::Text(t))) => Val::Text(Cow::Borrowed(t)),
            },
            Expr::Param(n) => match n.checked_sub(1).and_then(|i| params.get(i)) {
                Some(t) => Val::Text(Cow::Borrowed(t)),
                None => Val::Unknown,
            },
            Expr::Const(None, _) => Val::Null,
            Expr::Const(Some(t), _) => Val::Text(Cow::Borrowed(t)),
            Expr::Fold {
                upper,
                arg,
                collation,
            } => match arg.eval(row, params) {
                Val::Text(t) if t.is_ascii() && collation.ascii_folding => {
                    Val::Text(Cow::Owned(if *upper {
                        t.to_ascii_uppercase()
                    } else {
                        t.to_ascii_lowercase()
                    }))
                }
                Val::Text(_) => Val::Unknown,
                other => other,
            },
            Expr::Concat(a, b) => match (a.eval(row, params), b.eval(row, params)) {
                (Val::Null, _) | (_, Val::Null) => Val::Null,
                (Val::Text(a), Val::Text(b)) => Val::Text(Cow::Owned(format!("{a}{b}"))),
                _ => Val::Unknown,
            },
            Expr::Cast(arg, to) => match (integer_range(to), arg.eval(row, params)) {
                (Some(range), Val::Text(t)) => to_integer(&t, range).map_or(Val::Unknown, owned),
                (_, value) => value,
            },
            Expr::Trunc { unit, arg } => match (unit.eval(row, params), arg.eval(row, params)) {
                (Val::Null, _) | (_, Val::Null) => Val::Null,
                (Val::Text(u), Val::Text(t)) => time::truncate(&u, &t).map_or(Val::Unknown, owned),
                _ => Val::Unknown,
            },
            Expr::AtZone {
                zone,
                arg,
                to_zoned,
            } => match (zone.eval(row, params), arg.eval(row, params)) {
                (Val::Null, _) | (_, Val::Null) => Val::Null,
                (Val::Text(z), Val::Text(t)) if time::is_utc(&z) => {
                    time::at_utc(&t, *to_zoned).map_or(Val::Unknown, owned)
                }
                _ => Val::Unknown,
            },
            Expr::DateOf(arg) => match arg.eval(row, params) {
                Val::Text(t) => time::date_of(&t).map_or(Val::Unknown, owned),
                other => other,
            },
            Expr::JsonField {
                doc,
                key,
                as_text,
                index,
            } => match (doc.eval(row, params), key.eval(row, params)) {
                (Val::Null, _) | (_, Val::Null) => Val::Null,
                (Val::Text(d), Val::Text(k)) => match json::read(&d) {
                    Some(d) => field(&d, &k, *as_text, *index),
                    None => Val::Unknown,
                },
                _ => Val::Unknown,
            },
        }
    }
}

/// The values an integer type holds, by its name as `format_type` spells it.
fn integer_range(type_name: &str) -> Option<(i128, i128)> {
    Some(match type_name {
        "smallint" => (i16::MIN.into(), i16::MAX.into()),
        "integer" => (i32::MIN.into(), i32::MAX.into()),
        "bigint" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

/// A number cast to an integer type, as PostgreSQL casts it: rounded half away from zero
/// (numeric's rounding; binding admits no float here), None where the cast fails (out of
/// the type's range, NaN, infinities): the statement would fail, not weighed here.
fn to_integer(text: &str, (min, max): (i128, i128)) -> Option<String> {
    let n = super::decimal::Decimal::read(text)?.rounded()?;
    (min..=max).contains(&n).then(|| n.to_string())
}

fn owned<'a>(text: String) -> Val<'a> {
    Val::Text(Cow::Owned(text))
}

/// `doc -> key` (an object's field by a text key, an array's element by an integer index,
/// from the end when negative; else NULL) as jsonb text, or `->>` as text: a string's own text, NULL for JSON null. A
/// number's or container's text under `->>` is jsonb's spelling, not kept here: unknown.
fn field<'a>(doc: &json::Json, key: &str, as_text: bool, index: bool) -> Val<'a> {
    let found = match doc {
        json::Json::Object(fields) if !index => {
            fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
        }
        json::Json::Array(items) if index => match key.trim().parse::<i64>() {
            Ok(i) if i >= 0 => items.get(i as usize),
            Ok(i) => usize::try_from(-i)
                .ok()
                .and_then(|back| items.len().checked_sub(back))
                .and_then(|at| items.get(at)),
            Err(_) => return Val::Unknown,
        },
        _ => None,
    };
    match (found, as_text) {
        (None, _) | (Some(json::Json::Null), true) => Val::Null,
        (Some(json::Json::String(s)), true) => Val::Text(Cow::Owned(s.clone())),
        (Some(json::Json::Bool(b)), true) => Val::Text(Cow::Owned(b.to_string())),
        (Some(_), true) => Val::Unknown,
        (Some(v), false) => Val::Text(Cow::Owned(json::write(v))),
    }
}

impl Pred {
    /// The truth values the condition may take on `row` with `params`.
    pub fn eval(&self, row: &EnteringRow, params: &[String]) -> Truth {
        match self {
            Pred::Unknown(_) => Truth::ANY,
            Pred::And(items) => items
                .iter()
                .fold(Truth::TRUE, |acc, p| acc.and(p.eval(row, params))),
            Pred::Or(items) => items
                .iter()
                .fold(Truth::FALSE, |acc, p| acc.or(p.eval(row, params))),
            Pred::Not(inner) => inner.eval(row, params).not(),
            Pred::Test(inner, test) => test_truth(inner.eval(row, params), *test),
            Pred::Compare {
                op,
                left,
                right,
                ty,
            } => compare(*op, *ty, &left.eval(row, params), &right.eval(row, params)),
            Pred::Quantified {
                op,
                left,
                array,
                all,
                ty,
            } => quantified(
                *op,
                *ty,
                &left.eval(row, params),
                &array.eval(row, params),
                *all,
            ),
            Pred::IsNull(e) => match e.eval(row, params) {
                Val::Unknown => Truth::ANY,
                Val::Null => Truth::TRUE,
                Val::Text(_) => Truth::FALSE,
            },
            Pred::Boolean(e) => match e.eval(row, params) {
                Val::Unknown => Truth::ANY,
                Val::Null => Truth::NULL,
                Val::Text(t) => crate::kind::boolean(&t).map_or(Truth::ANY, Truth::of),
            },
            Pred::Like {
                text,
                pattern,
                fold,
                ..
            } => strict(
                &text.eval(row, params),
                &pattern.eval(row, params),
                |t, p| pattern::like(t, p, *fold),
            ),
            Pred::Regex {
                text,
                pattern,
                fold,
            } => strict(
                &text.eval(row, params),
                &pattern.eval(row, params),
                |t, p| pattern::regex(t, p, *fold),
            ),
            Pred::JsonKeys { doc, keys, how } => {
                json_keys(&doc.eval(row, params), &keys.eval(row, params), *how)
            }
            Pred::JsonContains { doc, part } => {
                strict(&doc.eval(row, params), &part.eval(row, params), |d, p| {
                    Some(json::contains(&json::read(d)?, &json::read(p)?))
                })
            }
        }
    }
}

/// A strict operator on two operands: NULL when either is NULL, `decide` on two texts
/// (None: not decided here), and unknown when either is.
fn strict(a: &Val, b: &Val, decide: impl Fn(&str, &str) -> Option<bool>) -> Truth {
    match (a, b) {
        (Val::Null, _) | (_, Val::Null) => Truth::NULL,
        (Val::Text(a), Val::Text(b)) => decide(a, b).map_or(Truth::ANY, Truth::of),
        _ => Truth::ANY,
    }
}

fn compare(op: Cmp, ty: SqlType, a: &Val, b: &Val) -> Truth {
    let (Val::Text(a), Val::Text(b)) = (a, b) else {
        return if *a == Val::Null || *b == Val::Null {
            Truth::NULL
        } else {
            Truth::ANY
        };
    };
    compare_texts(op, ty, a, b)
}

fn compare_texts(op: Cmp, ty: SqlType, a: &str, b: &str) -> Truth {
    let (Some(a), Some(b)) = (value::read(ty, a), value::read(ty, b)) else {
        return Truth::ANY;
    };
    let verdict = match op {
        Cmp::Eq => value::equal(ty, &a, &b),
        Cmp::Ne => value::equal(ty, &a, &b).map(|e| !e),
        _ => value::compare(ty, &a, &b).map(|o| match op {
            Cmp::Lt => o.is_lt(),
            Cmp::Le => o.is_le(),
            Cmp::Gt => o.is_gt(),
            _ => o.is_ge(),
        }),
    };
    verdict.map_or(Truth::ANY, Truth::of)
}

/// `left op ANY|ALL(array)`, in `ExecEvalScalarArrayOp`'s order: a NULL array is NULL, an
/// empty one FALSE (ANY) or TRUE (ALL), then a NULL left side is NULL.
fn quantified(op: Cmp, ty: SqlType, left: &Val, array: &Val, all: bool) -> Truth {
    let elements = match array {
        Val::Null => return Truth::NULL,
        Val::Unknown => return Truth::ANY,
        Val::Text(t) => match array::elements(t) {
            Some(e) => e,
            None => return Truth::ANY,
        },
    };
    if elements.is_empty() {
        return Truth::of(all);
    }
    let left = match left {
        Val::Null => return Truth::NULL,
        Val::Unknown => return Truth::ANY,
        Val::Text(t) => t,
    };
    elements.iter().fold(Truth::of(all), |acc, element| {
        let t = match element {
            None => Truth::NULL,
            Some(e) => compare_texts(op, ty, left, e),
        };
        if all { acc.and(t) } else { acc.or(t) }
    })
}

fn json_keys(doc: &Val, keys: &Val, how: Keys) -> Truth {
    let (Val::Text(doc), Val::Text(keys)) = (doc, keys) else {
        return if *doc == Val::Null || *keys == Val::Null {
            Truth::NULL
        } else {
            Truth::ANY
        };
    };
    let Some(doc) = json::read(doc) else {
        return Truth::ANY;
    };
    if how == Keys::One {
        return Truth::of(json::has_key(&doc, keys));
    }
    let Some(keys) = array::elements(keys) else {
        return Truth::ANY;
    };
    // NULL keys are skipped.
    let mut present = keys.iter().flatten().map(|k| json::has_key(&doc, k));
    Truth::of(match how {
        Keys::Any => present.any(|p| p),
        _ => present.all(|p| p),
    })
}

fn test_truth(t: Truth, test: BoolTest) -> Truth {
    t.each().fold(Truth::EMPTY, |acc, v| {
        let yes = match test {
            BoolTest::True => v == Truth::TRUE,
            BoolTest::NotTrue => v != Truth::TRUE,
            BoolTest::False => v == Truth::FALSE,
            BoolTest::NotFalse => v != Truth::FALSE,
            BoolTest::Unknown => v == Truth::NULL,
            BoolTest::NotUnknown => v != Truth::NULL,
        };
        acc.union(Truth::of(yes))
    })
}
