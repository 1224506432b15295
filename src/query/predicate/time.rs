//! Dates and timestamps in ISO 8601, as PostgreSQL writes them under `DateStyle` ISO and
//! reads them: `2024-05-01`, `2024-05-01 10:00:00.25`, `2024-05-01T10:00:00+02:00`, with
//! ` BC` and `infinity`. Any other spelling (another DateStyle, words, a time zone name)
//! is not read here; a timestamptz without its offset neither (the session's time zone
//! decides it).

/// Days since 2000-01-01, ±infinity at the extremes.
pub fn date(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Some(extreme) = infinity(t) {
        return Some(if extreme > 0 { i64::MAX } else { i64::MIN });
    }
    let (body, bc) = era(t);
    day_number(body, bc)
}

/// Microseconds since 2000-01-01 00:00 (UTC when `zoned`), ±infinity at the extremes.
pub fn timestamp(text: &str, zoned: bool) -> Option<i128> {
    let t = text.trim();
    if let Some(extreme) = infinity(t) {
        return Some(if extreme > 0 { i128::MAX } else { i128::MIN });
    }
    let (body, bc) = era(t);
    let (day, clock) = body.split_once([' ', 'T'])?;
    let days = day_number(day, bc)?;
    let (clock, offset) = split_offset(clock);
    let micros = time_of_day(clock)?;
    let offset = match (offset, zoned) {
        (Some(o), true) => zone_offset(o)?,
        // Without an offset a timestamptz is read in the session's time zone; with one, a
        // timestamp ignores it: neither is the value written.
        (None, false) => 0,
        _ => return None,
    };
    Some(i128::from(days) * 86_400_000_000 + micros - i128::from(offset) * 1_000_000)
}

fn infinity(t: &str) -> Option<i8> {
    if t.eq_ignore_ascii_case("infinity") || t.eq_ignore_ascii_case("+infinity") {
        Some(1)
    } else if t.eq_ignore_ascii_case("-infinity") {
        Some(-1)
    } else {
        None
    }
}

fn era(t: &str) -> (&str, bool) {
    match t.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (t, false),
    }
}

fn number(s: &str, width: std::ops::RangeInclusive<usize>) -> Option<i64> {
    (width.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD` as days since 2000-01-01 (year n BC is year 1 - n).
fn day_number(day: &str, bc: bool) -> Option<i64> {
    let mut parts = day.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (year, month, mday) = (number(y, 4..=6)?, number(m, 2..=2)?, number(d, 2..=2)?);
    if year == 0 || !(1..=12).contains(&month) || mday < 1 || mday > days_in(year, bc, month) {
        return None;
    }
    let year = if bc { 1 - year } else { year };
    Some(days_from_civil(year, month, mday) - days_from_civil(2000, 1, 1))
}

fn days_in(year: i64, bc: bool, month: i64) -> i64 {
    let y = if bc { 1 - year } else { year };
    let leap = y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `HH:MM[:SS[.ffffff]]` and what follows it: the offset, if any.
fn split_offset(clock: &str) -> (&str, Option<&str>) {
    match clock.find(['+', '-', 'Z', 'z']) {
        Some(at) => (&clock[..at], Some(&clock[at..])),
        None => (clock, None),
    }
}

fn time_of_day(clock: &str) -> Option<i128> {
    let mut parts = clock.split(':');
    let hour = number(parts.next()?, 2..=2)?;
    let minute = number(parts.next()?, 2..=2)?;
    let (second, micros) = match parts.next() {
        None => (0, 0),
        Some(s) => {
            let (whole, fraction) = match s.split_once('.') {
                Some((w, f)) => (w, f),
                None => (s, ""),
            };
            // Past microseconds PostgreSQL rounds: not read here.
            if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let micros = format!("{fraction:0<6}").parse::<i64>().ok()?;
            (number(whole, 2..=2)?, micros)
        }
    };
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(i128::from(
        (hour * 3600 + minute * 60 + second) * 1_000_000 + micros,
    ))
}

/// `Z`, `+HH`, `+HH:MM`, `+HH:MM:SS` in seconds east of UTC.
fn zone_offset(offset: &str) -> Option<i64> {
    if offset.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = match offset.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let mut parts = offset[1..].split(':');
    let hours = number(parts.next()?, 2..=2)?;
    let minutes = parts.next().map_or(Some(0), |m| number(m, 2..=2))?;
    let seconds = parts.next().map_or(Some(0), |s| number(s, 2..=2))?;
    if parts.next().is_some() || hours > 15 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60 + seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_and_timestamps_read_as_instants() {
        assert_eq!(date("2000-01-01"), Some(0));
        assert_eq!(date("2000-03-01"), Some(60));
        assert_eq!(date("1999-12-31"), Some(-1));
        assert_eq!(
            date("0001-01-01 BC"),
            Some(date("0001-01-01").unwrap() - 366)
        );
        assert_eq!(date("2023-02-29"), None);
        assert_eq!(date("infinity"), Some(i64::MAX));
        assert_eq!(date("01/02/2024"), None);
        let utc = timestamp("2024-05-01 10:00:00+00", true).unwrap();
        assert_eq!(timestamp("2024-05-01T12:00:00+02:00", true), Some(utc));
        assert_eq!(timestamp("2024-05-01 05:30:00-04:30", true), Some(utc));
        assert_eq!(timestamp("2024-05-01 10:00:00Z", true), Some(utc));
        assert_eq!(timestamp("2024-05-01 10:00", true), None);
        assert_eq!(timestamp("2024-05-01 10:00+02", false), None);
        assert_eq!(
            timestamp("2024-05-01 10:00:00.5", false).unwrap() + 500_000,
            timestamp("2024-05-01 10:00:01", false).unwrap()
        );
        assert_eq!(timestamp("2024-05-01 10:00:00.1234567", false), None);
        assert_eq!(timestamp("2024-05-01 24:00:00", false), None);
    }
}
