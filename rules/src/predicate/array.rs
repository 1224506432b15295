//! One-dimensional array literals as `array_in` reads them: `{a,"b c",NULL}`. Anything
//! else (more dimensions, bounds written out) is not read here.

/// The elements of `text` (None: a NULL element); None when not read here.
pub fn elements(text: &str) -> Option<Vec<Option<String>>> {
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    if body.trim().is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        let mut value = String::new();
        let mut quoted = false;
        let mut trailing_blanks = 0;
        loop {
            match chars.peek().copied() {
                None | Some(',') => break,
                Some('{') | Some('}') => return None,
                Some('"') if value.is_empty() && !quoted => {
                    chars.next();
                    quoted = true;
                    loop {
                        match chars.next()? {
                            '"' => break,
                            '\\' => value.push(chars.next()?),
                            c => value.push(c),
                        }
                    }
                    while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
                    if !matches!(chars.peek(), None | Some(',')) {
                        return None;
                    }
                }
                Some('"') => return None,
                Some('\\') if !quoted => {
                    chars.next();
                    value.push(chars.next()?);
                    trailing_blanks = 0;
                }
                Some(c) if !quoted => {
                    chars.next();
                    value.push(c);
                    trailing_blanks = if c.is_ascii_whitespace() {
                        trailing_blanks + 1
                    } else {
                        0
                    };
                }
                Some(_) => return None,
            }
        }
        if !quoted {
            value.truncate(value.len() - trailing_blanks);
            if value.is_empty() {
                return None;
            }
        }
        out.push((quoted || !value.eq_ignore_ascii_case("null")).then_some(value));
        if chars.next().is_none() {
            return Some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(items: &[&str]) -> Option<Vec<Option<String>>> {
        Some(items.iter().map(|s| Some(s.to_string())).collect())
    }

    #[test]
    fn one_dimensional_literals_are_read() {
        assert_eq!(elements("{1,2,3}"), some(&["1", "2", "3"]));
        assert_eq!(elements("{ a , b }"), some(&["a", "b"]));
        assert_eq!(
            elements(r#"{"a,b","c\"d",e\,f}"#),
            some(&["a,b", "c\"d", "e,f"])
        );
        assert_eq!(elements("{}"), Some(Vec::new()));
        assert_eq!(
            elements("{NULL,\"NULL\"}"),
            Some(vec![None, Some("NULL".into())])
        );
        for bad in [
            "1,2",
            "{{1},{2}}",
            "[1:2]={1,2}",
            "{1,,2}",
            "{\"a\"b}",
            "{a\"b\"}",
        ] {
            assert_eq!(elements(bad), None, "{bad}");
        }
    }
}
