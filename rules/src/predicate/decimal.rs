//! Exact decimals: numeric's values and every integer's, as numeric_in reads them and
//! numeric orders them.

use std::cmp::Ordering;

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

    /// The integer numeric's rounding makes of it (half away from zero, as a cast to an
    /// integer type rounds): None for NaN, the infinities and values past i128 (a cast
    /// refuses those, or they are past every integer type).
    pub fn rounded(&self) -> Option<i128> {
        let Decimal::Finite {
            negative,
            digits,
            exponent,
        } = self
        else {
            return None;
        };
        // 0.d1d2... × 10^exponent: the first `exponent` digits are the integer part, the
        // next one decides the rounding.
        let whole_len = usize::try_from(*exponent).unwrap_or(0);
        if whole_len > 38 {
            return None;
        }
        let mut magnitude: i128 = 0;
        for i in 0..whole_len {
            let digit = digits.as_bytes().get(i).map_or(0, |b| b - b'0');
            magnitude = magnitude * 10 + i128::from(digit);
        }
        let next = if *exponent < 0 {
            0
        } else {
            digits.as_bytes().get(whole_len).map_or(0, |b| b - b'0')
        };
        if next >= 5 {
            magnitude += 1;
        }
        Some(if *negative { -magnitude } else { magnitude })
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
    fn rounding_to_an_integer_goes_half_away_from_zero_as_numeric_casts_do() {
        for (text, rounded) in [
            ("1.5", Some(2)),
            ("1.49999", Some(1)),
            ("-2.5", Some(-3)),
            ("-0.4", Some(0)),
            ("0.5", Some(1)),
            ("0.05", Some(0)),
            ("123", Some(123)),
            ("1e3", Some(1000)),
            ("0", Some(0)),
            ("9.5e-1", Some(1)),
            ("NaN", None),
            ("Infinity", None),
            ("1e40", None),
        ] {
            assert_eq!(d(text).rounded(), rounded, "{text}");
        }
    }
}
