//! The backend messages a replication connection meets, taken from the bytes read, and the
//! replication stream's own messages inside COPY data (XLogData, keepalives, the consumer's
//! status updates). Pure framing, tested without a server; `connection` does the IO.

use crate::model::lsn::Lsn;
use bytes::{Buf, BytesMut};

/// What PostgreSQL sent, as far as a replication client cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Backend {
    AuthenticationOk,
    AuthenticationCleartext,
    AuthenticationMd5([u8; 4]),
    AuthenticationSasl(Vec<String>),
    AuthenticationSaslContinue(Vec<u8>),
    AuthenticationSaslFinal(Vec<u8>),
    AuthenticationOther(u32),
    Error(ServerError),
    DataRow(Vec<Option<String>>),
    ReadyForQuery,
    CopyBothResponse,
    CopyData(Vec<u8>),
    CopyDone,
    /// Notices, parameter statuses, row descriptions, command completions...
    Other(u8),
}

/// PostgreSQL's ErrorResponse: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: String,
    pub message: String,
}

/// The largest message accepted: a key change is small, but a row with REPLICA IDENTITY FULL
/// carries every column.
const MAX_MESSAGE: usize = 1 << 30;

/// Takes the next whole message from `input`, None when more bytes are needed.
pub fn take_message(input: &mut BytesMut) -> Result<Option<Backend>, String> {
    if input.len() < 5 {
        return Ok(None);
    }
    let tag = input[0];
    let len = u32::from_be_bytes([input[1], input[2], input[3], input[4]]) as usize;
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(format!(
            "PostgreSQL sent a message of impossible length {len}"
        ));
    }
    if input.len() < 1 + len {
        input.reserve(1 + len - input.len());
        return Ok(None);
    }
    input.advance(5);
    let body = input.split_to(len - 4);
    parse(tag, &body).map(Some)
}

fn parse(tag: u8, body: &[u8]) -> Result<Backend, String> {
    let mut r = Reader(body);
    Ok(match tag {
        b'R' => match r.u32()? {
            0 => Backend::AuthenticationOk,
            3 => Backend::AuthenticationCleartext,
            5 => Backend::AuthenticationMd5(r.take(4)?.try_into().unwrap()),
            10 => {
                let mut mechanisms = Vec::new();
                while !r.0.is_empty() && r.0[0] != 0 {
                    mechanisms.push(r.string()?);
                }
                Backend::AuthenticationSasl(mechanisms)
            }
            11 => Backend::AuthenticationSaslContinue(r.0.to_vec()),
            12 => Backend::AuthenticationSaslFinal(r.0.to_vec()),
            other => Backend::AuthenticationOther(other),
        },
        b'E' => {
            let mut error = ServerError {
                code: String::new(),
                message: String::new(),
            };
            while !r.0.is_empty() && r.0[0] != 0 {
                let field = r.take(1)?[0];
                let value = r.string()?;
                match field {
                    b'C' => error.code = value,
                    b'M' => error.message = value,
                    _ => {}
                }
            }
            Backend::Error(error)
        }
        b'D' => {
            let count = r.u16()?;
            let mut values = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let len = r.u32()?;
                values.push(if len == u32::MAX {
                    None
                } else {
                    Some(String::from_utf8_lossy(r.take(len as usize)?).into_owned())
                });
            }
            Backend::DataRow(values)
        }
        b'Z' => Backend::ReadyForQuery,
        b'W' => Backend::CopyBothResponse,
        b'd' => Backend::CopyData(body.to_vec()),
        b'c' => Backend::CopyDone,
        other => Backend::Other(other),
    })
}

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

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("PostgreSQL sent a message shorter than its contents".into());
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self
            .0
            .iter()
            .position(|b| *b == 0)
            .ok_or("PostgreSQL sent a string without its terminator")?;
        let text = String::from_utf8_lossy(&self.0[..len]).into_owned();
        self.0 = &self.0[len + 1..];
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(((body.len() + 4) as u32).to_be_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn messages_are_taken_only_when_whole() {
        let mut bytes = frame(b'Z', b"I");
        bytes.extend(frame(b'W', &[0, 0, 0]));
        let mut input = BytesMut::new();
        for (i, byte) in bytes.iter().enumerate() {
            input.extend_from_slice(&[*byte]);
            let taken = take_message(&mut input).unwrap();
            match i {
                5 => assert_eq!(taken, Some(Backend::ReadyForQuery)),
                13 => assert_eq!(taken, Some(Backend::CopyBothResponse)),
                _ => assert_eq!(taken, None, "after byte {i}"),
            }
        }
        assert!(input.is_empty());
    }

    #[test]
    fn errors_keep_code_and_message() {
        let mut body = Vec::new();
        body.extend(b"SERROR\0C42704\0Mreplication slot \"x\" does not exist\0\0");
        let mut input = BytesMut::from(&frame(b'E', &body)[..]);
        assert_eq!(
            take_message(&mut input).unwrap(),
            Some(Backend::Error(ServerError {
                code: "42704".into(),
                message: "replication slot \"x\" does not exist".into()
            }))
        );
    }

    #[test]
    fn rows_and_authentication_requests_are_read() {
        let mut body = vec![0, 2];
        body.extend(3u32.to_be_bytes());
        body.extend(b"0/1");
        body.extend(u32::MAX.to_be_bytes());
        let mut input = BytesMut::from(&frame(b'D', &body)[..]);
        assert_eq!(
            take_message(&mut input).unwrap(),
            Some(Backend::DataRow(vec![Some("0/1".into()), None]))
        );
        let mut sasl = 10u32.to_be_bytes().to_vec();
        sasl.extend(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let mut input = BytesMut::from(&frame(b'R', &sasl)[..]);
        assert_eq!(
            take_message(&mut input).unwrap(),
            Some(Backend::AuthenticationSasl(vec![
                "SCRAM-SHA-256-PLUS".into(),
                "SCRAM-SHA-256".into()
            ]))
        );
        let mut md5 = 5u32.to_be_bytes().to_vec();
        md5.extend([1, 2, 3, 4]);
        let mut input = BytesMut::from(&frame(b'R', &md5)[..]);
        assert_eq!(
            take_message(&mut input).unwrap(),
            Some(Backend::AuthenticationMd5([1, 2, 3, 4]))
        );
    }

    #[test]
    fn impossible_lengths_and_short_bodies_are_errors() {
        let mut input = BytesMut::from(&[b'Z', 0, 0, 0, 3][..]);
        assert!(take_message(&mut input).is_err());
        let mut input = BytesMut::from(&frame(b'D', &[0, 1, 0, 0, 0, 9, b'x'])[..]);
        assert!(take_message(&mut input).is_err());
    }

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
