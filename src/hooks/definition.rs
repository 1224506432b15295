//! Hook definitions: `<name> ON <event>[,<event>...] [TABLE <table>] PUBLISH <channel> |
//! XADD <stream> [MAXLEN [~|=] <n>] [BY <user>]`, parsed and rendered back, and the
//! `pgcache.hooks` setting that holds several, `;`-separated. Pure: installing and firing
//! hooks is the `hooks` module's job.

use crate::acl::{self, Access};
use crate::error::Error;
use crate::event::EventMask;
use crate::ident;
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
        return Err(format!(
            "hook name {name:?} must be 1 to {MAX_NAME_BYTES} letters, digits, '_', '-', '.' or ':'"
        )
        .into());
    }
    if name.eq_ignore_ascii_case(DEFAULT_HOOK) {
        return Err(format!(
            "{DEFAULT_HOOK:?} is the built-in hook: change it with CONFIG SET pgcache.events \
             and pgcache.event_channel (events none turns it off)"
        )
        .into());
    }
    Ok(name.to_string())
}

fn checked_target(what: &str, name: Option<&&str>) -> Result<String, Error> {
    let Some(name) = name else {
        return Err(format!("{what} needs a name").into());
    };
    if name.is_empty()
        || name.len() > MAX_TARGET_BYTES
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ';' || c == '"')
    {
        return Err(format!(
            "{what} name {name:?} must be 1 to {MAX_TARGET_BYTES} bytes without spaces, control \
             characters, ';' or '\"'"
        )
        .into());
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
        _ => Err(format!(
            "BY needs an ACL user name of 1 to {MAX_TARGET_BYTES} bytes without spaces, \
             control characters, ';' or '\"'"
        )
        .into()),
    }
}

impl Hook {
    /// Parses `<name> ON <event>[,<event>...] [TABLE <table>] PUBLISH <channel> |
    /// XADD <stream> [MAXLEN [~|=] <n>] [BY <user>]`, keywords in any case.
    pub fn parse(words: &[&str]) -> Result<Hook, Error> {
        const USAGE: &str = "expected <name> ON <event>[,<event>...] [TABLE <table>] \
                             PUBLISH <channel> | XADD <stream> [MAXLEN ~ <n>] [BY <user>]";
        let name = checked_name(words.first().ok_or(USAGE)?)?;
        if !keyword(words.get(1), "ON") {
            return Err(format!("hook {name}: {USAGE}").into());
        }
        let events = words
            .get(2)
            .ok_or_else(|| format!("hook {name}: ON needs events"))
            .and_then(|e| EventMask::parse(e).map_err(|e| format!("hook {name}: {e}")))?;
        if events.0 == 0 {
            return Err(format!("hook {name}: ON names no event").into());
        }
        let mut rest = &words[3..];
        let mut table = None;
        if keyword(rest.first(), "TABLE") {
            let t = rest
                .get(1)
                .ok_or_else(|| format!("hook {name}: TABLE needs a table name"))?;
            table = Some(
                ident::parse_table(t)
                    .map_err(|e| format!("hook {name}: {e}"))?
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
                    .ok_or_else(|| format!("hook {name}: MAXLEN needs a positive integer"))?;
                rest = &rest[count_at + 1..];
                maxlen = Some((approximate, n));
            }
            Target::Xadd { stream, maxlen }
        } else {
            return Err(format!(
                "hook {name}: expected PUBLISH <channel> or XADD <stream> after the events"
            )
            .into());
        };
        let mut owner = acl::DEFAULT_USER.to_string();
        if keyword(rest.first(), "BY") {
            owner = checked_user(rest.get(1))?;
            rest = &rest[2..];
        }
        if let Some(extra) = rest.first() {
            return Err(format!("hook {name}: unexpected {extra:?}; {USAGE}").into());
        }
        Ok(Hook {
            name,
            events,
            table,
            target,
            owner,
        })
    }

    /// The definition, as `pgcache.hooks` and HOOK LIST show it (parses back to the same).
    pub fn render(&self) -> String {
        let mut text = format!("{} ON {}", self.name, self.events.render());
        if let Some(table) = &self.table {
            text.push_str(" TABLE ");
            text.push_str(table);
        }
        text.push(' ');
        text.push_str(&self.target.render());
        if self.owner != acl::DEFAULT_USER {
            text.push_str(" BY ");
            text.push_str(&self.owner);
        }
        text
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
    pub fn render(&self) -> String {
        match self {
            Target::Publish(channel) => format!("PUBLISH {channel}"),
            Target::Xadd { stream, maxlen } => match maxlen {
                None => format!("XADD {stream}"),
                Some((true, n)) => format!("XADD {stream} MAXLEN ~ {n}"),
                Some((false, n)) => format!("XADD {stream} MAXLEN = {n}"),
            },
        }
    }
}

/// Parses the `hooks` setting: definitions separated by ';'.
pub fn parse_all(text: &str) -> Result<Vec<Hook>, Error> {
    let mut hooks: Vec<Hook> = Vec::new();
    for definition in text.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let words: Vec<&str> = definition.split_whitespace().collect();
        let hook = Hook::parse(&words)?;
        if hooks.iter().any(|h| h.name == hook.name) {
            return Err(format!("hook {} is defined twice", hook.name).into());
        }
        hooks.push(hook);
    }
    if hooks.len() > MAX_HOOKS {
        return Err(format!("{} hooks, more than {MAX_HOOKS}", hooks.len()).into());
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Hook, Error> {
        Hook::parse(&text.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn definitions_parse_and_render_back() {
        for text in [
            "audit ON write,invalidate TABLE users XADD audit:users MAXLEN ~ 1000",
            "misses ON miss PUBLISH misses",
            "exact ON error,slow XADD ops MAXLEN = 50",
            "all ON hit,miss,write,invalidate,fill,expire,evict,error,slow XADD everything",
            "owned ON miss XADD s MAXLEN = 1 BY alice",
            "told ON miss PUBLISH c BY bob",
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
    }
}
