//! Properties of notification payloads: whatever arrives on the channel is parsed or refused,
//! never a panic, and the keys of a payload pgcache's trigger writes are read back.

use super::*;
use crate::invalidation::translate::keys_of;
use proptest::prelude::*;

/// JSON values of every shape, nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof!["table|keys|old_data|new_data|flush|id|name", "\\PC{0,6}"],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Any text, or any JSON document, is a payload or an error; a payload's keys are read
    /// against the table without a panic.
    #[test]
    fn any_payload_is_read_or_refused(value in json(), text in "\\PC{0,60}") {
        let schema = tests::users();
        for candidate in [value.to_string(), text] {
            if let Ok(payload) = parse_payload(&candidate) {
                let _ = keys_of(&payload, &schema);
            }
        }
    }

    /// The keys a trigger payload names come back canonical, each once.
    #[test]
    fn trigger_payload_keys_are_read_back(ids in proptest::collection::vec(any::<i32>(), 1..50)) {
        let keys: Vec<Value> = ids.iter().map(|id| serde_json::json!({ "id": id.to_string() })).collect();
        let text = serde_json::json!({ "table": "public.users", "keys": keys }).to_string();
        let payload = parse_payload(&text).unwrap();
        let (read, unreadable) = keys_of(&payload, &tests::users());
        prop_assert!(unreadable.is_none());
        let mut expected: Vec<String> = Vec::new();
        for id in &ids {
            let json = format!("{{\"id\":{id}}}");
            if !expected.contains(&json) {
                expected.push(json);
            }
        }
        prop_assert_eq!(read.into_iter().map(|k| k.json).collect::<Vec<_>>(), expected);
    }
}
