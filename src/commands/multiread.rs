//! PGCACHE.MULTIREAD <table> <json_array_of_pks> [ttl] [AFTER <lsn>] [MAXSTALE <ms>]
//!
//! Replies an array in the caller's order, nil where no row exists. Hits come from the
//! cache; every miss of the call is fetched in ONE query, each distinct key once (every key,
//! `AFTER` a position the cache does not reflect yet).

use crate::cache::miss;
use crate::commands::docs::{Arg, Command, Keys, Params, TABLE};
use crate::commands::{ReadOptions, SourceFrom};
use crate::config::current;
use crate::error::{Error, Result};
use crate::model::key;
use crate::requests::reply::Reply;
use crate::stats::Tracked;
use redis_module::Context;
use serde_json::value::RawValue;

pub static MULTIREAD: Command = Command {
    name: "pgcache.multiread",
    entry: super::command_fn!(MULTIREAD),
    handler: multiread,
    tracked: Some(Tracked::Multiread),
    flags: "readonly",
    summary: "Returns several rows of one table, missed ones fetched in one query",
    since: "0.1.0",
    complexity: "O(N) for N keys; one PostgreSQL query for the misses",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[
        TABLE,
        Arg::text("json_array_of_pks"),
        Arg::ttl(),
        Arg::after(),
        Arg::max_stale(),
        Arg::source(),
        Arg::tags(),
    ]),
};

pub fn multiread(ctx: &Context, args: &[&[u8]]) -> Reply {
    let prepared = ReadOptions::parse_many(&args[3..], SourceFrom::Option).and_then(|options| {
        let keep = options.keep();
        let items = parse_array(args[2])?;
        let items = items.iter().map(|i| i.get().as_bytes()).collect();
        miss::many(
            ctx,
            options.source,
            args[1],
            items,
            None,
            keep,
            options.read()?,
        )
    });
    match prepared {
        Ok(reply) => reply,
        Err(e) => e.into(),
    }
}

/// The array's elements as sent (not yet parsed into values: most are canonical keys,
/// which `key::canonicalise` reads without building a JSON tree). An argument too long for
/// `multiread_max` keys is refused before it is read, and reading stops at the first key
/// past the limit: an oversized call costs neither time nor memory.
fn parse_array(arg: &[u8]) -> Result<Vec<&RawValue>> {
    let max = current::multiread_max();
    let longest = max
        .saturating_mul(key::MAX_PK_JSON_BYTES + 1)
        .saturating_add(2);
    if arg.len() > longest {
        return Err(Error::invalid(format!(
            "keys argument is {} bytes, more than {max} keys (pgcache.multiread_max) of at most \
             {} bytes each can take; split the call",
            arg.len(),
            key::MAX_PK_JSON_BYTES
        )));
    }
    let not_json = |e: serde_json::Error| Error::invalid(format!("keys are not valid JSON ({e})"));
    if !arg.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<&RawValue>(arg).map_err(not_json)?;
        return Err(Error::invalid(
            "keys must be a JSON array of key objects, such as [{\"id\":1},{\"id\":2}]",
        ));
    }
    let mut reader = serde_json::Deserializer::from_slice(arg);
    let items = serde::de::DeserializeSeed::deserialize(AtMost(max), &mut reader).map_err(|e| {
        if e.to_string().starts_with(TOO_MANY) {
            Error::invalid(format!(
                "more than {max} keys in one MULTIREAD (pgcache.multiread_max); split the call"
            ))
        } else {
            not_json(e)
        }
    })?;
    reader.end().map_err(not_json)?;
    Ok(items)
}

const TOO_MANY: &str = "too many keys";

/// Reads a JSON array of at most `.0` raw elements, failing at the first one past it.
struct AtMost(usize);

impl<'de> serde::de::DeserializeSeed<'de> for AtMost {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for AtMost {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of key objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.0));
        while let Some(item) = seq.next_element::<&RawValue>()? {
            if items.len() == self.0 {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            items.push(item);
        }
        Ok(items)
    }
}
