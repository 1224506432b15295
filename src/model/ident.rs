//! PostgreSQL identifiers: parsing the `<table>` argument and quoting names for SQL.
//!
//! `<table>` is `name` or `schema.name`, each part plain (folded to lower case, as PostgreSQL
//! does) or double-quoted (kept exactly, `""` for a quote). An unqualified name means schema
//! `public`: resolution never depends on a connection's `search_path`, so one name is one
//! cache namespace.

use crate::error::Error;
pub use pgcache_rules::quote_ident;
use std::fmt;

/// Longest `<table>` argument accepted: two 63-byte identifiers, quotes and a dot, with room.
pub const MAX_TABLE_ARG_BYTES: usize = 300;

/// A table or view name, resolved to its schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    /// The name as it appears in cache keys and events: `name` for schema `public`,
    /// otherwise `schema.name`; a part that is not a plain lower-case identifier is quoted,
    /// so the form is unambiguous and parses back to the same table.
    pub fn display(&self) -> String {
        if self.schema == "public" {
            display_part(&self.name)
        } else {
            format!(
                "{}.{}",
                display_part(&self.schema),
                display_part(&self.name)
            )
        }
    }

    /// `"schema"."name"` for splicing into SQL text.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

fn is_plain(part: &str) -> bool {
    let mut chars = part.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
}

fn display_part(part: &str) -> String {
    if is_plain(part) {
        part.to_string()
    } else {
        quote_ident(part)
    }
}

/// Parses `name`, `schema.name`, `"Name"`, `"my schema"."My.Table"`.
pub fn parse_table(input: &str) -> Result<QualifiedName, Error> {
    if input.is_empty() {
        return Err(Error::invalid("table name is empty"));
    }
    if input.len() > MAX_TABLE_ARG_BYTES {
        return Err(Error::invalid(format!(
            "table name is longer than {MAX_TABLE_ARG_BYTES} bytes"
        )));
    }
    if input.contains('\0') {
        return Err(Error::invalid(
            "table name contains a NUL byte, which PostgreSQL names cannot hold",
        ));
    }
    let mut parts = Vec::new();
    let mut rest = input;
    loop {
        let (part, after) = parse_part(rest)
            .map_err(|e| Error::invalid(format!("invalid table name {input:?}: {e}")))?;
        parts.push(part);
        match after.strip_prefix('.') {
            Some(next) => rest = next,
            None if after.is_empty() => break,
            None => {
                return Err(Error::invalid(format!(
                    "invalid table name {input:?}: unexpected {after:?}"
                )));
            }
        }
    }
    match parts.len() {
        1 => Ok(QualifiedName {
            schema: "public".into(),
            name: parts.remove(0),
        }),
        2 => {
            let name = parts.remove(1);
            Ok(QualifiedName {
                schema: parts.remove(0),
                name,
            })
        }
        _ => Err(Error::invalid(format!(
            "invalid table name {input:?}: expected name or schema.name"
        ))),
    }
}

fn parse_part(s: &str) -> Result<(String, &str), Error> {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if quoted[i + 1..].starts_with('"') {
                    out.push('"');
                    chars.next();
                } else {
                    if out.is_empty() {
                        return Err(Error::invalid("empty quoted identifier"));
                    }
                    return Ok((out, &quoted[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        return Err(Error::invalid("unterminated quoted identifier"));
    }
    let end = s.find('.').unwrap_or(s.len());
    let part = &s[..end];
    if part.is_empty() {
        return Err(Error::invalid("empty identifier"));
    }
    let valid_start = part
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_');
    if !valid_start
        || !part
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
    {
        return Err(Error::invalid(format!(
            "{part:?} is not a plain identifier (double-quote names with other characters)"
        )));
    }
    Ok((part.to_lowercase(), &s[end..]))
}

#[cfg(test)]
pub(crate) mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn q(schema: &str, name: &str) -> QualifiedName {
        QualifiedName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    #[test]
    fn unqualified_names_are_public_and_folded() {
        assert_eq!(parse_table("users").unwrap(), q("public", "users"));
        assert_eq!(parse_table("Users").unwrap(), q("public", "users"));
        assert_eq!(parse_table("public.users").unwrap(), q("public", "users"));
    }

    #[test]
    fn quoted_parts_keep_case_dots_and_quotes() {
        assert_eq!(
            parse_table(r#""My Schema"."A.b""c""#).unwrap(),
            q("My Schema", r#"A.b"c"#)
        );
    }

    #[test]
    fn bad_names_are_rejected_with_a_reason() {
        for bad in [
            "",
            "a.b.c",
            "a.",
            ".a",
            "\"open",
            "\"\"",
            "users; drop table x",
            "1abc",
        ] {
            assert!(parse_table(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_table(&"a".repeat(400)).is_err());
    }

    #[test]
    fn display_round_trips_through_parse() {
        for name in [
            q("public", "users"),
            q("sales", "orders"),
            q("public", "Users"),
            q("we ird", "a.b\"c"),
        ] {
            assert_eq!(parse_table(&name.display()).unwrap(), name);
        }
        assert_eq!(q("public", "users").display(), "users");
        assert_eq!(q("sales", "orders").display(), "sales.orders");
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(q("s", "t").quoted(), "\"s\".\"t\"");
    }
}
