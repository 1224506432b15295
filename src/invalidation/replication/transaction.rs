//! One replicated transaction's changes, gathered from its pgoutput messages until its
//! commit: per table, the key values of every row it inserted, updated (old and new key) or
//! deleted, whether it only inserted, or that the whole table is to be flushed (TRUNCATE, a
//! statement of more than `changes::BULK_KEYS` rows, a key value the stream did not carry).
//! The result is the payloads `translate` turns into deletions, as it does a
//! notification's.

use super::super::changes::BULK_KEYS;
use super::super::translate::Payload;
use crate::model::ident::QualifiedName;
use crate::model::source::SourceId;
use crate::pg::replication::pgoutput::{Relation, Tuple, Value};
use crate::query::precision::{NewValue, Written};
use crate::query::watched;
use serde_json::{Map, Value as Json};
use std::collections::{HashMap, HashSet};

/// Type OIDs whose text form is a JSON number: int2, int4, int8, oid, float4, float8,
/// numeric (a NaN or an infinity is not, and stays text, as `to_jsonb` writes it).
const NUMBER_TYPES: [u32; 7] = [21, 23, 20, 26, 700, 701, 1700];
const BOOL_TYPE: u32 = 16;
/// Longest new value kept for matching query results (longer ones match every result):
/// the values wait in memory until applied.
const LONGEST_WATCHED: usize = 1024;

/// How a row was written.
pub enum How<'a> {
    Inserted,
    /// `old`: its old values, where the change sent them (an update of its key, or any
    /// update under REPLICA IDENTITY FULL).
    Updated {
        old: Option<&'a Tuple>,
    },
}

#[derive(Default)]
pub struct Transaction {
    tables: HashMap<u32, TableChanges>,
    /// Tables named by `pgcache_flush()` in this transaction.
    flushed_by_name: Vec<String>,
    /// The DDL reports (`ddl`) of this transaction, as sent.
    pub ddl: Vec<String>,
}

struct TableChanges {
    table: String,
    rows: Vec<Json>,
    /// The rows written (inserted, updated to), by the watched columns.
    entering: Vec<Written>,
    /// The rows' text, to name each key once.
    seen: HashSet<String>,
    /// Every change was an insert: no row that was there before changed.
    only_inserted: bool,
    flush: bool,
    /// Keys named while the table is to be flushed anyway.
    flushed_keys: u64,
}

impl TableChanges {
    fn new(relation: &Relation) -> TableChanges {
        TableChanges {
            table: table_name(relation),
            rows: Vec::new(),
            entering: Vec::new(),
            seen: HashSet::new(),
            only_inserted: true,
            flush: false,
            flushed_keys: 0,
        }
    }

    fn flush(&mut self) {
        self.flush = true;
        self.flushed_keys += self.rows.len() as u64;
        self.rows = Vec::new();
        self.seen = HashSet::new();
        self.entering = Vec::new();
    }
}

impl Transaction {
    /// A row of `relation` changed: `rows` are its old and/or new values; `inserted`, it was
    /// not there before.
    pub fn changed(&mut self, relation: &Relation, rows: &[&Tuple], inserted: bool) {
        let changes = self
            .tables
            .entry(relation.id)
            .or_insert_with(|| TableChanges::new(relation));
        changes.only_inserted &= inserted;
        if changes.flush {
            changes.flushed_keys += rows.len() as u64;
            return;
        }
        for row in rows {
            let Some(key) = key_values(relation, row) else {
                changes.flush();
                return;
            };
            if changes.seen.insert(key.to_string()) {
                changes.rows.push(key);
            }
        }
        if changes.rows.len() > BULK_KEYS {
            changes.flush();
        }
    }

    /// A row of `relation` was written with the values `new` (inserted, or updated to):
    /// kept by the columns row-precise query results match on (`watched::with_watched`).
    /// A value not sent (an unchanged TOASTed one) or longer than `LONGEST_WATCHED` is left
    /// out: unknown, it matches every result. `source`: whose database sent the row (the
    /// columns watched are its statements').
    pub fn written(&mut self, source: SourceId, relation: &Relation, how: How, new: &Tuple) {
        let new_key = match how {
            How::Inserted => true,
            How::Updated { old: None } => false,
            How::Updated { old: Some(old) } => {
                key_values(relation, old) != key_values(relation, new)
            }
        };
        let changes = self
            .tables
            .entry(relation.id)
            .or_insert_with(|| TableChanges::new(relation));
        if changes.flush {
            return;
        }
        let row = watched::of(source)
            .with_watched(&changes.table, |watched| {
                relation
                    .columns
                    .iter()
                    .zip(new)
                    .filter(|(column, _)| watched.contains(&column.name))
                    .filter_map(|(column, value)| {
                        let value = match value {
                            Value::Null => NewValue::Null,
                            Value::Text(bytes) if bytes.len() <= LONGEST_WATCHED => {
                                let text = String::from_utf8_lossy(bytes);
                                NewValue::Text(if column.type_oid == BOOL_TYPE {
                                    (text == "t").to_string()
                                } else {
                                    text.into_owned()
                                })
                            }
                            _ => return None,
                        };
                        Some((column.name.clone(), value))
                    })
                    .collect()
            })
            .unwrap_or_default();
        changes.entering.push(Written {
            values: row,
            new_key,
        });
        // Rows named once each but written many times: as many writes as a bulk statement.
        if changes.entering.len() > BULK_KEYS {
            changes.flush();
        }
    }

    /// Every row of `relation` may have changed.
    pub fn flush(&mut self, relation: &Relation) {
        self.tables
            .entry(relation.id)
            .or_insert_with(|| TableChanges::new(relation))
            .flush();
    }

    /// `pgcache_flush(table)` ran in this transaction: `table` is its quoted name.
    pub fn flush_named(&mut self, table: String) {
        self.flushed_by_name.push(table);
    }

    /// What the transaction asks of the cache.
    pub fn into_payloads(self) -> Vec<Payload> {
        let named = self.flushed_by_name.into_iter().map(|table| Payload {
            table,
            rows: Vec::new(),
            entering: None,
            only_inserted: false,
            flush: true,
            flushed_keys: 0,
        });
        self.tables
            .into_values()
            .map(|changes| Payload {
                table: changes.table,
                rows: changes.rows,
                entering: Some(changes.entering),
                only_inserted: changes.only_inserted,
                flush: changes.flush,
                flushed_keys: changes.flushed_keys,
            })
            .chain(named)
            .collect()
    }
}

/// `"schema"."table"`: the table a notification would name.
fn table_name(relation: &Relation) -> String {
    let schema = if relation.namespace.is_empty() {
        "pg_catalog"
    } else {
        &relation.namespace
    };
    QualifiedName {
        schema: schema.to_string(),
        name: relation.name.clone(),
    }
    .quoted()
}

/// The values of `row`'s replica identity columns (the primary key, or every column with
/// REPLICA IDENTITY FULL) as a JSON object, each as `to_jsonb` would write it where the text
/// form allows; None when a key value was not sent (an unchanged TOASTed value).
fn key_values(relation: &Relation, row: &Tuple) -> Option<Json> {
    let mut key = Map::new();
    for (column, value) in relation.columns.iter().zip(row) {
        if !column.key {
            continue;
        }
        let json = match value {
            Value::Null => Json::Null,
            Value::Text(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                if NUMBER_TYPES.contains(&column.type_oid) {
                    serde_json::from_str::<serde_json::Number>(&text)
                        .map(Json::Number)
                        .unwrap_or_else(|_| Json::String(text.into_owned()))
                } else if column.type_oid == BOOL_TYPE {
                    Json::Bool(text == "t")
                } else {
                    Json::String(text.into_owned())
                }
            }
            Value::Unchanged | Value::Binary(_) => return None,
        };
        key.insert(column.name.clone(), json);
    }
    Some(Json::Object(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::replication::pgoutput::RelationColumn;
    use serde_json::json;

    fn users() -> Relation {
        Relation {
            id: 5,
            namespace: "public".into(),
            name: "users".into(),
            columns: vec![
                RelationColumn {
                    key: true,
                    name: "id".into(),
                    type_oid: 23,
                },
                RelationColumn {
                    key: false,
                    name: "name".into(),
                    type_oid: 25,
                },
            ],
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn changed_rows_name_their_keys_once() {
        let users = users();
        let mut t = Transaction::default();
        let (a, b) = (vec![text("7"), text("x")], vec![text("8"), Value::Null]);
        t.changed(&users, &[&a], true);
        t.changed(&users, &[&a, &b], false);
        let payloads = t.into_payloads();
        assert_eq!(payloads.len(), 1);
        assert_eq!(payloads[0].table, r#""public"."users""#);
        assert_eq!(payloads[0].rows, vec![json!({"id": 7}), json!({"id": 8})]);
        assert!(!payloads[0].flush);
    }

    #[test]
    fn values_are_written_as_to_jsonb_writes_them() {
        let relation = Relation {
            id: 1,
            namespace: "".into(),
            name: "Odd Name".into(),
            columns: [(23, "i"), (1700, "n"), (16, "b"), (1082, "d"), (701, "f")]
                .into_iter()
                .map(|(type_oid, name)| RelationColumn {
                    key: true,
                    name: name.into(),
                    type_oid,
                })
                .collect(),
        };
        let mut t = Transaction::default();
        let row = vec![
            text("-3"),
            text("1.50"),
            text("t"),
            text("2024-01-02"),
            text("NaN"),
        ];
        t.changed(&relation, &[&row], true);
        let payloads = t.into_payloads();
        assert_eq!(payloads[0].table, r#""pg_catalog"."Odd Name""#);
        assert_eq!(
            serde_json::to_string(&payloads[0].rows[0]).unwrap(),
            r#"{"b":true,"d":"2024-01-02","f":"NaN","i":-3,"n":1.50}"#
        );
    }

    #[test]
    fn unsent_keys_truncates_and_bulk_statements_flush_the_table() {
        let users = users();
        let mut t = Transaction::default();
        t.changed(&users, &[&vec![Value::Unchanged, text("x")]], false);
        t.changed(&users, &[&vec![text("1"), text("x")]], false);
        let payloads = t.into_payloads();
        assert!(payloads[0].flush && payloads[0].rows.is_empty());

        let mut t = Transaction::default();
        t.changed(&users, &[&vec![text("1"), text("x")]], false);
        t.flush(&users);
        assert!(t.into_payloads()[0].flush);

        let mut t = Transaction::default();
        for id in 0..=BULK_KEYS {
            t.changed(&users, &[&vec![text(&id.to_string()), Value::Null]], true);
        }
        let payloads = t.into_payloads();
        assert!(payloads[0].flush && payloads[0].rows.is_empty());
        assert_eq!(
            payloads[0].flushed_keys,
            BULK_KEYS as u64 + 1,
            "every key counted"
        );
    }

    #[test]
    fn a_table_s_changes_say_whether_they_only_inserted() {
        let users = users();
        let row = vec![text("1"), text("x")];
        let mut t = Transaction::default();
        t.changed(&users, &[&row], true);
        t.written(SourceId::DEFAULT, &users, How::Inserted, &row);
        assert!(t.into_payloads()[0].only_inserted);
        let mut t = Transaction::default();
        t.changed(&users, &[&row], true);
        t.changed(&users, &[&row], false);
        assert!(!t.into_payloads()[0].only_inserted);
        let mut t = Transaction::default();
        t.flush_named("public.users".into());
        assert!(!t.into_payloads()[0].only_inserted);
    }

    #[test]
    fn named_flushes_are_kept() {
        let mut t = Transaction::default();
        t.flush_named("public.users".into());
        let payloads = t.into_payloads();
        assert_eq!(payloads.len(), 1);
        assert!(payloads[0].flush);
        assert_eq!(payloads[0].table, "public.users");
    }
}
