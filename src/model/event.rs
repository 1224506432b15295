//! What a cache event is: its kinds, the set of kinds a setting names (`EventMask`), and its
//! JSON form: `{"type":"cache_miss","table":"users","key":"{\"id\":7}","timestamp":1700000000000}`.
//! Pure: delivering events is the `events` module's job.

use crate::error::Error;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Hit,
    Miss,
    Write,
    Invalidate,
    Fill,
    Expire,
    Evict,
    Error,
    Slow,
    /// PostgreSQL cannot be reached and hits are served past `max_staleness_ms`: raised once
    /// per outage.
    Stale,
    /// A change to a table dropped query results (one event per statement).
    QueryInvalidated,
    /// `PGCACHE.INVALIDATE TAG` dropped a tag's entries (one event per tag).
    TagInvalidate,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        Self::Hit,
        Self::Miss,
        Self::Write,
        Self::Invalidate,
        Self::Fill,
        Self::Expire,
        Self::Evict,
        Self::Error,
        Self::Slow,
        Self::Stale,
        Self::QueryInvalidated,
        Self::TagInvalidate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Hit => "cache_hit",
            Self::Miss => "cache_miss",
            Self::Write => "cache_write",
            Self::Invalidate => "cache_invalidate",
            Self::Fill => "cache_fill",
            Self::Expire => "cache_expire",
            Self::Evict => "cache_evict",
            Self::Error => "cache_error",
            Self::Slow => "cache_slow",
            Self::Stale => "cache_stale",
            Self::QueryInvalidated => "query_invalidated",
            Self::TagInvalidate => "cache_tag_invalidate",
        }
    }

    pub fn short_name(self) -> &'static str {
        let name = self.name();
        name.strip_prefix("cache_").unwrap_or(name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMask(pub u32);

impl Default for EventMask {
    fn default() -> Self {
        EventMask(
            EventKind::Miss.bit()
                | EventKind::Write.bit()
                | EventKind::Invalidate.bit()
                | EventKind::Stale.bit()
                | EventKind::QueryInvalidated.bit()
                | EventKind::TagInvalidate.bit(),
        )
    }
}

impl EventMask {
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn union(self, other: EventMask) -> EventMask {
        EventMask(self.0 | other.0)
    }

    /// Comma-separated kinds (`hit`, `miss`, `fill`, `write`, `invalidate`, `expire`,
    /// `evict`, `error`, `slow`, `stale`, with or without the `cache_` prefix), `all` or `none`.
    pub fn parse(value: &str) -> Result<EventMask, Error> {
        let mut mask = 0;
        for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let word = word.to_ascii_lowercase();
            match word.as_str() {
                "all" => mask |= EventKind::ALL.iter().map(|k| k.bit()).sum::<u32>(),
                "none" => {}
                _ => {
                    let kind = EventKind::ALL
                        .iter()
                        .find(|k| k.name() == word || k.short_name() == word)
                        .ok_or_else(|| {
                            Error::invalid({
                                format!(
                                    "unknown event {word:?}; use {}, all or none",
                                    EventKind::ALL.map(EventKind::short_name).join(", ")
                                )
                            })
                        })?;
                    mask |= kind.bit();
                }
            }
        }
        Ok(EventMask(mask))
    }

    /// The canonical spelling, as CONFIG GET shows it.
    pub fn render(self) -> String {
        let names: Vec<&str> = EventKind::ALL
            .iter()
            .filter(|k| self.contains(**k))
            .map(|k| k.short_name())
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }
}

/// One event, as hooks receive it.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub kind: EventKind,
    /// A named source's name; None for the default source's.
    pub source: Option<&'a str>,
    pub table: &'a str,
    pub key: &'a str,
    pub timestamp_ms: u128,
    pub extra: &'a [(&'a str, Extra<'a>)],
    /// The event as JSON (what PUBLISH sends).
    pub json: &'a str,
}

/// A field some events carry besides type, table, key and timestamp.
#[derive(Debug, Clone, Copy)]
pub enum Extra<'a> {
    Text(&'a str),
    Int(u64),
    /// A JSON value, written as it is (a list of keys).
    Json(&'a str),
}

/// Appends the event's JSON text to `out`, written directly (this runs for every event).
pub fn write_event_json(
    out: &mut String,
    kind: EventKind,
    source: Option<&str>,
    table: &str,
    key: &str,
    timestamp_ms: u128,
    extra: &[(&str, Extra)],
) {
    use std::fmt::Write;
    out.push_str("{\"type\":\"");
    out.push_str(kind.name());
    out.push('"');
    // A named source's events say whose they are; the default source's read as they did
    // before there were named sources.
    if let Some(source) = source {
        out.push_str(",\"source\":");
        push_json_string(out, source);
    }
    out.push_str(",\"table\":");
    push_json_string(out, table);
    out.push_str(",\"key\":");
    push_json_string(out, key);
    out.push_str(",\"timestamp\":");
    // As u64: ms since 1970 fit. Not through `write!`, which costs several times more on
    // the path every miss takes.
    out.push_str(itoa::Buffer::new().format(timestamp_ms as u64));
    for (name, value) in extra {
        out.push(',');
        push_json_string(out, name);
        out.push(':');
        match value {
            Extra::Text(text) => push_json_string(out, text),
            Extra::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Extra::Json(json) => out.push_str(json),
        }
    }
    out.push('}');
}

fn push_json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    // Copies runs that need no escaping whole (a key is mostly such a run).
    let mut rest = s;
    while let Some(i) = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < b' ')
    {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{c:04x}");
            }
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_parses_and_renders() {
        assert_eq!(
            EventMask::parse("hit, cache_miss").unwrap().render(),
            "hit,miss"
        );
        assert_eq!(
            EventMask::parse("all").unwrap().render(),
            "hit,miss,write,invalidate,fill,expire,evict,error,slow,stale,query_invalidated,tag_invalidate"
        );
        assert_eq!(
            EventMask::parse("SLOW,Evict").unwrap().render(),
            "evict,slow"
        );
        assert_eq!(EventMask::parse("none").unwrap().render(), "none");
        assert_eq!(
            EventMask::default().render(),
            "miss,write,invalidate,stale,query_invalidated,tag_invalidate"
        );
        assert!(
            EventMask::parse("hot")
                .unwrap_err()
                .message()
                .contains("hot")
        );
    }

    #[test]
    fn a_named_source_s_event_says_whose_it_is() {
        let mut text = String::new();
        write_event_json(&mut text, EventKind::Miss, None, "users", "{}", 42, &[]);
        assert_eq!(
            text,
            r#"{"type":"cache_miss","table":"users","key":"{}","timestamp":42}"#
        );
        text.clear();
        let source = Some("analytics");
        write_event_json(&mut text, EventKind::Miss, source, "users", "{}", 42, &[]);
        assert_eq!(
            text,
            r#"{"type":"cache_miss","source":"analytics","table":"users","key":"{}","timestamp":42}"#
        );
    }

    #[test]
    fn event_json_escapes_like_json() {
        let mut text = String::new();
        write_event_json(
            &mut text,
            EventKind::Write,
            None,
            "we\"ird\\",
            "{\"s\":\"a\nb\u{1}\t\ré\u{1f}\"}x",
            1,
            &[],
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["table"], "we\"ird\\");
        assert_eq!(v["key"], "{\"s\":\"a\nb\u{1}\t\ré\u{1f}\"}x");
    }

    #[test]
    fn event_json_has_the_documented_fields() {
        let mut text = String::new();
        write_event_json(
            &mut text,
            EventKind::Miss,
            None,
            "users",
            r#"{"id":7}"#,
            42,
            &[],
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "cache_miss");
        assert_eq!(v["table"], "users");
        assert_eq!(v["key"], r#"{"id":7}"#);
        assert_eq!(v["timestamp"], 42);
    }

    #[test]
    fn timestamps_are_written_in_full() {
        for n in [0, 7, 10, 1_700_000_000_000, u64::MAX] {
            let mut text = String::new();
            write_event_json(&mut text, EventKind::Miss, None, "t", "{}", n.into(), &[]);
            assert!(text.ends_with(&format!(",\"timestamp\":{n}}}")), "{text}");
        }
    }

    #[test]
    fn extra_fields_are_json_too() {
        let mut text = String::new();
        let extra = [
            ("error", Extra::Text("bad \"x\"")),
            ("duration_us", Extra::Int(12)),
        ];
        write_event_json(&mut text, EventKind::Slow, None, "t", "k", 1, &extra);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "cache_slow");
        assert_eq!(v["error"], "bad \"x\"");
        assert_eq!(v["duration_us"], 12);
    }
}
