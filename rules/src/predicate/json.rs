//! jsonb's `?`, `?|`, `?&` and `@>`, as PostgreSQL decides them (`jsonb_exists`,
//! `JsonbDeepContains`): numbers compare as numeric (`1.0` equals `1`), an object's keys
//! are unique (the last one written wins), and at the top level an array contains a scalar
//! it holds.

use super::decimal::Decimal;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Decimal),
    String(String),
    Array(Vec<Json>),
    /// Sorted by key, keys unique.
    Object(Vec<(String, Json)>),
}

/// Reads jsonb's input (None: not JSON, or what jsonb refuses, such as `\u0000`).
pub fn read(text: &str) -> Option<Json> {
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
    };
    let v = p.value(0)?;
    p.blanks();
    (p.at == p.s.len()).then_some(v)
}

/// `doc ? key`: a key of the top-level object, or a string element of the top-level array
/// (or the top-level string itself).
pub fn has_key(doc: &Json, key: &str) -> bool {
    match doc {
        Json::Object(fields) => fields.iter().any(|(k, _)| k == key),
        Json::Array(items) => items
            .iter()
            .any(|item| matches!(item, Json::String(s) if s == key)),
        Json::String(s) => s == key,
        _ => false,
    }
}

/// `doc @> part`.
pub fn contains(doc: &Json, part: &Json) -> bool {
    match (doc, part) {
        // A top-level scalar on the right is a one-element array holding it.
        (Json::Array(items), scalar) if !is_container(scalar) => {
            items.iter().any(|item| item == scalar)
        }
        (Json::Array(_), Json::Array(_)) | (Json::Object(_), Json::Object(_)) => {
            deep_contains(doc, part)
        }
        // A top-level scalar contains only itself; an array only a top-level scalar.
        (a, b) if !is_container(a) && !is_container(b) => a == b,
        _ => false,
    }
}

/// A value as JSON text (read back by `read` to an equal value; not jsonb's own spelling).
pub fn write(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(d) => d.to_string(),
        Json::String(s) => serde_json::Value::String(s.clone()).to_string(),
        Json::Array(items) => format!(
            "[{}]",
            items.iter().map(write).collect::<Vec<_>>().join(",")
        ),
        Json::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::Value::String(k.clone()), write(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn is_container(v: &Json) -> bool {
    matches!(v, Json::Array(_) | Json::Object(_))
}

fn deep_contains(doc: &Json, part: &Json) -> bool {
    match (doc, part) {
        (Json::Object(have), Json::Object(want)) => want.iter().all(|(k, w)| {
            have.iter().find(|(hk, _)| hk == k).is_some_and(|(_, h)| {
                match (is_container(h), is_container(w)) {
                    (false, false) => h == w,
                    (true, true) => deep_contains(h, w),
                    _ => false,
                }
            })
        }),
        (Json::Array(have), Json::Array(want)) => want.iter().all(|w| {
            if is_container(w) {
                have.iter()
                    .any(|h| is_container(h) && same_kind(h, w) && deep_contains(h, w))
            } else {
                have.iter().any(|h| h == w)
            }
        }),
        _ => false,
    }
}

fn same_kind(a: &Json, b: &Json) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

/// jsonb nests at most this deep before PostgreSQL's stack check; deeper is not read here.
const DEEPEST: usize = 200;

impl Parser<'_> {
    fn blanks(&mut self) {
        while self
            .s
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.s[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > DEEPEST {
            return None;
        }
        self.blanks();
        Some(match *self.s.get(self.at)? {
            b'{' => {
                self.at += 1;
                let mut fields: Vec<(String, Json)> = Vec::new();
                self.blanks();
                if !self.eat("}") {
                    loop {
                        self.blanks();
                        let key = self.string()?;
                        self.blanks();
                        if !self.eat(":") {
                            return None;
                        }
                        let v = self.value(depth + 1)?;
                        fields.retain(|(k, _)| *k != key);
                        fields.push((key, v));
                        self.blanks();
                        if self.eat("}") {
                            break;
                        }
                        if !self.eat(",") {
                            return None;
                        }
                    }
                }
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                Json::Object(fields)
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                self.blanks();
                if !self.eat("]") {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.blanks();
                        if self.eat("]") {
                            break;
                        }
                        if !self.eat(",") {
                            return None;
                        }
                    }
                }
                Json::Array(items)
            }
            b'"' => Json::String(self.string()?),
            b't' if self.eat("true") => Json::Bool(true),
            b'f' if self.eat("false") => Json::Bool(false),
            b'n' if self.eat("null") => Json::Null,
            _ => self.number()?,
        })
    }

    fn number(&mut self) -> Option<Json> {
        let start = self.at;
        while self
            .s
            .get(self.at)
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.at]).ok()?;
        // JSON's grammar: no leading `+`, no bare `.5`, no leading zeros.
        let body = text.strip_prefix('-').unwrap_or(text);
        let first_ok = body.as_bytes().first().is_some_and(u8::is_ascii_digit)
            && !(body.starts_with('0') && body.as_bytes().get(1).is_some_and(u8::is_ascii_digit));
        if !first_ok || body.contains(".e") || body.contains(".E") || body.ends_with('.') {
            return None;
        }
        match Decimal::read(text)? {
            d @ Decimal::Finite { .. } => Some(Json::Number(d)),
            _ => None,
        }
    }

    fn string(&mut self) -> Option<String> {
        if !self.eat("\"") {
            return None;
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            let b = *self.s.get(self.at)?;
            self.at += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(self.at)?;
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) {
                                if !self.eat("\\u") {
                                    return None;
                                }
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return None;
                                }
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            }
                            if code == 0 {
                                return None;
                            }
                            let c = char::from_u32(code)?;
                            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                b => out.push(b),
            }
        }
        String::from_utf8(out).ok()
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = std::str::from_utf8(self.s.get(self.at..self.at + 4)?).ok()?;
        self.at += 4;
        u32::from_str_radix(digits, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Json {
        read(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn containment_and_keys_follow_jsonb() {
        assert!(contains(
            &j(r#"{"a": 1, "b": [1, 2]}"#),
            &j(r#"{"a": 1.0}"#)
        ));
        assert!(contains(
            &j(r#"{"a": 1, "b": [1, 2]}"#),
            &j(r#"{"b": [2]}"#)
        ));
        assert!(!contains(&j(r#"{"a": 1}"#), &j(r#"{"a": 2}"#)));
        assert!(!contains(&j(r#"{"a": {"b": 1}}"#), &j(r#"{"a": 1}"#)));
        assert!(contains(&j("[1, 2, 3]"), &j("2")));
        assert!(!contains(&j("[[1], 2]"), &j("1")));
        assert!(contains(&j("[[1, 2], 3]"), &j("[[1]]")));
        assert!(!contains(&j("1"), &j("[1]")));
        assert!(contains(&j("\"a\""), &j("\"a\"")));
        assert!(!contains(&j("{}"), &j("[]")));
        assert!(contains(&j(r#"{"a": 1, "a": 2}"#), &j(r#"{"a": 2}"#)));
        assert!(has_key(&j(r#"{"k": null}"#), "k"));
        assert!(has_key(&j(r#"["k", 1]"#), "k"));
        assert!(!has_key(&j(r#"[["k"]]"#), "k"));
        assert!(!has_key(&j(r#"{"a": {"k": 1}}"#), "k"));
        assert_eq!(read("\"\\u0000\""), None);
        assert_eq!(read("01"), None);
        assert_eq!(read("[1,]"), None);
        assert_eq!(j(r#""\ud83d\ude00""#), Json::String("😀".into()));
    }
}
