//! The `sources` setting's text: every named source's definition, `name setting value ...`,
//! the definitions separated by `;`. A value is written bare unless it is empty or holds
//! whitespace, a `;` or a `'` first, and then in single quotes with a `'` inside doubled
//! (`tables 'a, b'`), so any value reads back as written. Pure: which sources a text starts
//! is `sources::redeclare`'s.

use super::Pairs;
use crate::error::Error;

/// One source's definition: its name, and the pairs given for it (never a password).
pub type Definition = (String, Pairs);

/// Whether two definitions' pairs say the same, in whatever order (a setting given twice
/// counts as its last value, as when applied).
pub fn same_pairs(a: &Pairs, b: &Pairs) -> bool {
    let last = |pairs: &Pairs| {
        let mut by_setting: Vec<(String, String)> = Vec::new();
        for (setting, value) in pairs {
            by_setting.retain(|(s, _)| s != setting);
            by_setting.push((setting.clone(), value.clone()));
        }
        by_setting.sort();
        by_setting
    };
    last(a) == last(b)
}

/// The text of `definitions`, in their order.
pub fn render(definitions: &[Definition]) -> String {
    (definitions.iter())
        .map(|(name, pairs)| {
            std::iter::once(name.clone())
                .chain((pairs.iter()).flat_map(|(setting, value)| [setting.clone(), quote(value)]))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn quote(value: &str) -> String {
    let bare = !value.is_empty()
        && !value.starts_with('\'')
        && !value.chars().any(|c| c.is_whitespace() || c == ';');
    if bare {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// The definitions `text` holds, names as written (their rules are checked where the
/// sources are declared), settings in lower case.
pub fn parse(text: &str) -> Result<Vec<Definition>, Error> {
    let mut definitions = Vec::new();
    for words in statements(text)? {
        let mut words = words.into_iter();
        let Some(name) = words.next() else {
            continue;
        };
        let rest: Vec<String> = words.collect();
        if !rest.len().is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "source {name}: {:?} has no value; a definition is `name setting value ...`",
                rest[rest.len() - 1]
            )));
        }
        let pairs = (rest.chunks(2))
            .map(|pair| (pair[0].to_lowercase(), pair[1].clone()))
            .collect();
        if definitions.iter().any(|(n, _): &Definition| *n == name) {
            return Err(Error::invalid(format!(
                "source {name} is defined twice; give each source one definition"
            )));
        }
        definitions.push((name, pairs));
    }
    Ok(definitions)
}

/// The words of each `;`-separated statement, quotes taken off.
fn statements(text: &str) -> Result<Vec<Vec<String>>, Error> {
    let mut statements = vec![Vec::new()];
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == ';' {
            chars.next();
            statements.push(Vec::new());
        } else if c == '\'' {
            chars.next();
            let mut word = String::new();
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        word.push('\'');
                    }
                    Some('\'') => break,
                    Some(c) => word.push(c),
                    None => {
                        return Err(Error::invalid(format!(
                            "unterminated quote in {text:?}: a quoted value ends with '"
                        )));
                    }
                }
            }
            statements.last_mut().unwrap().push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == ';' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            statements.last_mut().unwrap().push(word);
        }
    }
    Ok(statements.into_iter().filter(|s| !s.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn definitions_read_and_write() {
        let text = "analytics pg_host db2 tables 'a, b'; billing pg_database 'it''s;' pg_port 5433";
        let parsed = parse(text).unwrap();
        assert_eq!(
            parsed,
            vec![
                (
                    "analytics".to_string(),
                    pairs(&[("pg_host", "db2"), ("tables", "a, b")])
                ),
                (
                    "billing".to_string(),
                    pairs(&[("pg_database", "it's;"), ("pg_port", "5433")])
                ),
            ]
        );
        assert_eq!(render(&parsed), text);
        assert_eq!(
            parse("a x it's").unwrap(),
            vec![("a".to_string(), pairs(&[("x", "it's")]))]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse(" ; ;").unwrap(), vec![]);
        assert_eq!(
            parse("solo").unwrap(),
            vec![("solo".to_string(), Pairs::new())]
        );
        assert_eq!(
            render(&[("solo".to_string(), pairs(&[("x", "")]))]),
            "solo x ''"
        );
    }

    #[test]
    fn pairs_compare_in_any_order() {
        let a = pairs(&[("pg_host", "h"), ("default_ttl", "60")]);
        assert!(same_pairs(
            &a,
            &pairs(&[("default_ttl", "60"), ("pg_host", "h")])
        ));
        assert!(same_pairs(
            &a,
            &pairs(&[("pg_host", "x"), ("default_ttl", "60"), ("pg_host", "h")])
        ));
        assert!(!same_pairs(&a, &pairs(&[("pg_host", "h")])));
        assert!(!same_pairs(
            &a,
            &pairs(&[("pg_host", "h"), ("default_ttl", "61")])
        ));
    }

    #[test]
    fn bad_definitions_say_what_is_wrong() {
        let message = |text: &str| parse(text).unwrap_err().message().to_string();
        assert!(message("a pg_host").contains("\"pg_host\" has no value"));
        assert!(message("a pg_host 'x").contains("unterminated quote"));
        assert!(message("a; a pg_host x").contains("defined twice"));
    }

    proptest! {
        /// Whatever the values hold, the text reads back as the definitions it was made of.
        #[test]
        fn any_definitions_round_trip(
            definitions in proptest::collection::vec(
                ("[a-z][a-z0-9_]{0,8}", proptest::collection::vec(("[a-z_]{1,12}", ".{0,12}"), 0..4)),
                0..4,
            )
        ) {
            let mut unique: Vec<Definition> = Vec::new();
            for (name, pairs) in definitions {
                if !unique.iter().any(|(n, _)| *n == name) {
                    unique.push((name, pairs));
                }
            }
            prop_assert_eq!(parse(&render(&unique)).unwrap(), unique);
        }
    }
}
