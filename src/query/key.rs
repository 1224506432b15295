//! A query result's cache key:
//! `<cache_prefix>~q:{<statement>:<parameters>}:<generation>...`, where `<statement>` is the
//! first 128 bits of SHA-256 over the statement's canonical text (32 hex digits, worked out
//! once per statement), then the parameters canonicalised by their types (as primary-key
//! values are: `0123` for an integer is `123`), each as `<length>:<text>`; parameters longer
//! than `INLINE_PARAMS` bytes in all are replaced by `#` and the first 128 bits of their
//! SHA-256; then the current generation of every table the statement reads (`generations`;
//! 16 hex digits each). Every part has a fixed width or says its length, so two different
//! results never share a key, and a hit hashes nothing but short parameters, which it
//! copies. A table's change replaces its generation: the keys of its older results are never
//! built again. The braces are a Redis Cluster hash tag: a result's slot depends on its
//! statement and parameters only (its route, `route_key`), never on the generations, so it
//! stays on one node while they change. (A parameter holding `}` ends the tag early, for the
//! route and the key alike.)

use crate::error::{Error, Result};
use crate::model::key::canonical_param;
use crate::query::{Statement, clock, hex};

/// What follows the cache prefix in every result key.
pub const RESULT_TAG: &str = "~q:";

/// Parameters whose encoding is longer than this are hashed into the key rather than copied.
const INLINE_PARAMS: usize = 128;

/// The parameters' canonical spellings (what is bound, and hashed into the key), or which
/// one is not a value of its type, or that the call gave another number of them.
pub fn canonical_params(statement: &Statement, params: &[&[u8]]) -> Result<Vec<String>> {
    if statement.params.len() != params.len() {
        return Err(Error::invalid(format!(
            "the statement takes {} parameters ($1..${}), got nparams {}",
            statement.params.len(),
            statement.params.len(),
            params.len()
        )));
    }
    params
        .iter()
        .zip(&statement.params)
        .enumerate()
        .map(|(i, (value, param))| {
            let text = std::str::from_utf8(value)
                .map_err(|_| Error::invalid(format!("parameter ${} is not valid UTF-8", i + 1)))?;
            if param.reads_clock
                && let Some(word) = clock::clock_word(text)
            {
                return Err(Error::invalid(clock::refusal(
                    &format!("parameter ${} ({})", i + 1, param.cast),
                    word,
                )));
            }
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

/// Appends the route's tail to `key`, which holds `key_head`: `:`, the parameters
/// (canonical) and the hash tag's closing brace. The result key goes on with the generations
/// of its tables (`generations::append_current`).
pub fn push_route(key: &mut String, params: &[String]) {
    key.push(':');
    let encoded: usize = params
        .iter()
        .map(|p| p.len() + 1 + itoa::Buffer::new().format(p.len()).len())
        .sum();
    if encoded <= INLINE_PARAMS {
        push_params(key, params);
    } else {
        let mut all = String::with_capacity(encoded);
        push_params(&mut all, params);
        key.push('#');
        hex::push(key, &openssl::sha::sha256(all.as_bytes())[..16]);
    }
    key.push('}');
}

/// The name that decides which cluster node answers `statement` with `params`: the result's
/// key without its generations, whose hash tag it shares (a result lives on the node that
/// serves that name's slot).
pub fn route_key(statement: &Statement, params: &[String]) -> String {
    let mut key = statement.key_head.clone();
    push_route(&mut key, params);
    key
}

/// Each parameter as `<length>:<text>`.
fn push_params(out: &mut String, params: &[String]) {
    for param in params {
        out.push_str(itoa::Buffer::new().format(param.len()));
        out.push(':');
        out.push_str(param);
    }
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
                oid: 23,
                kind,
                reads_clock: kind == KeyKind::Rendered(crate::model::key::Rendering::Instant),
            })
            .collect();
        Statement::new(
            crate::model::source::SourceId::DEFAULT,
            "pg_cache:",
            canonical.into(),
            params,
            Vec::new(),
            Vec::new(),
            Vec::new(),
            crate::query::precision::Precision::Table("a test".into()),
            false,
            None,
            String::new(),
            None,
            None,
            crate::pg::undo::Effects::None,
        )
    }

    fn result_key(statement: &Statement, params: &[String], generations: &[&str]) -> String {
        let mut key = route_key(statement, params);
        for generation in generations {
            key.push(':');
            key.push_str(generation);
        }
        key
    }

    const INT: KeyKind = KeyKind::Integer {
        min: i32::MIN as i128,
        max: i32::MAX as i128,
    };

    #[test]
    fn a_time_parameter_spelled_as_the_clock_is_refused() {
        let instant = KeyKind::Rendered(crate::model::key::Rendering::Instant);
        let s = statement(
            "SELECT * FROM t WHERE at > $1 AND note = $2",
            &[instant, KeyKind::Text],
        );
        for now in ["now", " Now", "tomorrow 10:00", "TODAY"] {
            let e = canonical_params(&s, &[now.as_bytes(), b"x"]).unwrap_err();
            assert!(
                e.message().contains("reads as the current time"),
                "{now}: {e}"
            );
        }
        assert!(canonical_params(&s, &[b"2024-05-01T10:00:00Z", b"now"]).is_ok());
    }

    #[test]
    fn spellings_of_one_value_share_a_key_and_values_do_not() {
        let s = statement("SELECT * FROM t WHERE id = $1", &[INT]);
        let key = |p: &[u8]| {
            let params = canonical_params(&s, &[p]).unwrap();
            result_key(&s, &params, &["7777777777777777"])
        };
        assert_eq!(key(b"123"), key(b"0123"));
        assert_eq!(key(b"123"), key(b"+123"));
        assert_ne!(key(b"123"), key(b"124"));
        assert!(key(b"1").starts_with("pg_cache:~q:{"));
        assert!(
            key(b"1").ends_with(&format!(":1:1}}:{}", "7".repeat(16))),
            "{}",
            key(b"1")
        );
    }

    #[test]
    fn a_new_generation_or_statement_changes_the_key() {
        let s = statement("SELECT * FROM t WHERE id = $1", &[INT]);
        let other = statement("SELECT id FROM t WHERE id = $1", &[INT]);
        let params = vec!["1".to_string()];
        let key = result_key(&s, &params, &["1111111111111111"]);
        assert_ne!(key, result_key(&s, &params, &["2222222222222222"]));
        assert_ne!(key, result_key(&other, &params, &["1111111111111111"]));
    }

    #[test]
    fn parameters_cannot_run_into_each_other() {
        let s = statement("SELECT $1 || $2", &[KeyKind::Text, KeyKind::Text]);
        let a = result_key(&s, &["ab".into(), "c".into()], &[]);
        let b = result_key(&s, &["a".into(), "bc".into()], &[]);
        assert_ne!(a, b);
        assert_ne!(a, result_key(&s, &["ab:c".into(), "".into()], &[]));
    }

    #[test]
    fn long_parameters_are_hashed_into_a_short_key() {
        let s = statement("SELECT $1", &[KeyKind::Text]);
        let long = "x".repeat(1000);
        let key = result_key(&s, std::slice::from_ref(&long), &[]);
        assert!(key.len() < 100, "{key}");
        assert!(key.contains(":#"));
        assert!(key.ends_with('}'));
        assert_ne!(key, result_key(&s, &[format!("{long}y")], &[]));
        assert_ne!(key, result_key(&s, &["x".repeat(1001)], &[]));
    }

    #[test]
    fn a_result_shares_its_routes_slot_whatever_its_generations() {
        use crate::redis::cluster::slot;
        let s = statement("SELECT $1", &[KeyKind::Text]);
        for param in ["7", "a}b", "{x}", "", &"y".repeat(500)] {
            let params = [param.to_string()];
            let route = slot(route_key(&s, &params).as_bytes());
            for generations in [
                &["1111111111111111"][..],
                &["2222222222222222", "3333333333333333"],
            ] {
                assert_eq!(
                    slot(result_key(&s, &params, generations).as_bytes()),
                    route,
                    "{param}"
                );
            }
        }
        let other = statement("SELECT $1 || 'x'", &[KeyKind::Text]);
        let spread: std::collections::HashSet<u16> = (0..50)
            .flat_map(|n| {
                [
                    route_key(&s, &[n.to_string()]),
                    route_key(&other, &[n.to_string()]),
                ]
            })
            .map(|k| slot(k.as_bytes()))
            .collect();
        assert!(
            spread.len() > 80,
            "results spread over the slots: {}",
            spread.len()
        );
    }

    #[test]
    fn a_call_with_another_number_of_parameters_is_refused() {
        let s = statement("SELECT * FROM t WHERE id = $1", &[INT]);
        for given in [&[][..], &[&b"1"[..], &b"2"[..]][..]] {
            let e = canonical_params(&s, given).unwrap_err().to_string();
            assert!(e.contains("takes 1 parameters"), "{e}");
        }
    }

    #[test]
    fn a_value_that_is_not_of_its_type_is_named() {
        let s = statement("SELECT * FROM t WHERE id = $1", &[INT]);
        let e = canonical_params(&s, &[b"abc"]).unwrap_err().to_string();
        assert!(e.contains("parameter $1 (integer)"), "{e}");
    }
}
