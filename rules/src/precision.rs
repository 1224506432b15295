//! How precisely a statement's results are dropped: what the catalog's facts mean to the
//! rules (a column's collation, the type a value compares as).

use crate::kind::KeyKind;
use crate::predicate::{Collation, SqlType};

/// The collation of each text column, and the database's default. The default collation
/// is the database's, whose provider is ICU on PostgreSQL 15+ when `datlocprovider` says
/// so (read through to_jsonb: older servers have no such column).
pub const COLLATIONS_SQL: &str = "WITH db AS (SELECT d.datcollate::text AS collate, \
       d.datctype::text AS ctype, \
       coalesce(pg_catalog.to_jsonb(d) ->> 'datlocprovider', 'c') AS provider \
     FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()) \
   SELECT a.attname::text, c.collisdeterministic, \
       CASE WHEN c.collprovider = 'd' THEN db.provider ELSE c.collprovider::text END, \
       CASE WHEN c.collprovider = 'd' THEN db.collate ELSE c.collcollate::text END, \
       CASE WHEN c.collprovider = 'd' THEN db.ctype ELSE c.collctype::text END \
   FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation \
   CROSS JOIN db WHERE a.attrelid = $1::text::pg_catalog.regclass AND a.attnum > 0 \
     AND NOT a.attisdropped \
   UNION ALL SELECT NULL, true, db.provider, db.collate, db.ctype FROM db";

/// What a collation decides as pgcache computes it: bytes order only under libc's "C" and
/// "POSIX"; ASCII folds as ASCII under those, `C.*` and English locales (not under a
/// Turkic one, nor ICU, which are not checked here).
pub fn collation(deterministic: bool, provider: &str, collate: &str, ctype: &str) -> Collation {
    let libc = provider == "c";
    let plain = |name: &str| name == "C" || name == "POSIX";
    Collation {
        deterministic,
        bytewise: libc && plain(collate),
        ascii_folding: libc
            && (plain(ctype) || ctype.starts_with("C.") || ctype.starts_with("en_")),
    }
}

/// The type a value of type `name` compares as: its own, or for a domain over a boolean,
/// a signed integer or a uuid (compared by its base type's operators), that base type. An
/// oid is unsigned and reads a negative number as one above 2^31 (`o < -1` is
/// `o < 4294967295`): not compared here.
pub fn base_type(name: &str, kind: KeyKind) -> String {
    let base = match kind {
        KeyKind::Bool => "boolean",
        KeyKind::Integer { min, .. } if min < 0 => "bigint",
        KeyKind::Uuid => "uuid",
        _ => return name.to_string(),
    };
    match SqlType::named(name, Collation::UNKNOWN) {
        SqlType::Unresolved => base.to_string(),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_compare_as_their_signed_base_and_oids_not_at_all() {
        let int4 = KeyKind::Integer {
            min: i32::MIN.into(),
            max: i32::MAX.into(),
        };
        assert_eq!(base_type("positive", int4), "bigint");
        assert_eq!(base_type("integer", int4), "integer");
        let oid = crate::kind::column_kind("oid", false);
        assert_eq!(base_type("oid", oid), "oid");
        assert_eq!(
            SqlType::named(&base_type("oid", oid), Collation::UNKNOWN),
            SqlType::Unresolved
        );
    }

    #[test]
    fn collations_decide_order_and_case_folding() {
        let c = collation(true, "c", "C", "C");
        assert!(c.deterministic && c.bytewise && c.ascii_folding);
        let en = collation(true, "c", "en_US.UTF-8", "en_US.UTF-8");
        assert!(!en.bytewise && en.ascii_folding);
        let tr = collation(true, "c", "tr_TR.UTF-8", "tr_TR.UTF-8");
        assert!(!tr.bytewise && !tr.ascii_folding);
        let icu = collation(true, "i", "C", "C");
        assert!(!icu.bytewise && !icu.ascii_folding);
        assert!(!collation(false, "i", "", "").deterministic);
    }
}
