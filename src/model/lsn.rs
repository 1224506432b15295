//! A position in PostgreSQL's write-ahead log (an LSN), in the text form PostgreSQL prints
//! (`0/16B3748`: the high and low 32 bits in hexadecimal). Commit positions order
//! transactions: every change committed at or before a position is in the log before it.

use crate::error::Error;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The text form, as `pg_current_wal_lsn()` prints it.
    pub fn parse(text: &str) -> Result<Lsn, Error> {
        let bad = || {
            Error::invalid(format!(
                "{text:?} is not a WAL position: expected PostgreSQL's form such as 0/16B3748 \
                 (what SELECT pg_current_wal_lsn() returns)"
            ))
        };
        let (high, low) = text.split_once('/').ok_or_else(bad)?;
        let half = |part: &str| {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(part, 16).map_err(|_| bad())
        };
        Ok(Lsn((u64::from(half(high)?) << 32) | u64::from(half(low)?)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_and_print_as_postgresql_does() {
        for (text, value) in [
            ("0/0", 0),
            ("0/16B3748", 0x16B3748),
            ("1/0", 1 << 32),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
        ] {
            assert_eq!(Lsn::parse(text).unwrap(), Lsn(value));
            assert_eq!(Lsn(value).to_string(), text);
        }
        assert_eq!(Lsn::parse("0/16b3748").unwrap(), Lsn(0x16B3748));
    }

    #[test]
    fn other_text_is_refused_with_the_expected_form() {
        for text in [
            "",
            "0",
            "/1",
            "1/",
            "0/G",
            "0/-1",
            "100000000/0",
            " 0/1",
            "0/1/2",
        ] {
            let e = Lsn::parse(text).unwrap_err();
            assert!(e.message().contains("0/16B3748"), "{text:?}: {e}");
        }
    }

    #[test]
    fn later_positions_order_after_earlier_ones() {
        let a = Lsn::parse("0/FFFFFFFF").unwrap();
        let b = Lsn::parse("1/0").unwrap();
        assert!(a < b);
    }
}
