//! The session settings that decide how PostgreSQL spells a value as text, fixed on every
//! connection pgcache reads values from (the pool's, the listener's and the replication
//! stream's), whatever the server, the database or the role set.
//!
//! pgcache weighs the text of a change's new values against statements' conditions
//! (`query::predicate`), keys rows by it and stores rows' JSON: a float rounded to 15
//! digits by `extra_float_digits = 0` (`0.1 + 0.2` sent as `0.3`), a date spelled
//! `27/11/2026` by `DateStyle = 'SQL, DMY'`, an interval spelled `P1D` by
//! `IntervalStyle = 'iso_8601'` or a bytea spelled `escape` would be weighed, keyed or
//! stored as another value. The time zone is left to the server: every spelling of a
//! timestamptz carries its offset, and a row's JSON shows the server's own.

/// `(name, value)` of each setting, as PostgreSQL's startup packet takes them.
pub const VALUE_SETTINGS: &[(&str, &str)] = &[
    // Any value above 0 prints the shortest text that reads back as the same float.
    ("extra_float_digits", "3"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("bytea_output", "hex"),
];

/// The settings as `-c name=value` options of a libpq connection string (spaces escaped
/// with a backslash, as libpq's `options` parameter wants them).
pub fn as_options() -> String {
    VALUE_SETTINGS
        .iter()
        .map(|(name, value)| format!("-c {name}={}", value.replace(' ', "\\ ")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_escape_the_spaces_libpq_would_split_on() {
        assert_eq!(
            as_options(),
            "-c extra_float_digits=3 -c DateStyle=ISO,\\ MDY -c IntervalStyle=postgres \
             -c bytea_output=hex"
        );
    }
}
