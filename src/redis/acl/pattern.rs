//! ACL key patterns (Redis glob syntax: `*`, `?`, `[abc]`, `[^a-z]`, `\x`) and whether one
//! lets a user at every key that starts with a prefix: what FLUSH of a table needs on
//! servers without `RedisModule_ACLCheckKeyPrefixPermissions` (before Redis 8). Pure.

/// One element of a pattern.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// `*`: any run of bytes, empty included.
    Star,
    /// `?`: any one byte.
    Any,
    /// A byte as written (or escaped with `\`).
    Byte(u8),
    /// `[...]`: inclusive byte ranges, matched or (with `^`) excluded.
    Class {
        ranges: Vec<(u8, u8)>,
        negated: bool,
    },
}

impl Token {
    fn matches(&self, byte: u8) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(b) => *b == byte,
            Token::Class { ranges, negated } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&byte)) != *negated
            }
        }
    }
}

/// The pattern's tokens, or None for one Redis would read in its own way (an unterminated
/// `[` class or a trailing `\`): such a pattern is taken to cover nothing.
fn tokens(pattern: &[u8]) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' => out.push(Token::Star),
            b'?' => out.push(Token::Any),
            b'\\' => {
                i += 1;
                out.push(Token::Byte(*pattern.get(i)?));
            }
            b'[' => {
                i += 1;
                let negated = pattern.get(i) == Some(&b'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    let mut lo = *pattern.get(i)?;
                    if lo == b']' {
                        break;
                    }
                    if lo == b'\\' {
                        i += 1;
                        lo = *pattern.get(i)?;
                    }
                    if pattern.get(i + 1) == Some(&b'-')
                        && pattern.get(i + 2).is_some_and(|b| *b != b']')
                    {
                        let hi = pattern[i + 2];
                        ranges.push((lo.min(hi), lo.max(hi)));
                        i += 3;
                    } else {
                        ranges.push((lo, lo));
                        i += 1;
                    }
                }
                out.push(Token::Class { ranges, negated });
            }
            byte => out.push(Token::Byte(byte)),
        }
        i += 1;
    }
    Some(out)
}

/// Whether `pattern` matches every key that starts with `prefix` (however it goes on):
/// after reading the prefix, some way through the pattern is left with nothing but `*`.
pub fn covers_prefix(pattern: &[u8], prefix: &[u8]) -> bool {
    let Some(tokens) = tokens(pattern) else {
        return false;
    };
    // The positions in the pattern reachable after the bytes read so far.
    let closure = |states: Vec<usize>| {
        let mut all = states;
        let mut i = 0;
        while i < all.len() {
            let at = all[i];
            if tokens.get(at) == Some(&Token::Star) && !all.contains(&(at + 1)) {
                all.push(at + 1);
            }
            i += 1;
        }
        all
    };
    let mut states = closure(vec![0]);
    for byte in prefix {
        let mut next = Vec::new();
        for &at in &states {
            match tokens.get(at) {
                Some(Token::Star) => next.push(at),
                Some(token) if token.matches(*byte) => next.push(at + 1),
                _ => {}
            }
        }
        next.sort_unstable();
        next.dedup();
        states = closure(next);
        if states.is_empty() {
            return false;
        }
    }
    states
        .iter()
        .any(|&at| at < tokens.len() && tokens[at..].iter().all(|t| *t == Token::Star))
}

/// The key patterns of an `ACL GETUSER` `keys` field (`~p %R~p %W~p %RW~p`, space separated)
/// that allow writing.
pub fn writable_patterns(keys: &str) -> impl Iterator<Item = &str> {
    keys.split_whitespace().filter_map(|rule| {
        if let Some(pattern) = rule.strip_prefix('~') {
            return Some(pattern);
        }
        let (permissions, pattern) = rule.strip_prefix('%')?.split_once('~')?;
        permissions
            .to_ascii_uppercase()
            .contains('W')
            .then_some(pattern)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_covers_a_prefix_only_if_it_matches_whatever_follows() {
        let prefix = b"pg_cache:users:";
        for covering in [
            "*",
            "pg_cache:*",
            "pg_cache:users:*",
            "pg_cache:users*",
            "*users:*",
            "pg_cache:????s:*",
            "pg_cache:[u]sers:**",
            "pg_cache:[^x]sers:*",
            "pg_cache:[a-z]sers:*",
            "pg_cache:[z-a]sers:*",
            "pg\\_cache:users:*",
            "*:*:*",
        ] {
            assert!(covers_prefix(covering.as_bytes(), prefix), "{covering}");
        }
        for narrower in [
            "pg_cache:users:",
            "pg_cache:users:?",
            "pg_cache:users:?*",
            "pg_cache:users:{*",
            "pg_cache:users:*x",
            "pg_cache:orders:*",
            "pg_cache:user:*",
            "pg_cache:[^u]sers:*",
            "pg_cache:users:\\*",
            "pg_cache:users:[*]*",
            "pg_cache:[users:*",
            "pg_cache:users:*\\",
            "users:*",
        ] {
            assert!(!covers_prefix(narrower.as_bytes(), prefix), "{narrower}");
        }
    }

    #[test]
    fn only_patterns_that_allow_writing_count() {
        let keys = "~a:* %R~b:* %W~c:* %RW~d:* %rw~e:*";
        assert_eq!(
            writable_patterns(keys).collect::<Vec<_>>(),
            ["a:*", "c:*", "d:*", "e:*"]
        );
    }
}
