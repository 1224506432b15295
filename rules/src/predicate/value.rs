//! The types pgcache compares exactly, and how: the one table of what is exact. A value is
//! read from its text (a change's new value, a parameter, a constant) the way PostgreSQL's
//! input function reads it, or not at all: a spelling this does not read is unknown, and
//! unknown may match. What a type or collation does not decide (text ordered under a
//! linguistic collation, case folded outside ASCII) is unknown too.

pub use super::decimal::Decimal;
use crate::kind::{boolean, canonical_uuid};
use std::cmp::Ordering;

/// How text compares under a collation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collation {
    /// Equal means the same bytes (every collation but a nondeterministic one).
    pub deterministic: bool,
    /// Ordered by bytes ("C", "POSIX"); any other order is a locale's, not computed here.
    pub bytewise: bool,
    /// upper/lower/ILIKE fold ASCII letters as ASCII does (no Turkish dotless i).
    pub ascii_folding: bool,
}

impl Collation {
    /// A collation nothing is known of: equality only where bytes decide it... not even.
    pub const UNKNOWN: Collation = Collation {
        deterministic: false,
        bytewise: false,
        ascii_folding: false,
    };
}

/// A type pgcache compares exactly (`Unresolved`: not known yet, or not one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// smallint, integer, bigint, numeric: compared as exact decimals.
    Number,
    Real,
    Double,
    Bool,
    Text(Collation),
    Uuid,
    Date,
    Timestamp,
    TimestampTz,
    Jsonb,
    /// A text array (the keys of `?|` and `?&`).
    TextArray,
    Unresolved,
}

impl SqlType {
    /// The type PostgreSQL's `format_type` spells `name`, text under `collation`.
    pub fn named(name: &str, collation: Collation) -> SqlType {
        match name {
            "smallint" | "integer" | "bigint" | "numeric" => SqlType::Number,
            "real" => SqlType::Real,
            "double precision" => SqlType::Double,
            "boolean" => SqlType::Bool,
            "text" | "character varying" => SqlType::Text(collation),
            "uuid" => SqlType::Uuid,
            "date" => SqlType::Date,
            "timestamp without time zone" => SqlType::Timestamp,
            "timestamp with time zone" => SqlType::TimestampTz,
            "jsonb" => SqlType::Jsonb,
            "text[]" | "character varying[]" => SqlType::TextArray,
            _ => SqlType::Unresolved,
        }
    }

    /// Whether two operand types compare with one of the operators read here.
    pub fn comparable(self, other: SqlType) -> bool {
        match (self, other) {
            (SqlType::Text(_), SqlType::Text(_)) => true,
            (SqlType::Unresolved, _) | (_, SqlType::Unresolved) => false,
            (a, b) => a == b,
        }
    }
}

/// A value read by its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed<'a> {
    Number(Decimal),
    Real(f32),
    Double(f64),
    Bool(bool),
    Text(&'a str),
    /// Canonical: lower-case, hyphenated.
    Uuid(String),
    /// Days, or ±infinity as the extremes.
    Date(i64),
    /// Microseconds since 2000-01-01 (UTC for timestamptz), ±infinity as the extremes.
    Time(i128),
    /// jsonb: equal as jsonb compares (numbers by value, keys in any order).
    Json(super::json::Json),
}

/// Reads `text` as a value of `ty` (None: not read here, or not a value of it).
pub fn read(ty: SqlType, text: &str) -> Option<Typed<'_>> {
    Some(match ty {
        SqlType::Number => Typed::Number(Decimal::read(text)?),
        SqlType::Real => Typed::Real(read_float::<f32>(text)?),
        SqlType::Double => Typed::Double(read_float::<f64>(text)?),
        SqlType::Bool => Typed::Bool(boolean(text)?),
        SqlType::Text(_) => Typed::Text(text),
        SqlType::Uuid => Typed::Uuid(canonical_uuid(text).ok()?),
        SqlType::Date => Typed::Date(super::time::date(text)?),
        SqlType::Timestamp => Typed::Time(super::time::timestamp(text, false)?),
        SqlType::TimestampTz => Typed::Time(super::time::timestamp(text, true)?),
        SqlType::Jsonb => Typed::Json(super::json::read(text)?),
        SqlType::TextArray | SqlType::Unresolved => return None,
    })
}

/// How `a` compares with `b` under `ty` (None: not decided here).
pub fn compare(ty: SqlType, a: &Typed, b: &Typed) -> Option<Ordering> {
    match (a, b) {
        (Typed::Number(a), Typed::Number(b)) => Some(a.cmp(b)),
        (Typed::Real(a), Typed::Real(b)) => Some(float_order(f64::from(*a), f64::from(*b))),
        (Typed::Double(a), Typed::Double(b)) => Some(float_order(*a, *b)),
        (Typed::Bool(a), Typed::Bool(b)) => Some(a.cmp(b)),
        (Typed::Text(a), Typed::Text(b)) => match ty {
            SqlType::Text(c) if c.bytewise => Some(a.as_bytes().cmp(b.as_bytes())),
            _ => None,
        },
        (Typed::Uuid(a), Typed::Uuid(b)) => Some(a.cmp(b)),
        (Typed::Date(a), Typed::Date(b)) => Some(a.cmp(b)),
        (Typed::Time(a), Typed::Time(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Whether `a` equals `b` under `ty` (None: not decided here).
pub fn equal(ty: SqlType, a: &Typed, b: &Typed) -> Option<bool> {
    match (a, b) {
        (Typed::Text(a), Typed::Text(b)) => match ty {
            SqlType::Text(c) if c.deterministic => Some(a == b),
            _ => None,
        },
        (Typed::Json(a), Typed::Json(b)) => Some(a == b),
        _ => compare(ty, a, b).map(|o| o == Ordering::Equal),
    }
}

/// The text equal values of `ty` share (for an index by value), if `ty` has one.
pub fn key(ty: SqlType, text: &str) -> Option<String> {
    Some(match read(ty, text)? {
        Typed::Number(d) => d.to_string(),
        Typed::Real(f) => float_key(f64::from(f)),
        Typed::Double(f) => float_key(f),
        Typed::Bool(b) => b.to_string(),
        Typed::Text(t) => match ty {
            SqlType::Text(c) if c.deterministic => t.to_string(),
            _ => return None,
        },
        Typed::Uuid(u) => u,
        Typed::Date(d) => d.to_string(),
        Typed::Time(t) => t.to_string(),
        Typed::Json(_) => return None,
    })
}

/// PostgreSQL's float order: NaN equals NaN and sorts above every number; -0 equals 0.
fn float_order(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn float_key(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == 0.0 {
        "0".into()
    } else {
        format!("{f:e}")
    }
}

/// float4in / float8in on what both read alike: decimal notation, `NaN`, `Infinity`, around
/// blanks. A value out of the type's range is an error there, so a miss here.
fn read_float<F: std::str::FromStr + Into<f64> + Copy>(text: &str) -> Option<F> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let word = body.eq_ignore_ascii_case("nan")
        || body.eq_ignore_ascii_case("infinity")
        || body.eq_ignore_ascii_case("inf");
    let decimal = !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !(word || decimal) {
        return None;
    }
    let f: F = t.parse().ok()?;
    // A finite spelling read as infinity overflowed: PostgreSQL refuses it.
    (word || f.into().is_finite()).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_order_nan_last_and_zeros_alike() {
        assert_eq!(float_order(0.0, -0.0), Ordering::Equal);
        assert_eq!(float_order(f64::NAN, f64::INFINITY), Ordering::Greater);
        assert_eq!(read_float::<f64>(" 1.5 "), Some(1.5));
        assert_eq!(read_float::<f64>("1e400"), None);
        assert_eq!(read_float::<f64>("0x1p3"), None);
        assert_eq!(read_float::<f32>("1e39"), None);
        assert!(read_float::<f64>("-Infinity").unwrap().is_infinite());
    }
}
