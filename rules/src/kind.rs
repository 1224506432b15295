//! How a column's values are read: the kind of a type's values (`KeyKind`, from the
//! catalog's type name by `column_kind`), and the two types whose spellings the rules
//! read as PostgreSQL does everywhere (`boolean`, `canonical_uuid`). pgcache's canonical
//! keys spell their values by the same kinds.

use crate::error::{Error, Result};

/// How a key column's values are written canonically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// int2 / int4 / int8 / oid: an integer within the inclusive range.
    Integer {
        min: i128,
        max: i128,
    },
    /// numeric, float4, float8: a decimal number.
    Decimal,
    Bool,
    Uuid,
    /// text, varchar, name and enums: the value is its own canonical spelling.
    Text,
    /// Any other type: many client spellings name one value (`2024-01-01 10:00` and
    /// `2024-01-01T10:00:00` for a timestamp), so PostgreSQL spells it canonically.
    Rendered(Rendering),
}

/// How PostgreSQL's canonical spelling of a `Rendered` value is made (`pg::normalise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendering {
    /// The type's JSON rendering.
    Plain,
    /// char(n): without the padding, which equality ignores.
    BlankPadded,
    /// citext: lower-cased, as its equality compares.
    CaseInsensitive,
    /// timestamptz: in UTC, whatever the session's time zone.
    Instant,
}

/// Maps a catalog type (for a domain: its base type) to the way its key values are
/// canonicalised. `is_enum`: an enum type, whose labels spell themselves.
pub fn column_kind(type_name: &str, is_enum: bool) -> KeyKind {
    if is_enum {
        return KeyKind::Text;
    }
    match type_name {
        "int2" => KeyKind::Integer {
            min: i16::MIN.into(),
            max: i16::MAX.into(),
        },
        "int4" => KeyKind::Integer {
            min: i32::MIN.into(),
            max: i32::MAX.into(),
        },
        "int8" => KeyKind::Integer {
            min: i64::MIN.into(),
            max: i64::MAX.into(),
        },
        "oid" => KeyKind::Integer {
            min: 0,
            max: u32::MAX.into(),
        },
        "numeric" | "float4" | "float8" => KeyKind::Decimal,
        "bool" => KeyKind::Bool,
        "uuid" => KeyKind::Uuid,
        "text" | "varchar" | "name" => KeyKind::Text,
        "bpchar" => KeyKind::Rendered(Rendering::BlankPadded),
        "citext" => KeyKind::Rendered(Rendering::CaseInsensitive),
        "timestamptz" => KeyKind::Rendered(Rendering::Instant),
        _ => KeyKind::Rendered(Rendering::Plain),
    }
}

/// A boolean's value as PostgreSQL's `boolin` reads it: `true`, `yes`, `on`, `1` and their
/// unambiguous prefixes (`t`, `tr`, `ye`), and the same for false (`of` is `off`; `o` alone
/// is neither), whatever the case, around blanks.
pub fn boolean(text: &str) -> Option<bool> {
    let word = text.trim().to_ascii_lowercase();
    let prefix_of = |full: &str| !word.is_empty() && full.starts_with(word.as_str());
    match word.as_str() {
        "1" => Some(true),
        "0" => Some(false),
        "on" => Some(true),
        "of" | "off" => Some(false),
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}

/// A uuid's canonical text: lower-case hex in 8-4-4-4-12 groups, from 32 hex digits of any
/// case, hyphens anywhere, in braces or not.
pub fn canonical_uuid(s: &str) -> Result<String> {
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(s);
    let hex: String = inner.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!("expected a uuid, got {s:?}")));
    }
    let h = hex.to_ascii_lowercase();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_read_as_postgresql_reads_them() {
        for t in ["t", "TR", " tru ", "true", "y", "ye", "yes", "on", "1"] {
            assert_eq!(boolean(t), Some(true), "{t}");
        }
        for f in ["f", "fa", "fals", "FALSE", "n", "no", "of", "off", "0"] {
            assert_eq!(boolean(f), Some(false), "{f}");
        }
        for neither in ["", "o", "truth", "2", "yess"] {
            assert_eq!(boolean(neither), None, "{neither}");
        }
    }

    #[test]
    fn integer_kinds_carry_their_range() {
        assert_eq!(
            column_kind("int2", false),
            KeyKind::Integer {
                min: -32768,
                max: 32767
            }
        );
        assert_eq!(column_kind("varchar", false), KeyKind::Text);
        assert_eq!(column_kind("numeric", false), KeyKind::Decimal);
    }

    #[test]
    fn only_postgresql_spells_dates_padded_and_case_insensitive_text() {
        assert_eq!(column_kind("mood", true), KeyKind::Text);
        assert_eq!(
            column_kind("timestamp", false),
            KeyKind::Rendered(Rendering::Plain)
        );
        assert_eq!(
            column_kind("timestamptz", false),
            KeyKind::Rendered(Rendering::Instant)
        );
        assert_eq!(
            column_kind("bpchar", false),
            KeyKind::Rendered(Rendering::BlankPadded)
        );
        assert_eq!(
            column_kind("citext", false),
            KeyKind::Rendered(Rendering::CaseInsensitive)
        );
    }
}
