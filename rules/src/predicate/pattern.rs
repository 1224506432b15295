//! LIKE and ILIKE, as PostgreSQL matches them (`like_match.c`): `%` any run of characters,
//! `_` one character, `\` takes the next character as itself. Under a deterministic
//! collation LIKE compares characters, whatever the collation's order. ILIKE folds case by
//! the collation's locale: decided here only for ASCII text under a collation that folds
//! ASCII as ASCII.
//!
//! And POSIX regular expressions (`~`, `~*`), in the part of PostgreSQL's ARE syntax that
//! the `regex` crate matches alike: literals, `.`, `^`, `$`, `|`, groups, the quantifiers
//! `* + ? {m,n}` (lazy ones too), brackets of ASCII letters, digits, ranges between them
//! and plain punctuation, and `\` before punctuation. Class escapes (`\d`, `\w`: the
//! locale's), back references, character classes by name, options and anything else are
//! not decided here.

/// Whether `text` matches `pattern` (None: not decided here, or a pattern PostgreSQL
/// refuses, ending in the escape character).
pub fn like(text: &str, pattern: &str, fold_case: bool) -> Option<bool> {
    if fold_case {
        if !text.is_ascii() || !pattern.is_ascii() {
            return None;
        }
        return like(
            &text.to_ascii_lowercase(),
            &pattern.to_ascii_lowercase(),
            false,
        );
    }
    let pattern = tokens(pattern)?;
    let text: Vec<char> = text.chars().collect();
    Some(matches(&text, &pattern))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Char(char),
    One,
    Any,
}

fn tokens(pattern: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' => Token::Char(chars.next()?),
            '%' => Token::Any,
            '_' => Token::One,
            c => Token::Char(c),
        });
    }
    Some(out)
}

/// Wildcard matching with one backtrack point (the last `%`): linear in practice,
/// O(text × pattern) at worst.
fn matches(text: &[char], pattern: &[Token]) -> bool {
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|token| *token == Token::Any)
}

/// Whether `text` matches the regular expression `pattern` somewhere (`~`; `~*` when
/// `fold_case`, ASCII only). None: a pattern outside the part read here.
pub fn regex(text: &str, pattern: &str, fold_case: bool) -> Option<bool> {
    if fold_case && (!text.is_ascii() || !pattern.is_ascii()) {
        return None;
    }
    let translated = translate(pattern)?;
    // PostgreSQL's default: `.` and brackets match a newline, `^`/`$` only at the ends.
    let flags = if fold_case { "(?si)" } else { "(?s)" };
    thread_local! {
        static COMPILED: std::cell::RefCell<std::collections::HashMap<String, Option<regex::Regex>>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    let source = format!("{flags}{translated}");
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        // A small cache: patterns are few per statement, but parameters may be many.
        if cache.len() > 256 {
            cache.clear();
        }
        let compiled = cache
            .entry(source.clone())
            .or_insert_with(|| {
                regex::RegexBuilder::new(&source)
                    .size_limit(1 << 20)
                    .build()
                    .ok()
            })
            .clone();
        compiled.map(|r| r.is_match(text))
    })
}

/// The pattern in the `regex` crate's syntax, or None outside the part read here.
fn translate(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars().peekable();
    // Whether the last item can take a quantifier (PostgreSQL refuses `*` at the start).
    let mut quantifiable = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next()?;
                if !next.is_ascii_punctuation() {
                    return None;
                }
                out.push_str(&regex::escape(&next.to_string()));
                quantifiable = true;
            }
            '.' => {
                out.push('.');
                quantifiable = true;
            }
            '^' | '$' | '|' => {
                out.push(c);
                quantifiable = false;
            }
            '(' => {
                if chars.peek() == Some(&'?') {
                    return None;
                }
                out.push('(');
                quantifiable = false;
            }
            ')' => {
                out.push(')');
                quantifiable = true;
            }
            '*' | '+' | '?' => {
                if !quantifiable {
                    return None;
                }
                out.push(c);
                if chars.peek() == Some(&'?') {
                    chars.next();
                    out.push('?');
                }
                quantifiable = false;
            }
            '{' => {
                if !quantifiable {
                    return None;
                }
                let mut bound = String::new();
                loop {
                    match chars.next()? {
                        '}' => break,
                        d @ ('0'..='9' | ',') => bound.push(d),
                        _ => return None,
                    }
                }
                let mut parts = bound.split(',');
                let low: u32 = parts.next()?.parse().ok()?;
                let high = parts.next();
                if parts.next().is_some()
                    || low > 255
                    || high.is_some_and(|h| {
                        !h.is_empty() && h.parse::<u32>().map_or(true, |h| h < low || h > 255)
                    })
                {
                    return None;
                }
                out.push('{');
                out.push_str(&bound);
                out.push('}');
                if chars.peek() == Some(&'?') {
                    chars.next();
                    out.push('?');
                }
                quantifiable = false;
            }
            '[' => {
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
                let mut items = 0;
                loop {
                    let c = chars.next()?;
                    match c {
                        ']' if items > 0 => break,
                        c if c.is_ascii_alphanumeric() => {
                            out.push(c);
                            if chars.peek() == Some(&'-') {
                                chars.next();
                                let end = chars.next()?;
                                if !end.is_ascii_alphanumeric() || end < c {
                                    return None;
                                }
                                out.push('-');
                                out.push(end);
                            }
                        }
                        ' ' | '_' | '.' | ',' | ':' | ';' | '!' | '@' | '#' | '%' | '\'' | '"'
                        | '/' | '<' | '>' | '=' | '+' | '*' | '?' | '$' | '(' | ')' | '{' | '}'
                        | '|' => out.push_str(&regex::escape(&c.to_string())),
                        _ => return None,
                    }
                    items += 1;
                }
                out.push(']');
                quantifiable = true;
            }
            ']' | '}' => return None,
            c if c.is_alphanumeric() || c == ' ' || c.is_ascii_punctuation() => {
                out.push_str(&regex::escape(&c.to_string()));
                quantifiable = true;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_as_postgresql_does() {
        let yes = |t: &str, p: &str| assert_eq!(like(t, p, false), Some(true), "{t} {p}");
        let no = |t: &str, p: &str| assert_eq!(like(t, p, false), Some(false), "{t} {p}");
        yes("abc", "abc");
        yes("abc", "a%");
        yes("abc", "%c");
        yes("abc", "%b%");
        yes("abc", "a_c");
        yes("", "%");
        yes("a%c", "a\\%c");
        yes("a_c", "a\\_c");
        yes("aXbXc", "%X%X%");
        yes("héllo", "h_llo");
        no("abc", "ab");
        no("abc", "a\\%");
        no("abXc", "a_c");
        no("", "_");
        no("ABC", "abc");
        assert_eq!(like("abc", "ab\\", false), None);
        assert_eq!(like("ABC", "a%", true), Some(true));
        assert_eq!(like("Éa", "é%", true), None);
    }

    #[test]
    fn regular_expressions_in_the_common_part_match_as_postgresql_does() {
        let yes = |t: &str, p: &str| assert_eq!(regex(t, p, false), Some(true), "{t} ~ {p}");
        let no = |t: &str, p: &str| assert_eq!(regex(t, p, false), Some(false), "{t} ~ {p}");
        yes("Hello", "^[A-Z]");
        no("hello", "^[A-Z]");
        yes("a\nb", "a.b");
        yes("abc", "b");
        yes("abbbc", "ab{2,3}c");
        yes("x.y", "x\\.y");
        no("xzy", "x\\.y");
        yes("cat", "^(cat|dog)$");
        no("cats", "^(cat|dog)$");
        assert_eq!(regex("ABC", "^a", true), Some(true));
        for unread in [
            "\\d",
            "\\w+",
            "[[:alpha:]]",
            "(?i)a",
            "\\1",
            "[é]",
            "*a",
            "a{2",
            "[]a]",
        ] {
            assert_eq!(regex("a", unread, false), None, "{unread}");
        }
    }
}
