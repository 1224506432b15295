//! Properties of table names: quoting and parsing round-trip for any name PostgreSQL allows.

use super::*;
use proptest::prelude::*;

/// A PostgreSQL identifier: up to 63 bytes of anything but NUL (spaces, `;`, `"`, unicode
/// included). Other modules' properties use it too.
pub(crate) fn identifier() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9_$]{0,20}",
        "[A-Za-z0-9_ ;.\"'{}:é✓\u{2003}-]{1,20}",
        "[^\u{0}]{1,20}",
    ]
    .prop_filter("63 bytes at most", |s| s.len() <= 63)
}

proptest! {
    /// The SQL spelling and the display spelling both parse back to the same table.
    #[test]
    fn quoting_and_parsing_round_trip(schema in identifier(), name in identifier()) {
        let table = QualifiedName { schema, name };
        prop_assert_eq!(parse_table(&table.quoted()).unwrap(), table.clone());
        prop_assert_eq!(parse_table(&table.display()).unwrap(), table.clone());
        prop_assert_eq!(parse_table(&table.to_string()).unwrap(), table);
    }

    /// Unquoted names fold to lower case, as PostgreSQL folds them.
    #[test]
    fn plain_names_fold_to_lower_case(name in "[A-Za-z_][A-Za-z0-9_]{0,30}") {
        let table = parse_table(&name).unwrap();
        prop_assert_eq!(table.schema, "public");
        prop_assert_eq!(table.name, name.to_lowercase());
    }

    /// Any text is a table name or an error, never a panic.
    #[test]
    fn any_text_is_a_name_or_an_error(text in "\\PC{0,40}|[\".a-z]{0,12}") {
        let _ = parse_table(&text);
    }
}
