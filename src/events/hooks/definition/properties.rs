//! Properties of hook definitions: whatever ADD accepts reads back as itself from every form
//! pgcache writes it in (the `pgcache.hooks` text CONFIG REWRITE saves, the words HOOK ADD
//! replicates to replicas and the AOF), and any text is a definition or an error.

use super::*;
use crate::model::event::EventKind;
use crate::model::ident::QualifiedName;
use crate::model::ident::properties::identifier;
use proptest::prelude::*;

/// A channel, stream or user name as ADD accepts it.
fn target_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9:_.-]{0,20}",
        "[^\\s\";\u{0}-\u{1f}\u{7f}]{1,20}"
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        target_name().prop_map(Target::Publish),
        (
            target_name(),
            prop_oneof![Just(None), (any::<bool>(), 1u64..u64::MAX).prop_map(Some)]
        )
            .prop_map(|(stream, maxlen)| Target::Xadd { stream, maxlen }),
    ]
}

fn hook() -> impl Strategy<Value = Hook> {
    (
        "[a-zA-Z0-9_.:-]{1,20}".prop_filter("not the built-in hook", |n| {
            !n.eq_ignore_ascii_case(DEFAULT_HOOK)
        }),
        1u32..(1 << EventKind::ALL.len()),
        proptest::option::of("[a-z][a-z0-9_]{0,12}"),
        proptest::option::of((
            prop_oneof![Just("public".to_string()), identifier()],
            identifier(),
        )),
        target(),
        prop_oneof![Just(acl::DEFAULT_USER.to_string()), target_name()],
    )
        .prop_map(|(name, events, source, table, target, owner)| Hook {
            name,
            events: EventMask(events),
            source,
            table: table.map(|(schema, name)| QualifiedName { schema, name }.display()),
            target,
            owner,
        })
}

proptest! {
    /// A definition ADD accepts reads back as itself from its text, from its words, and as
    /// part of the setting beside others.
    #[test]
    fn every_accepted_definition_reads_back_as_itself(hooks in proptest::collection::vec(hook(), 1..4)) {
        let mut accepted = Vec::new();
        for hook in hooks {
            let words = hook.words();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            match Hook::parse(&words) {
                Ok(parsed) => {
                    prop_assert_eq!(&parsed, &hook);
                    prop_assert_eq!(&Hook::parse_text(&hook.render()).unwrap(), &hook);
                    prop_assert_eq!(&Hook::parse_text(&words.join(" ")).unwrap(), &hook);
                    if !accepted.iter().any(|h: &Hook| h.name == hook.name) {
                        accepted.push(hook);
                    }
                }
                // Refused at ADD, with a reason, is allowed; accepted and changed is not.
                Err(e) => prop_assert!(!e.message().is_empty()),
            }
        }
        let arcs: Vec<Arc<Hook>> = accepted.iter().cloned().map(Arc::new).collect();
        prop_assert_eq!(parse_all(&render_all(&arcs)).unwrap(), accepted);
    }

    /// Any text is a set of definitions or an error, never a panic.
    #[test]
    fn any_text_is_definitions_or_an_error(text in "\\PC{0,60}|[a-z ;\"~=,]{0,40}") {
        let _ = parse_all(&text);
    }
}
