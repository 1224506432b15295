//! Hook definitions: `<name> ON <event>[,<event>...] [TABLE <table>] PUBLISH <channel> |
//! XADD <stream> [MAXLEN [~|=] <n>] [BY <user>]`, parsed and rendered back, and the
//! `pgcache.hooks` setting that holds several, `;`-separated. Pure: installing and firing
//! hooks is the `hooks` module's job.

use crate::error::Error;
use crate::model::event::EventMask;
use crate::model::ident;
use crate::redis::acl::{self, Access};
use std::sync::Arc;

/// The name the `events` / `event_channel` settings' hook is listed under.
pub const DEFAULT_HOOK: &str = "default";
/// Hooks the setting holds at most.
pub const MAX_HOOKS: usize = 64;
const MAX_NAME_BYTES: usize = 64;
const MAX_TARGET_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Publish(String),
    Xadd {
        stream: String,
        /// `MAXLEN ~ n` (approximate: cheaper trimming) or `MAXLEN = n`.
        maxlen: Option<(bool, u64)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub name: String,
    pub events: EventMask,
    /// Only this named source's events, or every source's.
    pub source: Option<String>,
    /// Only this table's events (as events name it), or every table's.
    pub table: Option<String>,
    pub target: Target,
    /// The ACL user the hook acts for (`BY <user>`; `default` when omitted): every delivery
    /// first asks Redis whether that user may write the stream or publish on the channel.
    pub owner: String,
}

fn keyword(word: Option<&&str>, expected: &str) -> bool {
    word.is_some_and(|w| w.eq_ignore_ascii_case(expected))
}

fn checked_name(name: &str) -> Result<String, Error> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if !valid {
        return Err(Error::invalid(format!(
            "hook name {name:?} must be 1 to {MAX_NAME_BYTES} letters, digits, '_', '-', '.' or ':'"
        )));
    }
    if name.eq_ignore_ascii_case(DEFAULT_HOOK) {
        return Err(Error::invalid(format!(
            "{DEFAULT_HOOK:?} is the built-in hook: change it with CONFIG SET pgcache.events \
             and pgcache.event_channel (events none turns it off)"
        )));
    }
    Ok(name.to_string())
}

fn checked_target(what: &str, name: Option<&&str>) -> Result<String, Error> {
    let Some(name) = name else {
        return Err(Error::invalid(format!("{what} needs a name")));
    };
    if name.is_empty()
        || name.len() > MAX_TARGET_BYTES
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ';' || c == '"')
    {
        return Err(Error::invalid(format!(
            "{what} name {name:?} must be 1 to {MAX_TARGET_BYTES} bytes without spaces, control \
             characters, ';' or '\"'"
        )));
    }
    Ok(name.to_string())
}

fn checked_user(name: Option<&&str>) -> Result<String, Error> {
    match name {
        Some(name)
            if !name.is_empty()
                && name.len() <= MAX_TARGET_BYTES
                && !name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ';' || c == '"') =>
        {
            Ok(name.to_string())
        }
        _ => Err(Error::invalid(format!(
            "BY needs an ACL user name of 1 to {MAX_TARGET_BYTES} bytes without spaces, \
             control characters, ';' or '\"'"
        ))),
    }
}

impl Hook {
    /// Parses one definition written as text (an entry of the `pgcache.hooks` setting, or
    /// HOOK ADD's arguments joined by spaces): words split at whitespace outside double
    /// quotes, so a quoted table name such as `"my table"` or `"a;b"` is one word.
    pub fn parse_text(text: &str) -> Result<Hook, Error> {
        let words = words(text)?;
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        Hook::parse(&words)
    }

    /// Parses `<name> ON <event>[,<event>...] [TABLE <table>] PUBLISH <channel> |
    /// XADD <stream> [MAXLEN [~|=] <n>] [BY <user>]`, keywords in any case, one word per
    /// element; refuses a definition that would not read back as itself once written.
    pub fn parse(words: &[&str]) -> Result<Hook, Error> {
        let hook = Hook::parse_words(words)?;
        hook.round_trips()?;
        Ok(hook)
    }

    fn parse_words(words: &[&str]) -> Result<Hook, Error> {
        const USAGE: &str = "expected <name> ON <event>[,<event>...] [SOURCE <name>] \
                             [TABLE <table>] PUBLISH <channel> | XADD <stream> \
                             [MAXLEN ~ <n>] [BY <user>]";
        let name = checked_name(words.first().ok_or_else(|| Error::invalid(USAGE))?)?;
        if !keyword(words.get(1), "ON") {
            return Err(Error::invalid(format!("hook {name}: {USAGE}")));
        }
        let events = words
            .get(2)
            .ok_or_else(|| Error::invalid(format!("hook {name}: ON needs events")))
            .and_then(|e| {
                EventMask::parse(e).map_err(|e| Error::invalid(format!("hook {name}: {e}")))
            })?;
        if events.0 == 0 {
            return Err(Error::invalid(format!("hook {name}: ON names no event")));
        }
        let mut rest = &words[3..];
        let mut source = None;
        if keyword(rest.first(), "SOURCE") {
            let s = rest.get(1).ok_or_else(|| {
                Error::invalid(format!("hook {name}: SOURCE needs a source's name"))
            })?;
            let settings: Vec<&str> = crate::config::SETTINGS.iter().map(|t| t.name).collect();
            crate::model::source::check_name(s, &settings)
                .map_err(|e| Error::invalid(format!("hook {name}: {e}")))?;
            source = Some(s.to_string());
            rest = &rest[2..];
        }
        let mut table = None;
        if keyword(rest.first(), "TABLE") {
            let t = rest
                .get(1)
                .ok_or_else(|| Error::invalid(format!("hook {name}: TABLE needs a table name")))?;
            table = Some(
                ident::parse_table(t)
                    .map_err(|e| Error::invalid(format!("hook {name}: {e}")))?
                    .display(),
            );
            rest = &rest[2..];
        }
        let target = if keyword(rest.first(), "PUBLISH") {
            let channel = checked_target("channel", rest.get(1))?;
            rest = &rest[2..];
            Target::Publish(channel)
        } else if keyword(rest.first(), "XADD") {
            let stream = checked_target("stream", rest.get(1))?;
            rest = &rest[2..];
            let mut maxlen = None;
            if keyword(rest.first(), "MAXLEN") {
                // MAXLEN n, MAXLEN = n (exact) or MAXLEN ~ n (approximate).
                let (approximate, count_at) = match rest.get(1) {
                    Some(&"~") => (true, 2),
                    Some(&"=") => (false, 2),
                    _ => (false, 1),
                };
                let n = rest
                    .get(count_at)
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        Error::invalid(format!("hook {name}: MAXLEN needs a positive integer"))
                    })?;
                rest = &rest[count_at + 1..];
                maxlen = Some((approximate, n));
            }
            Target::Xadd { stream, maxlen }
        } else {
            return Err(Error::invalid(format!(
                "hook {name}: expected PUBLISH <channel> or XADD <stream> after the events"
            )));
        };
        let mut owner = acl::DEFAULT_USER.to_string();
        if keyword(rest.first(), "BY") {
            owner = checked_user(rest.get(1))?;
            rest = &rest[2..];
        }
        if let Some(extra) = rest.first() {
            return Err(Error::invalid(format!(
                "hook {name}: unexpected {extra:?}; {USAGE}"
            )));
        }
        Ok(Hook {
            name,
            events,
            source,
            table,
            target,
            owner,
        })
    }

    /// Refuses a definition whose written forms would not read back as itself: pgcache
    /// writes hooks into redis.conf (one `;`-separated text) and into the AOF and the
    /// replication stream (one argument per word); one that did not read back would stop the
    /// next start or fail on the replica.
    fn round_trips(&self) -> Result<(), Error> {
        let text = self.render();
        let from_text = split_definitions(&text).and_then(|definitions| match &definitions[..] {
            [one] => {
                let words = words(one)?;
                Hook::parse_words(&words.iter().map(String::as_str).collect::<Vec<_>>())
            }
            _ => Err(Error::invalid("not one definition")),
        });
        let words = self.words();
        let from_words = Hook::parse_words(&words.iter().map(String::as_str).collect::<Vec<_>>());
        match (from_text, from_words) {
            (Ok(a), Ok(b)) if a == *self && b == *self => Ok(()),
            _ => Err(Error::invalid(format!(
                "hook {}: its definition {text:?} would not read back the same from redis.conf \
                 or on a replica; choose other names",
                self.name
            ))),
        }
    }

    /// The definition as words, one per argument of HOOK ADD (what replicas and the AOF get).
    pub fn words(&self) -> Vec<String> {
        let mut words = vec![self.name.clone(), "ON".into(), self.events.render()];
        if let Some(source) = &self.source {
            words.push("SOURCE".into());
            words.push(source.clone());
        }
        if let Some(table) = &self.table {
            words.push("TABLE".into());
            words.push(table.clone());
        }
        words.extend(self.target.words());
        if self.owner != acl::DEFAULT_USER {
            words.push("BY".into());
            words.push(self.owner.clone());
        }
        words
    }

    /// The definition, as `pgcache.hooks` and HOOK LIST show it (parses back to the same).
    pub fn render(&self) -> String {
        self.words().join(" ")
    }

    /// What delivering to the target does, for the ACL check.
    pub fn access(&self) -> (&str, Access) {
        match &self.target {
            Target::Publish(channel) => (channel, Access::Publish),
            Target::Xadd { stream, maxlen } => (
                stream,
                if maxlen.is_some() {
                    Access::AppendAndTrim
                } else {
                    Access::Append
                },
            ),
        }
    }
}

impl Target {
    fn words(&self) -> Vec<String> {
        match self {
            Target::Publish(channel) => vec!["PUBLISH".into(), channel.clone()],
            Target::Xadd { stream, maxlen } => {
                let mut words = vec!["XADD".into(), stream.clone()];
                if let Some((approximate, n)) = maxlen {
                    words.push("MAXLEN".into());
                    words.push(if *approximate { "~" } else { "=" }.into());
                    words.push(n.to_string());
                }
                words
            }
        }
    }
}

/// HOOK ADD's arguments as words: one argument is one word, but an argument that opens a
/// double quote it does not close is joined (with a space) to the arguments up to the one
/// that closes it. Earlier versions replicated `TABLE "my table"` as two arguments, and
/// AOFs still hold that.
pub fn words_of_arguments(args: &[&str]) -> Result<Vec<String>, Error> {
    let mut words = Vec::new();
    let mut open: Option<String> = None;
    for arg in args {
        let word = match open.take() {
            Some(mut joined) => {
                joined.push(' ');
                joined.push_str(arg);
                joined
            }
            None => arg.to_string(),
        };
        if word.matches('"').count() % 2 == 1 {
            open = Some(word);
        } else {
            words.push(word);
        }
    }
    match open {
        Some(word) => Err(Error::invalid(format!(
            "unterminated double quote in {word:?}"
        ))),
        None => Ok(words),
    }
}

/// Splits text into words at whitespace outside double quotes, keeping the quotes (a quoted
/// identifier's `""` is two quotes in a row, so toggling at each quote keeps it whole).
pub fn words(text: &str) -> Result<Vec<String>, Error> {
    split_outside_quotes(text, char::is_whitespace)
}

/// Splits the `hooks` setting into definitions at `;` outside double quotes (a quoted table
/// name may hold one), trimmed, empty ones dropped.
fn split_definitions(text: &str) -> Result<Vec<String>, Error> {
    split_outside_quotes(text, |c| c == ';')
}

fn split_outside_quotes(
    text: &str,
    is_separator: impl Fn(char) -> bool,
) -> Result<Vec<String>, Error> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && is_separator(c) {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if quoted {
        return Err(Error::invalid(format!(
            "unterminated double quote in {text:?}"
        )));
    }
    parts.push(current);
    Ok(parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect())
}

/// Parses the `hooks` setting: definitions separated by `;` (outside double quotes).
pub fn parse_all(text: &str) -> Result<Vec<Hook>, Error> {
    let mut hooks: Vec<Hook> = Vec::new();
    for definition in split_definitions(text)? {
        let hook = Hook::parse_text(&definition)?;
        if hooks.iter().any(|h| h.name == hook.name) {
            return Err(Error::invalid(format!(
                "hook {} is defined twice",
                hook.name
            )));
        }
        hooks.push(hook);
    }
    if hooks.len() > MAX_HOOKS {
        return Err(Error::invalid(format!(
            "{} hooks, more than {MAX_HOOKS}",
            hooks.len()
        )));
    }
    Ok(hooks)
}

pub fn render_all(hooks: &[Arc<Hook>]) -> String {
    hooks
        .iter()
        .map(|h| h.render())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Hook, Error> {
        Hook::parse_text(text)
    }

    #[test]
    fn definitions_parse_and_render_back() {
        for text in [
            "audit ON write,invalidate TABLE users XADD audit:users MAXLEN ~ 1000",
            "misses ON miss PUBLISH misses",
            "exact ON error,slow XADD ops MAXLEN = 50",
            "all ON hit,miss,write,invalidate,fill,expire,evict,error,slow,stale XADD everything",
            "owned ON miss XADD s MAXLEN = 1 BY alice",
            "told ON miss PUBLISH c BY bob",
            r#"spaced ON write TABLE "my table" PUBLISH ch1"#,
            r#"semi ON write TABLE "a;b"."c ""d""" XADD s MAXLEN ~ 3"#,
            r#"uni ON write TABLE "Ünï ✓" PUBLISH ch1"#,
            "one ON miss,fill SOURCE analytics TABLE users XADD s",
            "named ON invalidate SOURCE billing_2 PUBLISH c",
        ] {
            let hook = parse(text).unwrap();
            assert_eq!(hook.render(), text);
            assert_eq!(parse(&hook.render()).unwrap(), hook);
        }
        let hook = parse("h on MISS table public.users xadd s maxlen 10").unwrap();
        assert_eq!(hook.render(), "h ON miss TABLE users XADD s MAXLEN = 10");
        assert_eq!(hook.table.as_deref(), Some("users"));
        let hook = parse("h ON miss TABLE app.orders PUBLISH c").unwrap();
        assert_eq!(hook.table.as_deref(), Some("app.orders"));
        assert_eq!(
            hook.owner, "default",
            "a hook without BY is the default user's"
        );
        let hook = parse("h ON miss PUBLISH c by default").unwrap();
        assert_eq!(
            hook.render(),
            "h ON miss PUBLISH c",
            "BY default is implied"
        );
    }

    #[test]
    fn arguments_split_inside_a_quoted_name_are_joined_again() {
        let args = [
            "h1", "ON", "write", "TABLE", "\"my", "table\"", "PUBLISH", "ch1",
        ];
        let words = words_of_arguments(&args).unwrap();
        assert_eq!(words[4], "\"my table\"");
        assert_eq!(words.len(), 7);
        let words = words_of_arguments(&["bad name!", "ON"]).unwrap();
        assert_eq!(words, ["bad name!", "ON"], "an argument stays one word");
        assert!(words_of_arguments(&["h", "TABLE", "\"open"]).is_err());
    }

    #[test]
    fn the_owner_decides_what_delivery_needs() {
        let access = |text: &str| {
            let hook = parse(text).unwrap();
            let (target, access) = hook.access();
            (target.to_string(), access)
        };
        assert_eq!(access("h ON miss PUBLISH c"), ("c".into(), Access::Publish));
        assert_eq!(access("h ON miss XADD s"), ("s".into(), Access::Append));
        assert_eq!(
            access("h ON miss XADD s MAXLEN ~ 5"),
            ("s".into(), Access::AppendAndTrim)
        );
    }

    #[test]
    fn bad_definitions_say_what_is_wrong() {
        for (text, needle) in [
            ("", "expected <name>"),
            ("default ON miss PUBLISH c", "built-in"),
            ("bad/name ON miss PUBLISH c", "hook name"),
            ("h miss PUBLISH c", "expected <name> ON"),
            ("h ON PUBLISH c", "unknown event"),
            ("h ON none PUBLISH c", "names no event"),
            ("h ON hot PUBLISH c", "unknown event \"hot\""),
            ("h ON miss TABLE", "TABLE needs"),
            ("h ON miss SOURCE", "SOURCE needs"),
            ("h ON miss SOURCE Bad/Name PUBLISH c", "source"),
            (
                "h ON miss TABLE users SOURCE a PUBLISH c",
                "expected PUBLISH",
            ),
            ("h ON miss TABLE a.b.c PUBLISH c", "invalid table name"),
            ("h ON miss SEND c", "expected PUBLISH"),
            ("h ON miss PUBLISH", "channel needs a name"),
            (
                "h ON miss XADD s MAXLEN ~ x",
                "MAXLEN needs a positive integer",
            ),
            (
                "h ON miss XADD s MAXLEN 0",
                "MAXLEN needs a positive integer",
            ),
            ("h ON miss XADD s extra", "unexpected \"extra\""),
            ("h ON miss XADD s BY", "BY needs an ACL user name"),
            ("h ON miss XADD s BY a b", "unexpected \"b\""),
            (
                r#"h ON miss TABLE "open PUBLISH c"#,
                "unterminated double quote",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message().contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_setting_holds_several_definitions() {
        let hooks = parse_all(" a ON miss PUBLISH x ;b ON write XADD s MAXLEN ~ 5; ").unwrap();
        assert_eq!(hooks.len(), 2);
        let arcs: Vec<Arc<Hook>> = hooks.into_iter().map(Arc::new).collect();
        assert_eq!(
            render_all(&arcs),
            "a ON miss PUBLISH x; b ON write XADD s MAXLEN ~ 5"
        );
        assert!(
            parse_all("a ON miss PUBLISH x; a ON write PUBLISH y")
                .unwrap_err()
                .message()
                .contains("twice")
        );
        assert_eq!(parse_all("").unwrap(), vec![]);
        let quoted =
            parse_all(r#"a ON write TABLE "x; y" PUBLISH c; b ON miss PUBLISH d"#).unwrap();
        assert_eq!(quoted[0].table.as_deref(), Some(r#""x; y""#));
        assert_eq!(quoted[1].name, "b");
    }
}
