//! Parameter placeholders in a statement's text, found as PostgreSQL's lexer would: never
//! inside a string literal (`'...'`, `E'...'`, `$tag$...$tag$`), a quoted identifier or a
//! comment. `?` placeholders (the JDBC spelling the original module's examples use) become
//! `$1..$n` left to right, `??` stands for a literal `?` (the jsonb operator), as pgjdbc
//! reads it. In a statement with `$n` placeholders (what psycopg, asyncpg, Django and
//! SQLAlchemy send) `?`, `?|` and `?&` are the jsonb operators, as PostgreSQL reads them.
//! `$n` placeholders can be rewritten (`replace_numbered`).

use crate::error::{Error, Result};

/// A piece of the statement's text, as the lexer sees it.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    /// Text copied as is: code, literals, quoted identifiers, comments.
    Text,
    /// `?` outside any literal.
    Question,
    /// `??` outside any literal.
    DoubleQuestion,
    /// `$n` outside any literal.
    Numbered(usize),
}

/// Splits `sql` into pieces: `(piece, start, end)` byte offsets, covering the whole text.
fn pieces(sql: &str) -> Result<Vec<(Piece, usize, usize)>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut text_start) = (0, 0);
    let push = |out: &mut Vec<(Piece, usize, usize)>, piece, start, end, text_start: &mut usize| {
        if *text_start < start {
            out.push((Piece::Text, *text_start, start));
        }
        out.push((piece, start, end));
        *text_start = end;
    };
    while i < bytes.len() {
        let b = bytes[i];
        let after_word = i > 0 && is_word_byte(bytes[i - 1]);
        match b {
            b'\'' => i = end_of_quoted(bytes, i, b'\'', escapes_backslash(bytes, i)),
            b'"' => i = end_of_quoted(bytes, i, b'"', false),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = end_of_block_comment(bytes, i)?,
            b'?' if bytes.get(i + 1) == Some(&b'?') => {
                push(&mut out, Piece::DoubleQuestion, i, i + 2, &mut text_start);
                i += 2;
            }
            b'?' => {
                push(&mut out, Piece::Question, i, i + 1, &mut text_start);
                i += 1;
            }
            b'$' if !after_word && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                let end = i + 1 + digits;
                let n: usize = sql[i + 1..end]
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PARAMS).contains(n))
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "parameter {} is out of range: statements take $1 to ${MAX_PARAMS}",
                            &sql[i..end]
                        ))
                    })?;
                push(&mut out, Piece::Numbered(n), i, end, &mut text_start);
                i = end;
            }
            b'$' if !after_word => i = end_of_dollar_quoted(sql, i),
            _ => i += 1,
        }
    }
    if text_start < bytes.len() {
        out.push((Piece::Text, text_start, bytes.len()));
    }
    Ok(out)
}

/// Most parameters a statement may take (PostgreSQL's own limit is 65535).
pub const MAX_PARAMS: usize = 1000;

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Whether the quote at `i` opens an escape string (`E'...'`), where `\'` does not end it.
fn escapes_backslash(bytes: &[u8], i: usize) -> bool {
    i > 0 && matches!(bytes[i - 1], b'e' | b'E') && (i < 2 || !is_word_byte(bytes[i - 2]))
}

/// The offset after the quoted run starting at `i` (a doubled quote continues it). An
/// unterminated run ends the text: PostgreSQL's parser reports it.
fn end_of_quoted(bytes: &[u8], i: usize, quote: u8, backslash: bool) -> usize {
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' if backslash => j += 2,
            c if c == quote => {
                if bytes.get(j + 1) == Some(&quote) {
                    j += 2;
                } else {
                    return j + 1;
                }
            }
            _ => j += 1,
        }
    }
    bytes.len()
}

/// The offset after the block comment starting at `i` (they nest in PostgreSQL).
fn end_of_block_comment(bytes: &[u8], i: usize) -> Result<usize> {
    let (mut depth, mut j) = (0usize, i);
    while j + 1 < bytes.len() {
        match (bytes[j], bytes[j + 1]) {
            (b'/', b'*') => {
                depth += 1;
                j += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                j += 2;
                if depth == 0 {
                    return Ok(j);
                }
            }
            _ => j += 1,
        }
    }
    Err(Error::invalid(
        "the statement has an unterminated /* comment",
    ))
}

/// The offset after a dollar-quoted string starting at `i` (`$$...$$`, `$tag$...$tag$`), or
/// after the `$` alone when none starts there.
fn end_of_dollar_quoted(sql: &str, i: usize) -> usize {
    let rest = &sql[i + 1..];
    let tag_len = rest
        .bytes()
        .take_while(|&b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
        .count();
    if rest.as_bytes().get(tag_len) != Some(&b'$') {
        return i + 1;
    }
    let delimiter = &sql[i..i + tag_len + 2];
    let body = i + delimiter.len();
    sql[body..]
        .find(delimiter)
        .map_or(sql.len(), |p| body + p + delimiter.len())
}

/// The statement with `$1..$n` placeholders, and how many parameters it takes (its highest
/// `$n`). `?` placeholders are numbered left to right and `??` becomes `?`, when the
/// statement has no `$n`; with `$n`, every `?` is PostgreSQL's operator and the text is
/// left as it is.
pub fn numbered(sql: &str) -> Result<(String, usize)> {
    let pieces = pieces(sql)?;
    let highest = pieces
        .iter()
        .filter_map(|(p, _, _)| match p {
            Piece::Numbered(n) => Some(*n),
            _ => None,
        })
        .max();
    if let Some(highest) = highest {
        return Ok((sql.to_string(), highest));
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut count = 0;
    for (piece, start, end) in pieces {
        match piece {
            Piece::Question => {
                count += 1;
                if count > MAX_PARAMS {
                    return Err(Error::invalid(format!(
                        "the statement has more than {MAX_PARAMS} placeholders"
                    )));
                }
                out.push('$');
                out.push_str(&count.to_string());
            }
            Piece::DoubleQuestion => out.push('?'),
            Piece::Text | Piece::Numbered(_) => out.push_str(&sql[start..end]),
        }
    }
    Ok((out, count))
}

/// `sql` (with `$n` placeholders) with each `$n` replaced by `with(n)`.
pub fn replace_numbered(sql: &str, with: impl Fn(usize) -> String) -> Result<String> {
    let mut out = String::with_capacity(sql.len() + 16);
    for (piece, start, end) in pieces(sql)? {
        match piece {
            Piece::Numbered(n) => out.push_str(&with(n)),
            _ => out.push_str(&sql[start..end]),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_are_numbered_left_to_right() {
        assert_eq!(
            numbered("SELECT * FROM t WHERE a = ? AND b IN (?, ?)").unwrap(),
            ("SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)".into(), 3)
        );
    }

    #[test]
    fn question_marks_in_literals_identifiers_and_comments_are_text() {
        let sql = "SELECT '?', E'\\'?', \"a?\", $$?$$, $x$ ? $x$ -- ?\n/* ? /* ? */ ? */ FROM t WHERE a = ?";
        let (out, n) = numbered(sql).unwrap();
        assert_eq!(n, 1);
        assert!(out.ends_with("WHERE a = $1"), "{out}");
        assert!(out.starts_with("SELECT '?', E'\\'?', \"a?\", $$?$$, $x$ ? $x$ -- ?\n"));
    }

    #[test]
    fn a_doubled_question_mark_is_the_jsonb_operator() {
        assert_eq!(
            numbered("SELECT * FROM t WHERE doc ?? 'k' AND id = ?").unwrap(),
            ("SELECT * FROM t WHERE doc ? 'k' AND id = $1".into(), 1)
        );
    }

    #[test]
    fn numbered_placeholders_count_by_the_highest() {
        assert_eq!(
            numbered("SELECT $2, $1, $2 FROM t").unwrap(),
            ("SELECT $2, $1, $2 FROM t".into(), 2)
        );
        assert!(numbered("SELECT $0").is_err());
        assert!(numbered("SELECT $1001").is_err());
    }

    #[test]
    fn beside_numbered_placeholders_question_marks_are_jsonb_operators() {
        for sql in [
            "SELECT * FROM t WHERE attrs ? $1",
            "SELECT * FROM t WHERE attrs ?| $1 AND attrs ?& $2",
            "SELECT * FROM t WHERE id = $1 AND attrs ? 'k'",
        ] {
            let (out, _) = numbered(sql).unwrap();
            assert_eq!(out, sql);
        }
        assert_eq!(numbered("SELECT * FROM t WHERE a ?| $2").unwrap().1, 2);
    }

    #[test]
    fn dollars_inside_identifiers_are_not_placeholders() {
        assert_eq!(numbered("SELECT a$1 FROM t").unwrap().1, 0);
        assert_eq!(numbered("SELECT '$1', \"$2\" FROM t").unwrap().1, 0);
    }

    #[test]
    fn numbered_placeholders_are_replaced_outside_literals() {
        let out = replace_numbered("SELECT '$1', $1, $10 FROM t", |n| format!("P{n}")).unwrap();
        assert_eq!(out, "SELECT '$1', P1, P10 FROM t");
    }

    #[test]
    fn an_unterminated_comment_is_refused() {
        assert!(numbered("SELECT 1 /* open").is_err());
    }
}
