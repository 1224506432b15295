//! LIKE and ILIKE, as PostgreSQL matches them (`like_match.c`): `%` any run of characters,
//! `_` one character, `\` takes the next character as itself. Under a deterministic
//! collation LIKE compares characters, whatever the collation's order. ILIKE folds case by
//! the collation's locale: decided here only for ASCII text under a collation that folds
//! ASCII as ASCII.

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
}
