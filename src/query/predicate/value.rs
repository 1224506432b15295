//! The types pgcache compares exactly, and how: the one table of what is exact. A value is
//! read from its text (a change's new value, a parameter, a constant) the way PostgreSQL's
//! input function reads it, or not at all: a spelling this does not read is unknown, and
//! unknown may match. What a type or collation does not decide (text ordered under a
//! linguistic collation, case folded outside ASCII) is unknown too.

use crate::model::key::{boolean, canonical_uuid};
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

/// An exact decimal (numeric, and every integer): sign, digits and exponent, or one of
/// numeric's specials, ordered as PostgreSQL orders numeric (NaN above +Infinity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decimal {
    NegInfinity,
    /// `negative`, the significant digits without leading or trailing zeros (empty for
    /// zero), and the exponent: the value is 0.d1d2... × 10^exponent.
    Finite {
        negative: bool,
        digits: String,
        exponent: i64,
    },
    Infinity,
    NaN,
}

impl Decimal {
    /// numeric_in's reading of `text`: blanks around, a sign, digits with one point, an
    /// exponent; `NaN`, `Infinity`, `inf` with a sign, in any case.
    pub fn read(text: &str) -> Option<Decimal> {
        let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
        let (negative, body) = match t.as_bytes().first()? {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        if body.eq_ignore_ascii_case("nan") {
            return (body.len() == t.len()).then_some(Decimal::NaN);
        }
        if body.eq_ignore_ascii_case("infinity") || body.eq_ignore_ascii_case("inf") {
            return Some(if negative {
                Decimal::NegInfinity
            } else {
                Decimal::Infinity
            });
        }
        let (mantissa, exp) = match body.find(['e', 'E']) {
            Some(at) => (&body[..at], Some(&body[at + 1..])),
            None => (body, None),
        };
        let (whole, fraction) = match mantissa.split_once('.') {
            Some((w, f)) => (w, f),
            None => (mantissa, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction)
        {
            return None;
        }
        let exp: i64 = match exp {
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !all_digits(digits) || digits.len() > 6 {
                    return None;
                }
                e.parse().ok()?
            }
            None => 0,
        };
        let all = format!("{whole}{fraction}");
        let leading = all.len() - all.trim_start_matches('0').len();
        let digits = all
            .trim_start_matches('0')
            .trim_end_matches('0')
            .to_string();
        if digits.is_empty() {
            return Some(Decimal::Finite {
                negative: false,
                digits,
                exponent: 0,
            });
        }
        Some(Decimal::Finite {
            negative,
            digits,
            exponent: whole.len() as i64 - leading as i64 + exp,
        })
    }

    fn rank(&self) -> u8 {
        match self {
            Decimal::NegInfinity => 0,
            Decimal::Finite { .. } => 1,
            Decimal::Infinity => 2,
            Decimal::NaN => 3,
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let (
            Decimal::Finite {
                negative: an,
                digits: ad,
                exponent: ae,
            },
            Decimal::Finite {
                negative: bn,
                digits: bd,
                exponent: be,
            },
        ) = (self, other)
        else {
            return self.rank().cmp(&other.rank());
        };
        // Zero has no sign and no digits: between the negatives and the positives.
        let sign = |negative: bool, digits: &str| match (digits.is_empty(), negative) {
            (true, _) => 1,
            (false, true) => 0,
            (false, false) => 2,
        };
        let (sa, sb) = (sign(*an, ad), sign(*bn, bd));
        if sa != sb || sa == 1 {
            return sa.cmp(&sb);
        }
        let magnitude = ae.cmp(be).then_with(|| ad.as_bytes().cmp(bd.as_bytes()));
        if *an { magnitude.reverse() } else { magnitude }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decimal::NegInfinity => f.write_str("-Infinity"),
            Decimal::Infinity => f.write_str("Infinity"),
            Decimal::NaN => f.write_str("NaN"),
            Decimal::Finite {
                negative,
                digits,
                exponent,
            } => {
                if digits.is_empty() {
                    return f.write_str("0");
                }
                let sign = if *negative { "-" } else { "" };
                write!(f, "{sign}0.{digits}e{exponent}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::read(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn decimals_compare_by_value_whatever_their_spelling() {
        assert_eq!(d("1.50"), d("1.5"));
        assert_eq!(d("0015"), d("15.000"));
        assert_eq!(d("1e3"), d("1000"));
        assert_eq!(d("-0"), d("0.000"));
        assert_eq!(d(" 7 "), d("7"));
        assert!(d("-2") < d("-1.5"));
        assert!(d("-0.001") < d("0"));
        assert!(d("0.1") < d("0.11"));
        assert!(d("9") < d("10"));
        assert!(d("99999999999999999999") < d("100000000000000000000"));
        assert!(d("Infinity") > d("1e100000"));
        assert!(d("NaN") > d("Infinity"));
        assert!(d("-inf") < d("-1e100000"));
        for bad in ["", ".", "1.2.3", "1e", "0x10", "1_000", "abc", "--1", "1 2"] {
            assert_eq!(Decimal::read(bad), None, "{bad}");
        }
        assert_eq!(d("1.50").to_string(), d("1.5e0").to_string());
    }

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
