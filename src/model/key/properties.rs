//! Properties of key reading, over generated tables and spellings: thousands of cases in
//! `make test`, a million in `make fuzz` (`PROPTEST_CASES`).

use super::*;
use proptest::prelude::*;

/// A table of generated key columns, all of them the primary key (or none, like a view).
#[derive(Debug, Clone)]
struct Table {
    columns: Vec<(String, KeyKind)>,
    /// Every column, when they form the primary key.
    primary_key: Option<Vec<String>>,
}

impl KeyColumns for Table {
    fn kind_of(&self, column: &str) -> Option<KeyKind> {
        self.columns
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, k)| *k)
    }
    fn required(&self) -> Option<&[String]> {
        self.primary_key.as_deref()
    }
    fn table_name(&self) -> &str {
        "t"
    }
}

fn integer(bits: u32) -> KeyKind {
    let max = (1i128 << (bits - 1)) - 1;
    KeyKind::Integer { min: -max - 1, max }
}

fn kind() -> impl Strategy<Value = KeyKind> {
    prop_oneof![
        Just(integer(16)),
        Just(integer(32)),
        Just(integer(64)),
        Just(KeyKind::Integer {
            min: 0,
            max: u32::MAX.into()
        }),
        Just(KeyKind::Decimal),
        Just(KeyKind::Bool),
        Just(KeyKind::Uuid),
        Just(KeyKind::Text),
        Just(KeyKind::Rendered(Rendering::Plain)),
    ]
}

/// Column names as PostgreSQL allows them, quotes, backslashes and non-ASCII included.
fn column_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_][a-z0-9_]{0,7}",
        1 => "[a-zA-Z \"\\\\:{}é✓\u{1F600}]{1,6}",
    ]
}

fn table() -> impl Strategy<Value = Table> {
    (
        proptest::collection::btree_map(column_name(), kind(), 1..4),
        any::<bool>(),
    )
        .prop_map(|(columns, has_primary_key)| {
            let columns: Vec<(String, KeyKind)> = columns.into_iter().collect();
            let primary_key =
                has_primary_key.then(|| columns.iter().map(|(c, _)| c.clone()).collect());
            Table {
                columns,
                primary_key,
            }
        })
}

/// A JSON string literal for `s`, each character escaped (`\uXXXX`, `\/`) or not at random.
fn json_string(s: &str, escapes: &[bool]) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        let escape = escapes
            .get(i % escapes.len().max(1))
            .copied()
            .unwrap_or(false);
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            '/' if escape => out.push_str("\\/"),
            c if escape => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One value of `kind` as several JSON spellings a client may send; the first is canonical.
fn spellings(kind: KeyKind, seed: u64, text: &str) -> Vec<String> {
    match kind {
        KeyKind::Integer { min, max } => {
            let span = (max - min) as u128 + 1;
            let n = min + (seed as u128 % span) as i128;
            let (sign, plus, magnitude) = match n < 0 {
                true => ("-", "-", n.unsigned_abs()),
                false => ("", "+", n.unsigned_abs()),
            };
            vec![
                n.to_string(),
                format!("\"{n}\""),
                format!("\"{plus}{magnitude}\""),
                format!("\"{sign}00{magnitude}\""),
            ]
        }
        KeyKind::Decimal => {
            let digits = seed % 1_000_000;
            let scale = (seed >> 32) % 4;
            let value = format!("{digits}e-{scale}");
            let canonical = canonical_decimal(&value).unwrap();
            vec![
                canonical.clone(),
                value.clone(),
                format!("\"{value}\""),
                match canonical.contains('.') {
                    true => format!("{canonical}00"),
                    false => format!("{canonical}.0"),
                },
                format!("\"{canonical}\""),
            ]
        }
        KeyKind::Bool => {
            let b = seed.is_multiple_of(2);
            vec![b.to_string(), format!("\"{b}\"")]
        }
        KeyKind::Uuid => {
            let hex = format!("{:016x}{:016x}", seed, seed.rotate_left(17) ^ 0xdead_beef);
            let canonical = canonical_uuid(&hex).unwrap();
            vec![
                format!("\"{canonical}\""),
                format!("\"{hex}\""),
                format!("\"{}\"", canonical.to_uppercase()),
                format!("\"{{{canonical}}}\""),
            ]
        }
        KeyKind::Text | KeyKind::Rendered(_) => {
            vec![
                json_string(text, &[false]),
                json_string(text, &[true, false]),
            ]
        }
    }
}

/// Whitespace JSON allows between tokens.
fn gap(seed: u64, at: usize) -> &'static str {
    ["", " ", "\n", "\t ", "  \r\n"][((seed >> (at % 60)) % 5) as usize]
}

/// The key object with each column's value spelled by `choice`, in `order`, spaced by `seed`.
fn spell(
    table: &Table,
    values: &[Vec<String>],
    choice: &[usize],
    order: &[usize],
    seed: u64,
) -> String {
    let mut out = String::from("{");
    for (n, &i) in order.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let (column, _) = &table.columns[i];
        let value = &values[i][choice[i] % values[i].len()];
        out.push_str(&format!(
            "{}{}{}:{}{}{}",
            gap(seed, 4 * n),
            json_string(column, &[false]),
            gap(seed, 4 * n + 1),
            gap(seed, 4 * n + 2),
            value,
            gap(seed, 4 * n + 3)
        ));
    }
    out.push('}');
    out
}

/// The columns' indexes in name order: the canonical order.
fn by_name(table: &Table) -> Vec<usize> {
    let mut order: Vec<usize> = (0..table.columns.len()).collect();
    order.sort_by(|a, b| table.columns[*a].0.cmp(&table.columns[*b].0));
    order
}

/// A table, one value per column in every spelling, and how to pick and order them.
fn key_case() -> impl Strategy<Value = (Table, Vec<Vec<String>>, Vec<usize>, Vec<usize>, u64)> {
    table().prop_flat_map(|table| {
        let n = table.columns.len();
        (
            Just(table.clone()),
            proptest::collection::vec((any::<u64>(), "\\PC{0,12}"), n),
            proptest::collection::vec(0usize..8, n),
            // Half the cases in name order and without spaces, as the one-scan reader wants.
            prop_oneof![
                Just(by_name(&table)),
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            ],
            prop_oneof![Just(0u64), any::<u64>()],
        )
            .prop_map(|(table, raw, choice, order, seed)| {
                let values = table
                    .columns
                    .iter()
                    .zip(&raw)
                    .map(|((_, kind), (seed, text))| spellings(*kind, *seed, text))
                    .collect();
                (table, values, choice, order, seed)
            })
    })
}

proptest! {
    /// Every spelling of a key, any value spellings, key order and spacing, names the
    /// same entry as the canonical spelling, and the canonical spelling is a fixed point.
    #[test]
    fn canonical_keys_are_stable_under_reformatting_and_key_order(
        (table, values, choice, order, seed) in key_case()
    ) {
        let canonical_order = by_name(&table);
        let first = vec![0; table.columns.len()];
        let canonical_text = spell(&table, &values, &first, &canonical_order, 0);
        let canonical = canonicalise(canonical_text.as_bytes(), &table).unwrap();
        prop_assert_eq!(&canonical.json, &canonical_text);
        prop_assert_eq!(&canonicalise(canonical.json.as_bytes(), &table).unwrap(), &canonical);
        let other = spell(&table, &values, &choice, &order, seed);
        let reread = canonicalise(other.as_bytes(), &table).unwrap();
        prop_assert_eq!(&reread.json, &canonical.json, "spelled {}", other);
    }

    /// The one-scan reader accepts a text only where the full reader returns the same key.
    #[test]
    fn both_key_readers_agree_on_every_spelling(
        (table, values, choice, order, seed) in key_case(),
        cut in any::<usize>(),
        noise in "\\PC{0,3}",
    ) {
        let spelled = spell(&table, &values, &choice, &order, seed);
        let mut mutated = spelled.clone();
        let at = (0..=mutated.len()).filter(|i| mutated.is_char_boundary(*i)).nth(cut % 4).unwrap_or(0);
        mutated.insert_str(at, &noise);
        for text in [spelled, mutated] {
            let full = serde_json::from_str::<Value>(&text)
                .map_err(|e| e.to_string())
                .and_then(|v| canonicalise_value(&v, &table).map_err(|e| e.to_string()));
            if let Some(fast) = already_canonical(text.as_bytes(), &table) {
                prop_assert_eq!(Ok(fast), full.clone(), "read {}", text);
            }
            let through = canonicalise(text.as_bytes(), &table).map_err(|e| e.to_string());
            prop_assert_eq!(through.is_ok(), full.is_ok(), "read {}", text);
            if let (Ok(a), Ok(b)) = (through, full) {
                prop_assert_eq!(a, b);
            }
        }
    }

    /// Arbitrary bytes are a key or an error, never a panic.
    #[test]
    fn any_bytes_are_a_key_or_an_error(table in table(), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = canonicalise(&bytes, &table);
    }

    /// GET's reader takes a key READ built back into the table and pk it was built from.
    #[test]
    fn cache_keys_split_back_into_table_and_pk(
        prefix in "[a-z_:]{0,10}",
        table in "[a-zA-Z0-9_.\":é ]{1,20}",
        name in "[a-z][a-z0-9_]{0,31}",
        (t, values, _, _, _) in key_case(),
    ) {
        let order: Vec<usize> = (0..t.columns.len()).collect();
        let pk = canonicalise(spell(&t, &values, &vec![0; order.len()], &order, 0).as_bytes(), &t).unwrap();
        let key = cache_key(&prefix, &table, &pk.json);
        let (source, split_table, split_pk) = split_cache_key(&prefix, key.as_bytes()).unwrap();
        prop_assert_eq!(source, None);
        prop_assert_eq!(split_table, table.as_bytes());
        prop_assert_eq!(split_pk, pk.json.as_bytes());
        // A named source's key splits back into its name too.
        let named = cache_key(&crate::model::source::key_prefix(&prefix, Some(&name)), &table, &pk.json);
        let (source, split_table, split_pk) = split_cache_key(&prefix, named.as_bytes()).unwrap();
        prop_assert_eq!(source, Some(name.as_bytes()));
        prop_assert_eq!(split_table, table.as_bytes());
        prop_assert_eq!(split_pk, pk.json.as_bytes());
    }
}
