//! Sources (issue #53): one PostgreSQL database each, and where their keys live.
//!
//! The unnamed default source is pgcache as it has always been: its keys start with the
//! `cache_prefix` (`pg_cache:users:{"id":7}`). A named source's keys carry its name right
//! after the prefix, marked by `@`: `pg_cache:@analytics:users:{"id":7}`. The marker keeps
//! the two apart where a bare name would not: `~pg_cache:analytics:*` would also match the
//! default source's table `analytics` (`pg_cache:analytics:{"id":1}`), so an ACL key pattern
//! could not confine a user to one source; `~pg_cache:@analytics:*` does. No table display
//! (a lower-case identifier, or one in double quotes) and no internal tag (`~q:`, `~epoch`)
//! starts with `@`, so a key names its source without ambiguity. Hash tags (the pk's braces)
//! are untouched: a key's slot does not depend on its source.
//!
//! So far this server serves the default source only: a key naming another is refused
//! (`unknown`). Building named sources is design/53's plan, step by step.

use crate::error::Error;

/// What marks a source's name in a key, right after the cache prefix.
pub const MARK: u8 = b'@';

/// Longest source name: a named source's replication slot is `pgcache_<name>`, and on a
/// cluster `_<node id>` more, within PostgreSQL's 63 bytes.
pub const MAX_NAME_LEN: usize = 32;

/// A key after its cache prefix: the source it names (None: the default source) and the
/// rest, which reads as a default source's key does. None when the `@` segment is not a
/// source name followed by `:`.
pub fn split(after_prefix: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let Some(named) = after_prefix.strip_prefix(&[MARK]) else {
        return Some((None, after_prefix));
    };
    let end = named.iter().position(|&b| b == b':')?;
    let name = &named[..end];
    let well_formed = matches!(name.first(), Some(b'a'..=b'z'))
        && name.len() <= MAX_NAME_LEN
        && name
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'));
    well_formed.then_some((Some(name), &named[end + 1..]))
}

/// The error for a key or command naming a source this server does not serve.
pub fn unknown(name: &[u8]) -> Error {
    Error::invalid(format!(
        "no source named {:?}: this server serves the default source only",
        String::from_utf8_lossy(name)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::key::cache_key;
    use proptest::prelude::*;

    #[test]
    fn a_key_names_its_source_after_the_prefix() {
        assert_eq!(split(b"users:{}"), Some((None, &b"users:{}"[..])));
        assert_eq!(
            split(b"@analytics:users:{}"),
            Some((Some(&b"analytics"[..]), &b"users:{}"[..]))
        );
        assert_eq!(split(br#""@x":{}"#), Some((None, &br#""@x":{}"#[..])));
        for malformed in [
            &b"@:users"[..],
            b"@Analytics:users",
            b"@analytics",
            b"@a-b:t",
        ] {
            assert_eq!(split(malformed), None, "{malformed:?}");
        }
    }

    proptest! {
        /// A key built for a source splits back into that source and the default-source
        /// key it would otherwise be.
        #[test]
        fn keys_split_back_into_their_source(
            name in proptest::option::of("[a-z][a-z0-9_]{0,31}"),
            table in "[a-z_][a-z0-9_]{0,20}|\"[ -~]{1,20}\"",
            pk in "\\{[ -~]{0,20}\\}",
        ) {
            let prefix = match &name {
                Some(name) => format!("pg_cache:@{name}:"),
                None => "pg_cache:".to_string(),
            };
            let key = cache_key(&prefix, &table, &pk);
            let after = key.strip_prefix("pg_cache:").unwrap().as_bytes();
            let (source, rest) = split(after).unwrap();
            prop_assert_eq!(source, name.as_deref().map(str::as_bytes));
            let default_key = format!("{table}:{pk}");
            prop_assert_eq!(rest, default_key.as_bytes());
        }
    }
}
