//! Canonical primary keys and cache-key names.
//!
//! One row has one cache key, whatever JSON spelling the client used:
//! `<cache_prefix><table>:<canonical pk>` where the canonical pk is compact JSON with the key
//! columns sorted by name (byte order) and each value in the form PostgreSQL's `row_to_json`
//! gives its type: integers and decimals as bare numbers without redundant zeros, booleans as
//! `true`/`false`, uuids as lower-case strings, text as itself. Values of every other type
//! (dates, timestamps, `char(n)`, `citext`, `inet`, ...) are spelled as PostgreSQL renders them
//! in JSON after reading the client's text, which only PostgreSQL can do: such a key is
//! *unconfirmed* until `pg::normalise` has asked it (see `KeyKind::Rendered`).
//! So `{"id":7}`, `{ "id" : 7 }` and `{"id":"7"}` (integer column) are all `{"id":7}`, and a key
//! computed from a row PostgreSQL rendered (an invalidation) lands on the same entry.

use crate::error::Error;
use crate::model::source;
use compact_str::CompactString;
pub use pgcache_rules::kind::{KeyKind, Rendering};
use pgcache_rules::kind::{boolean, canonical_uuid};
use serde_json::Value;
use smallvec::SmallVec;

/// A cache key's parts: the source it names (None: the default source), its table, its pk.
pub type SplitKey<'a> = (Option<&'a [u8]>, &'a [u8], &'a [u8]);

/// A cache key taken apart: `<prefix>[@<source>:]<table>:<pk JSON>`, as the source's name
/// (None: the default source), the table and the pk. The table ends at the first `:{` (a pk
/// is a JSON object, and table names with braces are refused), so the pk's braces are the
/// key's Redis Cluster hash tag.
pub fn split_cache_key<'a>(prefix: &str, key: &'a [u8]) -> Result<SplitKey<'a>, Error> {
    let shown = || String::from_utf8_lossy(key).into_owned();
    let Some(rest) = key.strip_prefix(prefix.as_bytes()) else {
        return Err(Error::invalid(format!(
            "{:?} is not a pgcache key: cache keys start with {prefix:?} (the cache_prefix \
             setting); PGCACHE.KEY <table> <pk_json> gives a row's key",
            shown()
        )));
    };
    let (source, rest) = match source::split(rest) {
        Some(split) => split,
        None => {
            return Err(Error::invalid(format!(
                "{:?} is not a pgcache key: after {prefix:?}, `@` starts a source's name, \
                 then `:`",
                shown()
            )));
        }
    };
    match rest.windows(2).position(|w| w == b":{") {
        Some(i) if i > 0 => Ok((source, &rest[..i], &rest[i + 1..])),
        _ => Err(Error::invalid(format!(
            "{:?} is not a pgcache key: expected {prefix}<table>:<pk JSON>, such as \
             {prefix}users:{{\"id\":7}}",
            shown()
        ))),
    }
}

/// Whether `name` may appear in a cache key: braces would move the key's Redis Cluster
/// hash tag off the pk.
pub fn brace_free(what: &str, name: &str) -> Result<(), Error> {
    if name.contains(['{', '}']) {
        return Err(Error::invalid(format!(
            "{what} {name:?} holds a brace: cache keys hash by the braces of their pk JSON in \
             Redis Cluster, and a brace before it would change every key's slot"
        )));
    }
    Ok(())
}

/// Largest pk JSON accepted; a key is a few columns, not a document.
pub const MAX_PK_JSON_BYTES: usize = 8 * 1024;

/// One key column of a canonical key: `(column, value as text)`.
pub type KeyColumn = (CompactString, CompactString);

/// A parsed, validated, canonical key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanonicalPk {
    /// The canonical JSON text (the cache-key suffix). Kept inline up to 24 bytes, as
    /// are column names and values below: a typical key (`{"id":123}`) then costs no
    /// allocation at all, and every cold read makes one.
    pub json: CompactString,
    /// `(column, value as text)` sorted by column: the query parameters. Inline for a
    /// one-column key (most are), so a key costs no allocation for its list.
    pub columns: SmallVec<[KeyColumn; 1]>,
    /// Some value is of a `Rendered` kind and still spelled as the client wrote it:
    /// `json` names no cache entry until PostgreSQL confirmed the spelling.
    pub unconfirmed: bool,
}

/// What the key of one table may and must contain.
pub trait KeyColumns {
    /// The kind of `column`, or None when the table has no such column usable in a key.
    fn kind_of(&self, column: &str) -> Option<KeyKind>;
    /// The exact column set a key must name (the primary key), or None when any non-empty
    /// set of existing columns is allowed (views, tables without a primary key).
    fn required(&self) -> Option<&[String]>;
    /// The table's display name, for error messages.
    fn table_name(&self) -> &str;
}

impl CanonicalPk {
    /// The cache key of this row in the table whose keys start with `key_prefix`
    /// (`<cache_prefix><table>:`).
    /// `cache_key`, shared (a fill's key is held by its ticket and the map of fills): made
    /// in one allocation.
    pub fn shared_cache_key(&self, key_prefix: &str) -> std::sync::Arc<str> {
        thread_local! {
            static BUFFER: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        BUFFER.with_borrow_mut(|buffer| {
            buffer.clear();
            buffer.push_str(key_prefix);
            buffer.push_str(&self.json);
            std::sync::Arc::from(buffer.as_str())
        })
    }

    pub fn cache_key(&self, key_prefix: &str) -> String {
        let mut key = String::with_capacity(key_prefix.len() + self.json.len());
        key.push_str(key_prefix);
        key.push_str(&self.json);
        key
    }

    /// This key with PostgreSQL's spellings of its `Rendered` values (`(column, JSON
    /// scalar)`): the canonical JSON. The query parameters stay as the client sent them.
    pub fn confirmed(mut self, rendered: &[(String, String)]) -> Result<CanonicalPk, Error> {
        let not_json = |e: serde_json::Error| {
            Error::invalid(format!("PostgreSQL's spelling is not JSON ({e})"))
        };
        // Columns sorted by name, values compact: re-serialising keeps the canonical form.
        let mut map: serde_json::Map<String, Value> =
            serde_json::from_str(&self.json).map_err(not_json)?;
        for (column, spelled) in rendered {
            map.insert(
                column.clone(),
                serde_json::from_str(spelled).map_err(not_json)?,
            );
        }
        self.json = Value::Object(map).to_string().into();
        self.unconfirmed = false;
        Ok(self)
    }
}

/// Builds the cache key for a canonical pk.
pub fn cache_key(prefix: &str, table: &str, canonical_pk: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + table.len() + 1 + canonical_pk.len());
    key.push_str(prefix);
    key.push_str(table);
    key.push(':');
    key.push_str(canonical_pk);
    key
}

/// Parses `pk_json` and returns its canonical form, or an error that says what is wrong.
pub fn canonicalise(pk_json: &[u8], table: &dyn KeyColumns) -> Result<CanonicalPk, Error> {
    if pk_json.len() > MAX_PK_JSON_BYTES {
        return Err(Error::invalid(format!(
            "primary key JSON is {} bytes, more than the {MAX_PK_JSON_BYTES} allowed",
            pk_json.len()
        )));
    }
    if let Some(pk) = already_canonical(pk_json, table) {
        return Ok(pk);
    }
    let value: Value = serde_json::from_slice(pk_json)
        .map_err(|e| Error::invalid(format!("primary key is not valid JSON ({e})")))?;
    canonicalise_value(&value, table)
}

/// The key when `pk_json` is already in canonical form (what documented clients send, and
/// what MULTIREAD arrays usually hold), read with one scan and no JSON tree; None for
/// anything else, which `canonicalise_value` then parses and normalises (or rejects). It
/// accepts only text that the full path would return unchanged, so both agree by
/// construction: every value is checked by the same `canonical_value` function.
fn already_canonical(pk_json: &[u8], table: &dyn KeyColumns) -> Option<CanonicalPk> {
    let text = std::str::from_utf8(pk_json).ok()?;
    let mut rest = text.strip_prefix('{')?;
    let mut columns: SmallVec<[KeyColumn; 1]> = SmallVec::new();
    loop {
        let (column, after) = plain_string(rest)?;
        if columns.last().is_some_and(|(c, _)| c.as_str() >= column) {
            return None;
        }
        let kind = table.kind_of(column)?;
        let after = after.strip_prefix(':')?;
        let (token, after) = match after.as_bytes().first()? {
            b'"' => {
                let (inner, rest) = plain_string(after)?;
                (&after[..inner.len() + 2], rest)
            }
            _ => after.split_at(after.find([',', '}'])?),
        };
        let param = match kind {
            // The common key, read without building a JSON number or a second string: a
            // bare integer token is exactly the scalar the full path would check, and is
            // canonical when it has no leading zero, is not `-0`, and is within range.
            KeyKind::Integer { min, max } if is_bare_integer(token) => {
                let digits = token.strip_prefix('-').unwrap_or(token);
                let canonical = !(digits.starts_with('0') && (digits.len() > 1 || digits != token));
                let n: i128 = token.parse().ok()?;
                (canonical && (min..=max).contains(&n)).then(|| token.into())?
            }
            _ => {
                let (param, as_json) =
                    canonical_value(kind, &serde_json::from_str(token).ok()?).ok()?;
                if as_json != token {
                    return None;
                }
                param.into()
            }
        };
        columns.push((column.into(), param));
        rest = match after.as_bytes().first()? {
            b',' => &after[1..],
            b'}' if after.len() == 1 => break,
            _ => return None,
        };
    }
    if let Some(required) = table.required() {
        let named = |c: &String| columns.iter().any(|(n, _)| n == c);
        if required.len() != columns.len() || !required.iter().all(named) {
            return None;
        }
    }
    let unconfirmed = columns
        .iter()
        .any(|(c, _)| matches!(table.kind_of(c), Some(KeyKind::Rendered(_))));
    Some(CanonicalPk {
        json: text.into(),
        columns,
        unconfirmed,
    })
}

/// `-?[0-9]+`: a JSON integer as a client writes it (maybe not canonical: `007`, `-0`).
fn is_bare_integer(token: &str) -> bool {
    let digits = token.strip_prefix('-').unwrap_or(token);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A JSON string at the start of `s` that needs no unescaping (no `\`, no control
/// characters): its contents and the text after the closing quote.
fn plain_string(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_prefix('"')?;
    let end = body.find(|c: char| c == '"' || c == '\\' || c < ' ')?;
    (body.as_bytes()[end] == b'"').then(|| (&body[..end], &body[end + 1..]))
}

/// Canonicalises an already-parsed key object (used by MULTIREAD and notifications).
pub fn canonicalise_value(value: &Value, table: &dyn KeyColumns) -> Result<CanonicalPk, Error> {
    let Value::Object(map) = value else {
        return Err(Error::invalid(format!(
            "primary key must be a JSON object such as {{\"id\":1}}, got {}",
            json_type_name(value)
        )));
    };
    if map.is_empty() {
        return Err(Error::invalid(
            "primary key object is empty: name the key columns",
        ));
    }
    if let Some(required) = table.required() {
        let missing: Vec<&str> = required
            .iter()
            .map(String::as_str)
            .filter(|c| !map.contains_key(*c))
            .collect();
        let extra: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !required.iter().any(|r| r == k))
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            let mut msg = format!(
                "primary key of {} is ({})",
                table.table_name(),
                required.join(", ")
            );
            if !missing.is_empty() {
                msg.push_str(&format!("; missing: {}", missing.join(", ")));
            }
            if !extra.is_empty() {
                msg.push_str(&format!("; not key columns: {}", extra.join(", ")));
            }
            return Err(Error::invalid(msg));
        }
    }
    // serde_json's map is ordered by key bytes, which is the canonical order.
    let mut json = String::from("{");
    let mut columns = SmallVec::with_capacity(map.len());
    let mut unconfirmed = false;
    for (i, (column, value)) in map.iter().enumerate() {
        let kind = table.kind_of(column).ok_or_else(|| {
            Error::invalid(format!(
                "column {column:?} does not exist in {}",
                table.table_name()
            ))
        })?;
        unconfirmed |= matches!(kind, KeyKind::Rendered(_));
        let (text, as_json) = canonical_value(kind, value)
            .map_err(|e| Error::invalid(format!("bad value for column {column:?}: {e}")))?;
        if i > 0 {
            json.push(',');
        }
        json.push_str(&Value::String(column.clone()).to_string());
        json.push(':');
        json.push_str(&as_json);
        columns.push((column.as_str().into(), text.into()));
    }
    json.push('}');
    Ok(CanonicalPk {
        json: json.into(),
        columns,
        unconfirmed,
    })
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Returns (parameter text, canonical JSON) for one key value.
fn canonical_value(kind: KeyKind, value: &Value) -> Result<(String, String), Error> {
    let scalar = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => return Err(Error::invalid("null never matches a key")),
        other => {
            return Err(Error::invalid(format!(
                "expected a scalar, got {}",
                json_type_name(other)
            )));
        }
    };
    match kind {
        KeyKind::Integer { min, max } => {
            let n = integer_in_range(&scalar, min, max)?;
            Ok((n.clone(), n))
        }
        KeyKind::Decimal => {
            if matches!(value, Value::Bool(_)) {
                return Err(Error::invalid("expected a number, got a boolean"));
            }
            let n = canonical_decimal(&scalar)?;
            Ok((n.clone(), n))
        }
        KeyKind::Bool => match scalar.as_str() {
            "true" | "false" if !matches!(value, Value::Number(_)) => Ok((scalar.clone(), scalar)),
            _ => Err(Error::invalid(format!(
                "expected true or false, got {value}"
            ))),
        },
        KeyKind::Uuid => {
            let u = canonical_uuid(&scalar)?;
            Ok((u.clone(), Value::String(u).to_string()))
        }
        KeyKind::Text | KeyKind::Rendered(_) => {
            Ok((scalar.clone(), Value::String(scalar).to_string()))
        }
    }
}

/// The canonical spelling of a query parameter of a column type's `kind` (PGCACHE.QUERY):
/// integers and uuids as keys spell them, booleans as `true`/`false`; every other type as
/// sent, since only PostgreSQL knows which of its spellings are one value (`1.50` and `1.5`
/// are equal numerics that display differently), and distinct spellings only cost a miss.
pub fn canonical_param(kind: KeyKind, text: &str) -> Result<String, Error> {
    match kind {
        KeyKind::Integer { min, max } => integer_in_range(text.trim(), min, max),
        KeyKind::Uuid => Ok(canonical_uuid(text.trim())?),
        KeyKind::Bool => Ok(match boolean(text) {
            Some(b) => b.to_string(),
            None => text.to_string(),
        }),
        KeyKind::Decimal | KeyKind::Text | KeyKind::Rendered(_) => Ok(text.to_string()),
    }
}

/// The canonical text of the integer `scalar`, checked against the column's range.
fn integer_in_range(scalar: &str, min: i128, max: i128) -> Result<String, Error> {
    let n = canonical_integer(scalar)?;
    let parsed: i128 = n
        .parse()
        .map_err(|_| Error::invalid(format!("{scalar:?} is out of range")))?;
    if parsed < min || parsed > max {
        return Err(Error::invalid(format!(
            "{scalar} is out of range for this column ({min}..{max})"
        )));
    }
    Ok(n)
}

fn canonical_integer(s: &str) -> Result<String, Error> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(format!("expected an integer, got {s:?}")));
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Ok("0".into());
    }
    if trimmed.len() > 30 {
        return Err(Error::invalid(format!("{s} is out of range")));
    }
    Ok(if negative {
        format!("-{trimmed}")
    } else {
        trimmed.to_string()
    })
}

/// Largest exponent shift accepted in a decimal key, to keep canonical forms small.
const MAX_DECIMAL_EXPONENT: i64 = 1000;

/// Plain decimal notation without exponent, leading zeros or trailing fractional zeros:
/// `1.50`, `1.5e0` and `"01.5"` all become `1.5`; `-0.0` becomes `0`.
fn canonical_decimal(s: &str) -> Result<String, Error> {
    let bad = || Error::invalid(format!("expected a decimal number, got {s:?}"));
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => {
            let e: i64 = rest[i + 1..].parse().map_err(|_| bad())?;
            (&rest[..i], e)
        }
        None => (rest, 0),
    };
    if exponent.abs() > MAX_DECIMAL_EXPONENT {
        return Err(Error::invalid(format!(
            "{s} has an exponent too large for a key"
        )));
    }
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let digits: String = format!("{int_part}{frac_part}");
    // value = digits * 10^(point_pos - digits.len()), with point_pos digits before the point.
    let point = int_part.len() as i64 + exponent;
    let digits = digits.trim_start_matches('0');
    let leading_zeros_removed = (int_part.len() + frac_part.len()) as i64 - digits.len() as i64;
    let point = point - leading_zeros_removed;
    let digits = digits.trim_end_matches('0');
    if digits.is_empty() {
        return Ok("0".into());
    }
    let len = digits.len() as i64;
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(digits);
    } else if point >= len {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', (point - len) as usize));
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
    Ok(out)
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    struct Table {
        pk: Option<Vec<String>>,
        cols: Vec<(&'static str, KeyKind)>,
    }

    impl KeyColumns for Table {
        fn kind_of(&self, column: &str) -> Option<KeyKind> {
            self.cols
                .iter()
                .find(|(c, _)| *c == column)
                .map(|(_, k)| *k)
        }
        fn required(&self) -> Option<&[String]> {
            self.pk.as_deref()
        }
        fn table_name(&self) -> &str {
            "t"
        }
    }

    const INT4: KeyKind = KeyKind::Integer {
        min: i32::MIN as i128,
        max: i32::MAX as i128,
    };

    fn users() -> Table {
        Table {
            pk: Some(vec!["id".into()]),
            cols: vec![("id", INT4), ("name", KeyKind::Text)],
        }
    }

    fn composite() -> Table {
        Table {
            pk: Some(vec!["region".into(), "id".into()]),
            cols: vec![("region", KeyKind::Text), ("id", INT4)],
        }
    }

    fn canon(t: &Table, s: &str) -> String {
        canonicalise(s.as_bytes(), t).unwrap().json.into_string()
    }

    #[test]
    fn spellings_of_one_integer_key_agree() {
        let t = users();
        for s in [
            r#"{"id":7}"#,
            r#"{ "id" : 7 }"#,
            r#"{"id":"7"}"#,
            r#"{"id":"007"}"#,
            r#"{"id":+7}"#.replace('+', "").as_str(),
        ] {
            assert_eq!(canon(&t, s), r#"{"id":7}"#, "{s}");
        }
        assert_eq!(
            canonicalise(br#"{"id":7}"#, &t).unwrap().columns.to_vec(),
            vec![("id".into(), "7".into())]
        );
    }

    #[test]
    fn composite_keys_are_sorted_by_column() {
        let t = composite();
        let a = canon(&t, r#"{"region":"eu","id":3}"#);
        let b = canon(&t, r#"{"id":"3","region":"eu"}"#);
        assert_eq!(a, r#"{"id":3,"region":"eu"}"#);
        assert_eq!(a, b);
    }

    #[test]
    fn wrong_shapes_are_errors_that_say_why() {
        let t = users();
        let err = |s: &str| canonicalise(s.as_bytes(), &t).unwrap_err();
        assert!(err("{").message().contains("not valid JSON"));
        assert!(err("[1]").message().contains("must be a JSON object"));
        assert!(err("{}").message().contains("empty"));
        assert!(err(r#"{"name":"x"}"#).message().contains("missing: id"));
        assert!(
            err(r#"{"id":1,"name":"x"}"#)
                .message()
                .contains("not key columns: name")
        );
        assert!(
            err(r#"{"id":"abc"}"#)
                .message()
                .contains("expected an integer")
        );
        assert!(
            err(r#"{"id":1.5}"#)
                .message()
                .contains("expected an integer")
        );
        assert!(err(r#"{"id":null}"#).message().contains("null"));
        assert!(err(r#"{"id":[1]}"#).message().contains("scalar"));
        assert!(
            err(r#"{"id":99999999999}"#)
                .message()
                .contains("out of range")
        );
        assert!(
            err(r#"{"id":123456789012345678901234567890123456789}"#)
                .message()
                .contains("out of range")
        );
        let huge = format!(r#"{{"id":"{}"}}"#, "1".repeat(MAX_PK_JSON_BYTES));
        assert!(err(&huge).message().contains("more than"));
    }

    #[test]
    fn tables_without_primary_key_take_any_existing_columns() {
        let t = Table {
            pk: None,
            cols: vec![("email", KeyKind::Text), ("n", INT4)],
        };
        assert_eq!(canon(&t, r#"{"email":"a@b"}"#), r#"{"email":"a@b"}"#);
        assert!(
            canonicalise(br#"{"nope":1}"#, &t)
                .unwrap_err()
                .message()
                .contains("does not exist")
        );
    }

    #[test]
    fn decimals_normalise() {
        for (input, want) in [
            ("1.50", "1.5"),
            ("1.5e0", "1.5"),
            ("01.5", "1.5"),
            ("-0.0", "0"),
            ("100", "100"),
            ("1e2", "100"),
            ("1.23E-3", "0.00123"),
            (
                "12345678901234567890.123456789",
                "12345678901234567890.123456789",
            ),
            (".5", "0.5"),
            ("-2.500", "-2.5"),
        ] {
            assert_eq!(canonical_decimal(input).unwrap(), want, "{input}");
        }
        for bad in ["", "abc", "1.2.3", "1e", "1e99999", "."] {
            assert!(canonical_decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_keys_split_into_table_and_pk() {
        fn split(k: &str) -> Result<SplitKey<'_>, Error> {
            split_cache_key("pg_cache:", k.as_bytes())
        }
        assert_eq!(
            split(r#"pg_cache:users:{"id":7}"#).unwrap(),
            (None, b"users".as_slice(), br#"{"id":7}"#.as_slice())
        );
        assert_eq!(
            split(r#"pg_cache:sales.orders:{"a":"x:{y"}"#).unwrap(),
            (
                None,
                b"sales.orders".as_slice(),
                br#"{"a":"x:{y"}"#.as_slice()
            )
        );
        assert_eq!(
            split(r#"pg_cache:@analytics:users:{"id":7}"#).unwrap(),
            (
                Some(b"analytics".as_slice()),
                b"users".as_slice(),
                br#"{"id":7}"#.as_slice()
            )
        );
        for bad in [
            "users:{\"id\":7}",
            "pg_cache:users",
            "pg_cache::{}",
            "pg_cache:",
        ] {
            let e = split(bad).unwrap_err();
            assert!(e.message().contains("not a pgcache key"), "{bad}: {e}");
        }
        assert!(brace_free("table", "users").is_ok());
        assert!(brace_free("table", "us{ers").is_err());
    }

    #[test]
    fn keys_postgresql_spells_stay_unconfirmed_until_it_has() {
        let t = Table {
            pk: Some(vec!["at".into(), "id".into()]),
            cols: vec![("at", KeyKind::Rendered(Rendering::Plain)), ("id", INT4)],
        };
        for spelling in [
            r#"{"at":"2024-01-02 03:04:05","id":7}"#,
            r#"{ "id": "7", "at": "2024-01-02 03:04:05" }"#,
        ] {
            let pk = canonicalise(spelling.as_bytes(), &t).unwrap();
            assert!(pk.unconfirmed, "{spelling}");
            assert_eq!(pk.columns[0], ("at".into(), "2024-01-02 03:04:05".into()));
            let confirmed = pk
                .confirmed(&[("at".into(), r#""2024-01-02T03:04:05""#.into())])
                .unwrap();
            assert!(!confirmed.unconfirmed);
            assert_eq!(confirmed.json, r#"{"at":"2024-01-02T03:04:05","id":7}"#);
            assert_eq!(
                confirmed.columns[0].1, "2024-01-02 03:04:05",
                "the query still binds what the client sent"
            );
        }
        assert!(!canonicalise(br#"{"id":7}"#, &users()).unwrap().unconfirmed);
    }

    #[test]
    fn uuids_and_bools_and_text() {
        let t = Table {
            pk: Some(vec!["u".into(), "b".into(), "s".into()]),
            cols: vec![
                ("u", KeyKind::Uuid),
                ("b", KeyKind::Bool),
                ("s", KeyKind::Text),
            ],
        };
        assert_eq!(
            canon(
                &t,
                r#"{"u":"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11","b":"true","s":7}"#
            ),
            r#"{"b":true,"s":"7","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}"#
        );
        assert!(
            canonicalise(br#"{"u":"nope","b":true,"s":"x"}"#, &t)
                .unwrap_err()
                .message()
                .contains("uuid")
        );
        assert!(
            canonicalise(
                br#"{"u":"a0eebc999c0b4ef8bb6d6bb9bd380a11","b":1,"s":"x"}"#,
                &t
            )
            .unwrap_err()
            .message()
            .contains("true or false")
        );
    }

    #[test]
    fn text_keys_escape_like_json() {
        let t = Table {
            pk: Some(vec!["s".into()]),
            cols: vec![("s", KeyKind::Text)],
        };
        assert_eq!(
            canon(&t, r#"{"s":"a\"b\u00e9\n"}"#),
            "{\"s\":\"a\\\"bé\\n\"}"
        );
    }

    /// The tables the spellings below are written for.
    struct SpellingTables {
        users: Table,
        composite: Table,
        decimal: Table,
        mixed: Table,
        no_pk: Table,
    }

    fn spelling_tables() -> SpellingTables {
        let decimal = Table {
            pk: Some(vec!["d".into()]),
            cols: vec![("d", KeyKind::Decimal)],
        };
        let mixed = Table {
            pk: Some(vec!["b".into(), "s".into(), "u".into()]),
            cols: vec![
                ("u", KeyKind::Uuid),
                ("b", KeyKind::Bool),
                ("s", KeyKind::Text),
            ],
        };
        let no_pk = Table {
            pk: None,
            cols: vec![("email", KeyKind::Text), ("n", INT4)],
        };
        SpellingTables {
            users: users(),
            composite: composite(),
            decimal,
            mixed,
            no_pk,
        }
    }

    /// Hand-made spellings of keys of every kind, good and bad.
    fn hand_made_keys(t: &SpellingTables) -> Vec<(&Table, String)> {
        let SpellingTables {
            users,
            composite,
            decimal,
            mixed,
            no_pk,
        } = t;
        let integers = [
            "7",
            "\"7\"",
            "007",
            "-0",
            "0",
            "-5",
            "2147483647",
            "2147483648",
            "1.0",
            "1e2",
            "true",
            "null",
            "[7]",
            " 7",
        ];
        let texts = [
            "\"eu\"",
            "\"a\\\"b\"",
            "\"é\"",
            "\"\"",
            "\"\\u00e9\"",
            "7",
            "\"x y\"",
            "true",
        ];
        let decimals = [
            "1.5", "1.50", "\"1.5\"", "0", "-0.0", "1e2", "0.05", "-2", "100", "true",
        ];
        let uuids = [
            "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"",
            "\"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11\"",
            "\"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}\"",
            "\"nope\"",
        ];
        let bools = ["true", "false", "\"true\"", "1"];
        let mut inputs: Vec<(&Table, String)> = Vec::new();
        for i in integers {
            inputs.push((users, format!("{{\"id\":{i}}}")));
            inputs.push((users, format!("{{ \"id\": {i} }}")));
            inputs.push((users, format!("{{\"id\":{i},\"id\":{i}}}")));
            inputs.push((users, format!("{{\"id\":{i},\"name\":\"x\"}}")));
            inputs.push((no_pk, format!("{{\"n\":{i}}}")));
            inputs.push((no_pk, format!("{{\"n\":{i},\"n\":{i}}}")));
            for t in texts {
                inputs.push((composite, format!("{{\"id\":{i},\"region\":{t}}}")));
                inputs.push((composite, format!("{{\"region\":{t},\"id\":{i}}}")));
                inputs.push((no_pk, format!("{{\"email\":{t},\"n\":{i}}}")));
            }
        }
        for d in decimals {
            inputs.push((decimal, format!("{{\"d\":{d}}}")));
        }
        for u in uuids {
            for b in bools {
                for t in texts {
                    inputs.push((mixed, format!("{{\"b\":{b},\"s\":{t},\"u\":{u}}}")));
                }
            }
        }
        for extra in [
            "{}",
            "{\"id\":7",
            "{\"id\":7}}",
            "[]",
            "{\"id\":7} ",
            "{\"zz\":7}",
        ] {
            inputs.push((users, extra.to_string()));
        }
        inputs
    }

    /// `n` single-byte mutations of `inputs` (a fixed pseudo-random sequence).
    fn mutations<'a>(inputs: &[(&'a Table, String)], n: usize) -> Vec<(&'a Table, String)> {
        let alphabet = b"{}[]\":,.-+0179eE\\ atrufln\x01";
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize % bound
        };
        (0..n)
            .filter_map(|_| {
                let (table, input) = &inputs[next(inputs.len())];
                let mut bytes = input.clone().into_bytes();
                let at = next(bytes.len());
                bytes[at] = alphabet[next(alphabet.len())];
                String::from_utf8(bytes).ok().map(|m| (*table, m))
            })
            .collect()
    }

    /// The one-scan reader of canonical keys must agree with the full path on every input
    /// (hand-made spellings and thousands of mutations of them): whatever it accepts, the
    /// full path returns unchanged; every key the full path returns, it accepts (unless it
    /// holds escapes).
    #[test]
    fn canonical_keys_are_read_alike_by_both_paths() {
        let tables = spelling_tables();
        let mut inputs = hand_made_keys(&tables);
        let mutated = mutations(&inputs, 4000);
        inputs.extend(mutated);
        let mut accepted = 0;
        for (table, input) in &inputs {
            let full = serde_json::from_str::<Value>(input)
                .map_err(|e| Error::invalid(e.to_string()))
                .and_then(|v| canonicalise_value(&v, *table));
            if let Some(fast) = already_canonical(input.as_bytes(), *table) {
                accepted += 1;
                assert_eq!(Ok(fast), full, "{input}");
            }
            // Text needing escapes (rare in keys) is left to the full path.
            if let Some(pk) = full.ok().filter(|pk| !pk.json.contains('\\')) {
                assert_eq!(
                    already_canonical(pk.json.as_bytes(), *table),
                    Some(pk),
                    "{input}"
                );
            }
        }
        assert!(
            accepted > 50,
            "only {accepted} inputs took the one-scan path"
        );
    }

    #[test]
    fn cache_key_layout() {
        assert_eq!(
            cache_key("pg_cache:", "users", r#"{"id":7}"#),
            r#"pg_cache:users:{"id":7}"#
        );
    }
}
