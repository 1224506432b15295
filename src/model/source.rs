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
//! Because named keys nest under the default prefix, "every key of the default source" is not
//! a prefix: it is the prefix not followed by `@` (`Scope`).
//!
//! A key or command naming a source the server was not loaded with is refused (`unknown`).

use crate::error::Error;
use std::sync::{Arc, RwLock};

/// What marks a source's name in a key, right after the cache prefix.
pub const MARK: u8 = b'@';

/// Longest source name: a named source's replication slot is `pgcache_<name>`, and on a
/// cluster `_<node id>` more, within PostgreSQL's 63 bytes.
pub const MAX_NAME_LEN: usize = 32;

/// Refuses `name` unless it may name a source: `[a-z][a-z0-9_]*`, at most `MAX_NAME_LEN`
/// bytes, not `default` (the unnamed source's word), and not one that makes one of its
/// environment variables (`PGCACHE_<NAME>_<SETTING>`) read as the server's own setting
/// (`PGCACHE_<SETTING>`: were there settings `max_rows` and `query_max_rows`, a source
/// `query` would read `PGCACHE_QUERY_MAX_ROWS`, the second's, for its own first).
/// `settings`: every setting's name.
pub fn check_name(name: &str, settings: &[&str]) -> Result<(), Error> {
    let refused = |why: &str| {
        Err(Error::invalid(format!(
            "{name:?} cannot name a source: {why}"
        )))
    };
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b'a'..=b'z') => {}
        _ => return refused("a source's name starts with a lower-case letter (a-z)"),
    }
    if !bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_')) {
        return refused("use lower-case letters, digits and underscores only");
    }
    if name.len() > MAX_NAME_LEN {
        return refused(&format!(
            "at most {MAX_NAME_LEN} characters (its replication slot's name must fit)"
        ));
    }
    if name == "default" {
        return refused("it is the unnamed source's word");
    }
    let own = format!("{name}_");
    if let Some(setting) = settings.iter().find(|s| {
        s.strip_prefix(&own)
            .is_some_and(|rest| settings.contains(&rest))
    }) {
        return refused(&format!(
            "its setting variables would be read as the server's own \
             (PGCACHE_{} is the {setting} setting)",
            setting.to_uppercase()
        ));
    }
    Ok(())
}

/// Where the keys of source `name` (None: the default source) start.
pub fn key_prefix(cache_prefix: &str, name: Option<&str>) -> String {
    match name {
        None => cache_prefix.to_string(),
        Some(name) => format!("{cache_prefix}{}{name}:", char::from(MARK)),
    }
}

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

/// A source's number, which travels with what belongs to it (a schema, a statement, a job, a
/// change set) and picks its part of each layer's state (`Parts::of`). Numbers, not names:
/// the hit path compares and indexes them without touching a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId(u16);

impl SourceId {
    /// The unnamed default source: pgcache as it was before there were several, its keys
    /// and settings unchanged.
    pub const DEFAULT: SourceId = SourceId(0);

    /// Its number (0: the default source), where a value must differ by source (the
    /// heartbeats' number).
    pub fn number(self) -> u16 {
        self.0
    }

    /// The named source numbered `number` (from 1): the registry hands numbers out
    /// (`config::current::add_named`).
    pub fn numbered(number: u16) -> SourceId {
        assert!(number > 0, "0 numbers the default source");
        SourceId(number)
    }
}

/// One layer's state for every source: the default source's part held inline, so a `static`
/// can hold it and the hit path reaches it as it reached the layer's statics before (no
/// lock, no reference count), and the named sources' parts behind a lock, by number.
pub struct Parts<T> {
    default: T,
    /// Named sources' parts, at their number minus one; `None` where one was removed. Taken
    /// only for a named source: the default's never waits on it.
    named: RwLock<Vec<Option<Arc<T>>>>,
}

impl<T> Parts<T> {
    /// The default source's part, and no named ones.
    pub const fn new(default: T) -> Parts<T> {
        Parts {
            default,
            named: RwLock::new(Vec::new()),
        }
    }

    /// The part of source `id`. The default's costs a comparison; a named one's an
    /// uncontended read lock and a reference count, held as long as the `PartRef`.
    #[inline]
    pub fn of(&self, id: SourceId) -> PartRef<'_, T> {
        if id == SourceId::DEFAULT {
            PartRef::Default(&self.default)
        } else {
            PartRef::Named(self.named_part(id))
        }
    }

    /// Runs `f` on every installed part with its source: the default source's, then the
    /// named ones' (taken out of the lock first, so `f` may install or remove parts, or
    /// wait). For the tasks that serve every source (applying changes, observing what the
    /// server keeps, sweeping the indexes).
    pub fn each(&self, mut f: impl FnMut(SourceId, &T)) {
        f(SourceId::DEFAULT, &self.default);
        let named: Vec<(SourceId, Arc<T>)> = (self.named.read().unwrap().iter().enumerate())
            .filter_map(|(at, part)| Some((SourceId(at as u16 + 1), part.clone()?)))
            .collect();
        for (id, part) in named {
            f(id, &part);
        }
    }

    /// Installs the part of named source `id`, before anything can ask for it (its number
    /// is handed out to commands and jobs only afterwards).
    pub fn install(&self, id: SourceId, part: T) {
        assert_ne!(id, SourceId::DEFAULT, "the default source's part is inline");
        let mut named = self.named.write().unwrap();
        let at = usize::from(id.0) - 1;
        if named.len() <= at {
            named.resize_with(at + 1, || None);
        }
        named[at] = Some(Arc::new(part));
    }

    /// Drops this layer's hold on the part of named source `id` (a loan still out keeps it
    /// alive until returned), once nothing asks for it by number any more.
    pub fn forget_named(&self, id: SourceId) {
        if id == SourceId::DEFAULT {
            return;
        }
        if let Some(part) = self.named.write().unwrap().get_mut(usize::from(id.0) - 1) {
            *part = None;
        }
    }

    /// Out of line, so the default source's `of` stays two instructions wherever it is
    /// inlined.
    #[inline(never)]
    fn named_part(&self, id: SourceId) -> Arc<T> {
        let named = self.named.read().unwrap();
        named
            .get(usize::from(id.0) - 1)
            .and_then(Option::clone)
            .expect("a source's number is handed out only while its parts are installed")
    }
}

/// A source's part as `Parts::of` lends it: borrowed for the default source, shared for a
/// named one (which can be removed while a worker still uses its part).
pub enum PartRef<'a, T> {
    /// The default source's part, where its `Parts` holds it.
    Default(&'a T),
    /// A named source's part, kept alive while lent.
    Named(Arc<T>),
}

/// Another loan of the same part: what made a connection lends it the part it reports to
/// (a session, its circuit), for as long as the connection lives.
impl<T> Clone for PartRef<'_, T> {
    fn clone(&self) -> Self {
        match self {
            PartRef::Default(part) => PartRef::Default(part),
            PartRef::Named(part) => PartRef::Named(Arc::clone(part)),
        }
    }
}

impl<T> std::ops::Deref for PartRef<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        match self {
            PartRef::Default(part) => part,
            PartRef::Named(part) => part,
        }
    }
}

/// The keys of one source, or of one table of it: those starting with `prefix`, and, for the
/// default source's whole cache, not naming a source (`pg_cache:` but not `pg_cache:@`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub prefix: String,
    /// The named sources' keys (the prefix, then `@`) are not in it.
    pub exclude_named: bool,
}

impl Scope {
    /// Every key of source `name` (None: the default source).
    pub fn source(cache_prefix: &str, name: Option<&str>) -> Scope {
        Scope {
            prefix: key_prefix(cache_prefix, name),
            exclude_named: name.is_none(),
        }
    }

    /// The keys starting with `prefix` (a table's: no named source's key starts so).
    pub fn prefix(prefix: &str) -> Scope {
        Scope {
            prefix: prefix.to_string(),
            exclude_named: false,
        }
    }

    pub fn covers(&self, key: &[u8]) -> bool {
        match key.strip_prefix(self.prefix.as_bytes()) {
            Some(rest) => !(self.exclude_named && rest.first() == Some(&MARK)),
            None => false,
        }
    }
}

/// The error for a key or command naming a source this server does not serve.
pub fn unknown(name: &[u8]) -> Error {
    Error::invalid(format!(
        "no source named {:?}: name one this server serves (PGCACHE.SOURCE LIST), or add it \
         (PGCACHE.SOURCE ADD, a `source` block of the module arguments, PGCACHE_SOURCES)",
        String::from_utf8_lossy(name)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::key::cache_key;
    use proptest::prelude::*;

    /// Setting names, two of which would make a source `query` read the server's.
    const SETTINGS: &[&str] = &["pool_size", "pg_host", "max_rows", "query_max_rows"];

    #[test]
    fn default_keys_are_byte_identical() {
        let prefix = key_prefix("pg_cache:", None);
        assert_eq!(
            cache_key(&prefix, "users", r#"{"id":7}"#),
            r#"pg_cache:users:{"id":7}"#
        );
        assert_eq!(format!("{prefix}~epoch"), "pg_cache:~epoch");
        assert_eq!(
            cache_key(
                &key_prefix("pg_cache:", Some("analytics")),
                "users",
                r#"{"id":7}"#
            ),
            r#"pg_cache:@analytics:users:{"id":7}"#
        );
    }

    #[test]
    fn the_default_source_s_scope_spares_named_keys() {
        let default = Scope::source("pg_cache:", None);
        let analytics = Scope::source("pg_cache:", Some("analytics"));
        let users = Scope::prefix("pg_cache:users:");
        for (key, in_default, in_analytics, in_users) in [
            (&br#"pg_cache:users:{"id":1}"#[..], true, false, true),
            (b"pg_cache:~epoch", true, false, false),
            (br#"pg_cache:@analytics:users:{"id":1}"#, false, true, false),
            (b"pg_cache:@analytics:~epoch", false, true, false),
            (b"other:users", false, false, false),
        ] {
            assert_eq!(default.covers(key), in_default, "{key:?}");
            assert_eq!(analytics.covers(key), in_analytics, "{key:?}");
            assert_eq!(users.covers(key), in_users, "{key:?}");
        }
    }

    #[test]
    fn names_are_lower_case_words_that_read_no_server_setting() {
        for good in ["analytics", "a", "db_2", &"x".repeat(MAX_NAME_LEN)] {
            assert!(check_name(good, SETTINGS).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Analytics",
            "2db",
            "_db",
            "db-2",
            "db:2",
            "db@",
            "default",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(check_name(bad, SETTINGS).is_err(), "{bad:?}");
        }
        let e = check_name("query", SETTINGS).unwrap_err().to_string();
        assert!(
            e.contains("PGCACHE_QUERY_MAX_ROWS is the query_max_rows setting"),
            "{e}"
        );
        assert!(check_name("pool", SETTINGS).is_ok(), "size is no setting");
    }

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

    /// The default source's part is reached without the lock the named ones live behind:
    /// with a writer holding that lock, `of(DEFAULT)` still answers.
    #[test]
    fn parts_default_costs_no_lock() {
        let parts = Parts::new(7u32);
        std::thread::scope(|scope| {
            let held = parts.named.write().unwrap();
            let reader = scope.spawn(|| *parts.of(SourceId::DEFAULT));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !reader.is_finished() {
                // A panic here drops `held` first, so the scope can join the reader.
                assert!(
                    std::time::Instant::now() < deadline,
                    "of(DEFAULT) waited for the named parts' lock"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(reader.join().unwrap(), 7);
            drop(held);
        });
    }

    /// `each` serves the default part, then every named one installed, skipping removed
    /// ones.
    #[test]
    fn each_serves_every_installed_part() {
        let parts = Parts::new(1u32);
        let mut seen = Vec::new();
        parts.each(|id, part| seen.push((id, *part)));
        assert_eq!(seen, [(SourceId::DEFAULT, 1)]);
        *parts.named.write().unwrap() = vec![Some(Arc::new(2)), None, Some(Arc::new(4))];
        seen.clear();
        parts.each(|id, part| seen.push((id, *part)));
        assert_eq!(seen, [(SourceId(0), 1), (SourceId(1), 2), (SourceId(3), 4)]);
        // Each named part is the one `of` lends for its source.
        for (id, part) in seen {
            assert_eq!(*parts.of(id), part);
        }
    }

    proptest! {
        /// A key built for a source splits back into that source and the default-source
        /// key it would otherwise be, and only its own source's scope covers it.
        #[test]
        fn keys_split_back_into_their_source(
            name in proptest::option::of("[a-z][a-z0-9_]{0,31}"),
            table in "[a-z_][a-z0-9_]{0,20}|\"[ -~]{1,20}\"",
            pk in "\\{[ -~]{0,20}\\}",
        ) {
            let key = cache_key(&key_prefix("pg_cache:", name.as_deref()), &table, &pk);
            let after = key.strip_prefix("pg_cache:").unwrap().as_bytes();
            let (source, rest) = split(after).unwrap();
            prop_assert_eq!(source, name.as_deref().map(str::as_bytes));
            let default_key = format!("{table}:{pk}");
            prop_assert_eq!(rest, default_key.as_bytes());
            let other = match &name {
                Some(_) => None,
                None => Some("other"),
            };
            prop_assert!(Scope::source("pg_cache:", name.as_deref()).covers(key.as_bytes()));
            prop_assert!(!Scope::source("pg_cache:", other).covers(key.as_bytes()));
        }
    }
}
