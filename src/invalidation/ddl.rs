//! DDL, as pgcache's event trigger reports it (`pgcache_ddl`, examples/ddl_trigger.sql),
//! through the same feed as row changes and in commit
//! order: a notification in notify mode, a logical message (`pgcache.ddl`) in replication
//! mode. Its payload names the relations the DDL touched (with their ancestors, and the
//! partitions and children an ALTER TABLE reached) and whether it changed something any
//! QUERY result may depend on (a function, a type, a view):
//!
//! ```json
//! {"ddl":"CREATE TABLE","relations":["public.meas","public.meas_us"],"results":false}
//! ```
//!
//! What a table is (its columns, its partitions) is read again, QUERY learns its statements
//! again, and the rows and results of the relations named go (every QUERY result with
//! `results`): a partition created later, a view replaced, a column retyped are followed
//! like any change.

use super::changes::Changes;
use crate::config::current;
use crate::error::Error;
use crate::model::ident::parse_table;
use crate::model::key::cache_key;
use crate::model::source::SourceId;
use crate::pg::schema;
use serde_json::Value;

/// The logical message's prefix (replication mode).
pub const MESSAGE_PREFIX: &str = "pgcache.ddl";

/// Past this many relations in one report, everything is flushed in one scan instead of one
/// scan per relation (a DDL reaching hundreds of partitions).
const MOST_RELATIONS: usize = 16;

/// What a DDL payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ddl {
    /// The relations touched, as `format('%I.%I')` spells them.
    pub relations: Vec<String>,
    /// Every QUERY result may be outdated.
    pub results: bool,
    /// Too many relations to name in a notification (NOTIFY's 8000 bytes): every entry.
    pub everything: bool,
}

/// The DDL a notification or message reports; None for any other payload.
pub fn of(text: &str) -> Option<Result<Ddl, Error>> {
    if !text.starts_with("{\"ddl\"") {
        return None;
    }
    Some(parse(text))
}

fn parse(text: &str) -> Result<Ddl, Error> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| Error::invalid(format!("not JSON ({e})")))?;
    let relations = value
        .get("relations")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid("no \"relations\" array"))?
        .iter()
        .map(|r| {
            r.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::invalid("a relation is not a string"))
        })
        .collect::<Result<Vec<String>, Error>>()?;
    Ok(Ddl {
        relations,
        results: value.get("results") == Some(&Value::Bool(true)),
        everything: value.get("everything") == Some(&Value::Bool(true)),
    })
}

/// Adds what `ddl`, reported by the database of `source`, asks to `changes`: its keys,
/// tables and policies only. The tables' descriptions are forgotten at once (on the feed's
/// thread), so the changes that follow it are read with the new ones.
pub fn add(source: SourceId, changes: &mut Changes, ddl: Ddl) {
    redis_module::logging::log_notice(format!(
        "pgcache: DDL changed {}: dropping their cached rows and results{}, and learning QUERY \
         statements again",
        if ddl.relations.is_empty() {
            "no relation".to_string()
        } else {
            ddl.relations.join(", ")
        },
        if ddl.results {
            " and every QUERY result"
        } else {
            ""
        }
    ));
    let cache_prefix = current::key_prefix(source);
    if ddl.everything || ddl.relations.len() > MOST_RELATIONS {
        // One scan of everything rather than one per relation.
        changes.flush_prefix(&cache_prefix);
    } else {
        for relation in &ddl.relations {
            match parse_table(relation) {
                Ok(name) => {
                    changes.flush_prefix(&cache_key(&cache_prefix, &name.display(), ""));
                    // A dropped partition's rows were its ancestors' (which the catalog no
                    // longer names): those pgcache has seen it under go too.
                    for ancestor in schema::of(source).ancestors_seen(relation) {
                        if let Ok(name) = parse_table(&ancestor) {
                            changes.flush_prefix(&cache_key(&cache_prefix, &name.display(), ""));
                        }
                    }
                }
                Err(_) => changes.flush_prefix(&cache_prefix),
            }
        }
    }
    schema::of(source).clear();
    super::of(source).policies.forget();
    changes.ddl(ddl.results);
}

/// Reports a DDL payload of the database of `source` that could not be read: which
/// relations changed is unknown.
pub fn unreadable(source: SourceId, changes: &mut Changes, why: &Error) {
    redis_module::logging::log_warning(format!(
        "pgcache: a DDL report could not be read ({why}); dropping every cached row"
    ));
    schema::of(source).clear();
    super::of(source).policies.forget();
    changes.ddl(true);
    changes.drop_everything();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_payloads_are_told_from_the_others() {
        // As json_build_object spaces it.
        let ddl = of(r#"{"ddl" : "CREATE TABLE", "relations" : ["public.meas","public.\"Odd\""], "results" : false}"#)
            .unwrap()
            .unwrap();
        assert_eq!(ddl.relations, ["public.meas", "public.\"Odd\""]);
        assert!(!ddl.results);
        assert!(of(r#"{"table":"public.users","op":"UPDATE","keys":[]}"#).is_none());
        assert!(of(r#"{"ddl":"x","relations":"nope"}"#).unwrap().is_err());
        let everything =
            of(r#"{"ddl":"ALTER TABLE","relations":[],"results":true,"everything":true}"#)
                .unwrap()
                .unwrap();
        assert!(everything.everything && everything.results);
    }
}
