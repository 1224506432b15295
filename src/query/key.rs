//! A query result's cache key: `<cache_prefix>~q:<32 hex digits>`, the first 128 bits of
//! SHA-256 over the statement's canonical text (its digest), each parameter canonicalised
//! by its type (as primary-key values are: `0123` for an integer is `123`), and the current
//! generation of the cache and of every table the statement reads (`generations`). A
//! cryptographic hash, so no client can make two results share a key. A table's change
//! replaces its generation: the keys of its older results are never built again.

use crate::error::{Error, Result};
use crate::model::key::canonical_param;
use crate::query::Statement;
use crate::query::generations::Generation;
use std::fmt::Write;

/// What follows the cache prefix in every result key.
pub const RESULT_TAG: &str = "~q:";

/// The parameters' canonical spellings (what is bound, and hashed into the key), or which
/// one is not a value of its type.
pub fn canonical_params(statement: &Statement, params: &[&[u8]]) -> Result<Vec<String>> {
    params
        .iter()
        .zip(&statement.params)
        .enumerate()
        .map(|(i, (value, param))| {
            let text = std::str::from_utf8(value)
                .map_err(|_| Error::invalid(format!("parameter ${} is not valid UTF-8", i + 1)))?;
            canonical_param(param.kind, text).map_err(|e| {
                Error::invalid(format!(
                    "parameter ${} ({}): {}",
                    i + 1,
                    param.cast,
                    e.message()
                ))
            })
        })
        .collect()
}

/// The key of `statement`'s result for `params` (canonical) under `generations` (the
/// cache's, then each table's in the statement's order).
pub fn result_key(
    cache_prefix: &str,
    statement: &Statement,
    params: &[String],
    generations: &[Generation],
) -> String {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(&statement.digest);
    for param in params {
        hasher.update(&(param.len() as u64).to_le_bytes());
        hasher.update(param.as_bytes());
    }
    for generation in generations {
        hasher.update(generation);
    }
    let digest = hasher.finish();
    let mut key = String::with_capacity(cache_prefix.len() + RESULT_TAG.len() + 32);
    key.push_str(cache_prefix);
    key.push_str(RESULT_TAG);
    for byte in &digest[..16] {
        let _ = write!(key, "{byte:02x}");
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::key::KeyKind;
    use crate::query::catalog::ParamType;

    fn statement(canonical: &str, kinds: &[KeyKind]) -> Statement {
        let params = kinds
            .iter()
            .map(|&kind| ParamType {
                cast: "integer".into(),
                kind,
            })
            .collect();
        Statement::new(canonical.into(), params, Vec::new(), String::new())
    }

    const INT: KeyKind = KeyKind::Integer {
        min: i32::MIN as i128,
        max: i32::MAX as i128,
    };

    #[test]
    fn spellings_of_one_value_share_a_key_and_values_do_not() {
        let s = statement("SELECT * FROM t WHERE id = $1", &[INT]);
        let key = |p: &[u8]| {
            let params = canonical_params(&s, &[p]).unwrap();
            result_key("pg_cache:", &s, &params, &[[7; 16]])
        };
        assert_eq!(key(b"123"), key(b"0123"));
        assert_eq!(key(b"123"), key(b"+123"));
        assert_ne!(key(b"123"), key(b"124"));
        assert!(key(b"1").starts_with("pg_cache:~q:"));
        assert_eq!(key(b"1").len(), "pg_cache:~q:".len() + 32);
    }

    #[test]
    fn a_new_generation_or_statement_changes_the_key() {
        let s = statement("SELECT * FROM t WHERE id = $1", &[INT]);
        let other = statement("SELECT id FROM t WHERE id = $1", &[INT]);
        let params = vec!["1".to_string()];
        let key = result_key("p:", &s, &params, &[[1; 16]]);
        assert_ne!(key, result_key("p:", &s, &params, &[[2; 16]]));
        assert_ne!(key, result_key("p:", &other, &params, &[[1; 16]]));
    }

    #[test]
    fn parameters_cannot_run_into_each_other() {
        let s = statement("SELECT $1 || $2", &[KeyKind::Text, KeyKind::Text]);
        let a = result_key("p:", &s, &["ab".into(), "c".into()], &[]);
        let b = result_key("p:", &s, &["a".into(), "bc".into()], &[]);
        assert_ne!(a, b);
    }

    #[test]
    fn a_value_that_is_not_of_its_type_is_named() {
        let s = statement("SELECT * FROM t WHERE id = $1", &[INT]);
        let e = canonical_params(&s, &[b"abc"]).unwrap_err().to_string();
        assert!(e.contains("parameter $1 (integer)"), "{e}");
    }
}
