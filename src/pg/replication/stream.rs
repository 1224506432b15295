//! The replication stream's own messages inside COPY data (XLogData, keepalives, the
//! consumer's status updates). Pure framing, tested without a server; the backend messages
//! around them are `pg::wire`'s, and `connection` does the IO.

use crate::model::lsn::Lsn;
use crate::pg::wire::backend::Reader;

/// A message of the replication stream.
#[derive(Debug, PartialEq, Eq)]
pub enum CopyData {
    /// WAL data: one pgoutput message.
    XLogData {
        /// Where the server's log ends now.
        wal_end: Lsn,
        data: Vec<u8>,
    },
    /// The server's keepalive: everything before `wal_end` has been sent.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

pub fn copy_data(body: &[u8]) -> Result<CopyData, String> {
    let mut r = Reader(body);
    match r.take(1)?[0] {
        b'w' => {
            r.u64()?; // where this data starts
            let wal_end = Lsn(r.u64()?);
            r.u64()?; // the server's clock
            Ok(CopyData::XLogData {
                wal_end,
                data: r.0.to_vec(),
            })
        }
        b'k' => {
            let wal_end = Lsn(r.u64()?);
            r.u64()?;
            Ok(CopyData::Keepalive {
                wal_end,
                reply_requested: r.take(1)?[0] == 1,
            })
        }
        other => Err(format!(
            "PostgreSQL sent a replication message of unknown type {other:#04x}"
        )),
    }
}

/// The consumer's status update: written, flushed and applied all at `applied` (the slot
/// keeps what comes after `applied` for this consumer).
pub fn status_update(applied: Lsn, now_us: i64, reply: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(34);
    out.push(b'r');
    for _ in 0..3 {
        out.extend(applied.0.to_be_bytes());
    }
    out.extend(now_us.to_be_bytes());
    out.push(u8::from(reply));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_messages_carry_positions() {
        let mut xlog = vec![b'w'];
        xlog.extend(0x10u64.to_be_bytes());
        xlog.extend(0x20u64.to_be_bytes());
        xlog.extend(0u64.to_be_bytes());
        xlog.extend(b"B...");
        assert_eq!(
            copy_data(&xlog).unwrap(),
            CopyData::XLogData {
                wal_end: Lsn(0x20),
                data: b"B...".to_vec()
            }
        );
        let mut keepalive = vec![b'k'];
        keepalive.extend(0x30u64.to_be_bytes());
        keepalive.extend(0u64.to_be_bytes());
        keepalive.push(1);
        assert_eq!(
            copy_data(&keepalive).unwrap(),
            CopyData::Keepalive {
                wal_end: Lsn(0x30),
                reply_requested: true
            }
        );
        assert!(copy_data(b"x").is_err());
        assert!(copy_data(&keepalive[..10]).is_err());
    }

    #[test]
    fn status_updates_report_one_position_three_times() {
        let update = status_update(Lsn(0x0102), 5, true);
        assert_eq!(update.len(), 34);
        assert_eq!(update[0], b'r');
        for i in 0..3 {
            assert_eq!(&update[1 + 8 * i..9 + 8 * i], &0x0102u64.to_be_bytes());
        }
        assert_eq!(&update[25..33], &5i64.to_be_bytes());
        assert_eq!(update[33], 1);
    }
}
