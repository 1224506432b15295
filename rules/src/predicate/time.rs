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

/// A unit `date_trunc` truncates a timestamp to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

/// The unit `date_trunc` reads `name` as (ASCII case ignored, as PostgreSQL downcases it);
/// None for the coarser ones (decade, century, millennium, with their own rules for years
/// BC) and for spellings not read here.
fn unit(name: &str) -> Option<Unit> {
    Some(match name.to_ascii_lowercase().as_str() {
        "microseconds" | "microsecond" | "us" => Unit::Microsecond,
        "milliseconds" | "millisecond" | "ms" => Unit::Millisecond,
        "second" | "seconds" => Unit::Second,
        "minute" | "minutes" => Unit::Minute,
        "hour" | "hours" => Unit::Hour,
        "day" | "days" => Unit::Day,
        "week" | "weeks" => Unit::Week,
        "month" | "months" => Unit::Month,
        "quarter" => Unit::Quarter,
        "year" | "years" => Unit::Year,
        _ => return None,
    })
}

const MICROS_PER_DAY: i128 = 86_400_000_000;

/// `date_trunc(unit, timestamp)` of a timestamp without time zone, spelled as PostgreSQL
/// reads it back; None for a unit or a spelling not read here.
pub fn truncate(unit_name: &str, text: &str) -> Option<String> {
    let unit = unit(unit_name)?;
    let micros = timestamp(text, false)?;
    if let Some(extreme) = extreme(micros) {
        return Some(extreme.into());
    }
    let (days, in_day) = (
        micros.div_euclid(MICROS_PER_DAY),
        micros.rem_euclid(MICROS_PER_DAY),
    );
    let step: i128 = match unit {
        Unit::Microsecond => 1,
        Unit::Millisecond => 1_000,
        Unit::Second => 1_000_000,
        Unit::Minute => 60_000_000,
        Unit::Hour => 3_600_000_000,
        _ => MICROS_PER_DAY,
    };
    let days = i64::try_from(days).ok()?;
    let days = match unit {
        // The Monday of the ISO week (2000-01-01 was a Saturday).
        Unit::Week => days - (days + 5).rem_euclid(7),
        Unit::Month | Unit::Quarter | Unit::Year => {
            let (year, month, _) = civil_from_days(days + EPOCH_DAYS);
            let month = match unit {
                Unit::Month => month,
                Unit::Quarter => (month - 1) / 3 * 3 + 1,
                _ => 1,
            };
            days_from_civil(year, month, 1) - EPOCH_DAYS
        }
        _ => days,
    };
    Some(spelled(
        i128::from(days) * MICROS_PER_DAY + in_day - in_day.rem_euclid(step),
        false,
    ))
}

/// Whether PostgreSQL reads `zone` as UTC whatever its time zone data says (the names are
/// case-insensitive).
pub fn is_utc(zone: &str) -> bool {
    ["UTC", "Etc/UTC", "GMT", "Etc/GMT"]
        .iter()
        .any(|z| z.eq_ignore_ascii_case(zone.trim()))
}

/// `text AT TIME ZONE 'UTC'`: a timestamptz as UTC's wall clock (a timestamp), or with
/// `to_zoned` a timestamp read as UTC's wall clock (a timestamptz).
pub fn at_utc(text: &str, to_zoned: bool) -> Option<String> {
    let micros = timestamp(text, !to_zoned)?;
    Some(match extreme(micros) {
        Some(extreme) => extreme.into(),
        None => spelled(micros, to_zoned),
    })
}

/// A timestamp's date (`::date`).
pub fn date_of(text: &str) -> Option<String> {
    let micros = timestamp(text, false)?;
    if let Some(extreme) = extreme(micros) {
        return Some(extreme.into());
    }
    let days = i64::try_from(micros.div_euclid(MICROS_PER_DAY)).ok()?;
    let (year, month, day) = civil_from_days(days + EPOCH_DAYS);
    Some(format!("{}{}", day_text(year, month, day), era_text(year)))
}

/// Days from 1970-01-01 to 2000-01-01.
const EPOCH_DAYS: i64 = 10_957;

fn extreme(micros: i128) -> Option<&'static str> {
    match micros {
        i128::MAX => Some("infinity"),
        i128::MIN => Some("-infinity"),
        _ => None,
    }
}

/// Microseconds since 2000-01-01 00:00 in ISO 8601, with `+00` when `zoned`.
fn spelled(micros: i128, zoned: bool) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY) as i64;
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days + EPOCH_DAYS);
    let seconds = in_day / 1_000_000;
    let fraction = in_day % 1_000_000;
    let mut out = format!(
        "{} {:02}:{:02}:{:02}",
        day_text(year, month, day),
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if fraction != 0 {
        out.push('.');
        out.push_str(format!("{fraction:06}").trim_end_matches('0'));
    }
    if zoned {
        out.push_str("+00");
    }
    out.push_str(era_text(year));
    out
}

/// `YYYY-MM-DD` of a proleptic Gregorian date, years BC counted back from 1 BC (year 0).
fn day_text(year: i64, month: i64, day: i64) -> String {
    let shown = if year <= 0 { 1 - year } else { year };
    format!("{shown:04}-{month:02}-{day:02}")
}

fn era_text(year: i64) -> &'static str {
    if year <= 0 { " BC" } else { "" }
}

/// The proleptic Gregorian date of a day since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

    #[test]
    fn timestamps_truncate_shift_and_lose_their_time_as_postgresql_does() {
        let t = "2024-05-15 13:45:30.123456";
        assert_eq!(
            truncate("ms", t).as_deref(),
            Some("2024-05-15 13:45:30.123")
        );
        assert_eq!(
            truncate("second", t).as_deref(),
            Some("2024-05-15 13:45:30")
        );
        assert_eq!(truncate("Hour", t).as_deref(), Some("2024-05-15 13:00:00"));
        assert_eq!(truncate("day", t).as_deref(), Some("2024-05-15 00:00:00"));
        // 2024-05-15 was a Wednesday; 2021-01-01 (a Friday) is in 2020's last ISO week.
        assert_eq!(truncate("week", t).as_deref(), Some("2024-05-13 00:00:00"));
        assert_eq!(
            truncate("week", "2021-01-01 10:00:00").as_deref(),
            Some("2020-12-28 00:00:00")
        );
        assert_eq!(
            truncate("quarter", t).as_deref(),
            Some("2024-04-01 00:00:00")
        );
        assert_eq!(truncate("year", t).as_deref(), Some("2024-01-01 00:00:00"));
        assert_eq!(
            truncate("month", "0044-03-15 12:00:00 BC").as_deref(),
            Some("0044-03-01 00:00:00 BC")
        );
        assert_eq!(truncate("decade", t), None);
        assert_eq!(truncate("day", "infinity").as_deref(), Some("infinity"));
        assert_eq!(
            date_of("1999-12-31 23:59:59.999").as_deref(),
            Some("1999-12-31")
        );
        assert_eq!(
            at_utc("2024-05-01 01:30:00+05:30", false).as_deref(),
            Some("2024-04-30 20:00:00")
        );
        assert_eq!(
            at_utc("2024-05-01 01:30:00", true).as_deref(),
            Some("2024-05-01 01:30:00+00")
        );
        assert!(is_utc("utc") && is_utc("Etc/UTC") && !is_utc("Europe/Paris"));
        for days in [-800_000, -1, 0, 59, 60, 365, 10_957, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{days}");
        }
    }
}
