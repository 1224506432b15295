//! The messages PostgreSQL sends, taken whole from the bytes read: pure framing, no IO, so
//! the same parser serves the replication connection's tokio loop and the Redis event loop's
//! non-blocking sockets, and both are tested without a server. `next_len` peeks a message's
//! length before it is whole, so a caller can refuse a row too big to buffer.

use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;

/// What PostgreSQL sent, as far as pgcache's clients care.
#[derive(Debug, PartialEq, Eq)]
pub enum Backend {
    AuthenticationOk,
    AuthenticationCleartext,
    AuthenticationMd5([u8; 4]),
    AuthenticationSasl(Vec<String>),
    AuthenticationSaslContinue(Vec<u8>),
    AuthenticationSaslFinal(Vec<u8>),
    AuthenticationOther(u32),
    /// BackendKeyData: what a cancel request names.
    CancelKey {
        process_id: i32,
        secret_key: i32,
    },
    ParameterStatus {
        name: String,
        value: String,
    },
    Error(ServerError),
    Notice(ServerError),
    ParseComplete,
    BindComplete,
    CloseComplete,
    /// CommandComplete with its tag (`SELECT 1`, `BEGIN`, `ROLLBACK`...).
    CommandComplete(String),
    EmptyQueryResponse,
    NoData,
    DataRow(TextRow),
    /// ReadyForQuery with the transaction status: `I` idle, `T` in a transaction, `E` in a
    /// failed one.
    ReadyForQuery(u8),
    CopyBothResponse,
    CopyData(Bytes),
    CopyDone,
    /// Row descriptions, notifications, portal suspensions...: nothing pgcache reads.
    Other(u8),
}

/// PostgreSQL's ErrorResponse (or NoticeResponse): severity, SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL`, `PANIC` (or a notice's `WARNING`, `NOTICE`...): the untranslated
    /// `V` field where the server sends it (9.6+), else the `S` field.
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ServerError {
    /// Whether the server ends the session after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }
}

/// A DataRow's columns as text, kept in the message's own bytes (no copy per column).
/// Every column was checked to be UTF-8 when the row was read (sessions use
/// `client_encoding=UTF8`; a row that is not is a protocol error, never a lossy string).
#[derive(Clone, PartialEq, Eq)]
pub struct TextRow {
    body: Bytes,
    /// Each column's (start, length) in `body`, None for NULL.
    columns: SmallVec<[Option<(u32, u32)>; 4]>,
}

impl TextRow {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Column `i`'s text; None for NULL or past the last column.
    pub fn get(&self, i: usize) -> Option<&str> {
        let (start, len) = (*self.columns.get(i)?)?;
        let bytes = &self.body[start as usize..(start + len) as usize];
        // Checked when the row was read: this cannot fail.
        std::str::from_utf8(bytes).ok()
    }

    /// The columns as owned strings.
    pub fn to_strings(&self) -> Vec<Option<String>> {
        (0..self.columns.len())
            .map(|i| self.get(i).map(str::to_string))
            .collect()
    }

    fn parse(body: Bytes) -> Result<TextRow, String> {
        let mut r = Reader(&body);
        let count = r.u16()?;
        let mut columns = SmallVec::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = r.u32()?;
            if len == u32::MAX {
                columns.push(None);
                continue;
            }
            let start = body.len() - r.0.len();
            std::str::from_utf8(r.take(len as usize)?)
                .map_err(|_| "PostgreSQL sent a row that is not UTF-8".to_string())?;
            columns.push(Some((start as u32, len)));
        }
        Ok(TextRow { body, columns })
    }
}

impl std::fmt::Debug for TextRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries((0..self.columns.len()).map(|i| self.get(i)))
            .finish()
    }
}

/// The largest message accepted: a key change is small, but a row with REPLICA IDENTITY FULL
/// carries every column. (Query rows have their own, smaller cap: see `next_len`.)
const MAX_MESSAGE: usize = 1 << 30;

/// The next message's tag and length as its header says (the length counts itself, not the
/// tag), once the 5 header bytes are read: lets a caller refuse a message before buffering it.
pub fn next_len(input: &[u8]) -> Option<(u8, usize)> {
    let header = input.get(..5)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    Some((header[0], len))
}

/// Takes the next whole message from `input`, None when more bytes are needed.
pub fn take_message(input: &mut BytesMut) -> Result<Option<Backend>, String> {
    let Some((tag, len)) = next_len(input) else {
        return Ok(None);
    };
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
    let body = input.split_to(len - 4).freeze();
    parse(tag, body).map(Some)
}

fn parse(tag: u8, body: Bytes) -> Result<Backend, String> {
    let mut r = Reader(&body);
    let message = match tag {
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
        b'K' => Backend::CancelKey {
            process_id: r.u32()? as i32,
            secret_key: r.u32()? as i32,
        },
        b'S' => Backend::ParameterStatus {
            name: r.string()?,
            value: r.string()?,
        },
        b'E' => Backend::Error(fields(&mut r)?),
        b'N' => Backend::Notice(fields(&mut r)?),
        b'1' => Backend::ParseComplete,
        b'2' => Backend::BindComplete,
        b'3' => Backend::CloseComplete,
        b'C' => Backend::CommandComplete(r.string()?),
        b'I' => Backend::EmptyQueryResponse,
        b'n' => Backend::NoData,
        b'D' => return TextRow::parse(body).map(Backend::DataRow),
        b'Z' => Backend::ReadyForQuery(r.take(1)?[0]),
        b'W' => Backend::CopyBothResponse,
        b'd' => return Ok(Backend::CopyData(body)),
        b'c' => Backend::CopyDone,
        other => Backend::Other(other),
    };
    Ok(message)
}

/// An ErrorResponse's or NoticeResponse's fields.
fn fields(r: &mut Reader) -> Result<ServerError, String> {
    let mut error = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
    };
    let mut localized = String::new();
    while !r.0.is_empty() && r.0[0] != 0 {
        let field = r.take(1)?[0];
        let value = r.string()?;
        match field {
            b'V' => error.severity = value,
            b'S' => localized = value,
            b'C' => error.code = value,
            b'M' => error.message = value,
            _ => {}
        }
    }
    if error.severity.is_empty() {
        // Before 9.6 only the localized severity is sent (lc_messages may translate it).
        error.severity = localized;
    }
    Ok(error)
}

/// Reads a message body front to back; every read checks the body is long enough.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("PostgreSQL sent a message shorter than its contents".into());
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    pub fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    pub fn string(&mut self) -> Result<String, String> {
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
    use crate::pg::wire::server::frame;

    fn one(bytes: &[u8]) -> Backend {
        let mut input = BytesMut::from(bytes);
        let message = take_message(&mut input).unwrap().unwrap();
        assert!(input.is_empty());
        message
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
                5 => assert_eq!(taken, Some(Backend::ReadyForQuery(b'I'))),
                13 => assert_eq!(taken, Some(Backend::CopyBothResponse)),
                _ => assert_eq!(taken, None, "after byte {i}"),
            }
        }
        assert!(input.is_empty());
    }

    #[test]
    fn errors_keep_severity_code_and_message() {
        let body = b"SERROR\0C42704\0Mreplication slot \"x\" does not exist\0\0";
        assert_eq!(
            one(&frame(b'E', body)),
            Backend::Error(ServerError {
                severity: "ERROR".into(),
                code: "42704".into(),
                message: "replication slot \"x\" does not exist".into()
            })
        );
        // The untranslated severity wins over a translated one.
        let body = b"SFATAL_IN_GERMAN\0VFATAL\0C57P01\0Mterminating\0\0";
        let Backend::Error(e) = one(&frame(b'E', body)) else {
            panic!("not an error");
        };
        assert_eq!(e.severity, "FATAL");
        assert!(e.is_fatal());
        let Backend::Notice(n) = one(&frame(b'N', b"SWARNING\0VWARNING\0C01000\0Mhm\0\0")) else {
            panic!("not a notice");
        };
        assert!(!n.is_fatal());
    }

    #[test]
    fn rows_and_authentication_requests_are_read() {
        let mut body = vec![0, 3];
        body.extend(3u32.to_be_bytes());
        body.extend(b"0/1");
        body.extend(u32::MAX.to_be_bytes());
        body.extend(0u32.to_be_bytes());
        let Backend::DataRow(row) = one(&frame(b'D', &body)) else {
            panic!("not a row");
        };
        assert_eq!(row.len(), 3);
        assert_eq!(
            (row.get(0), row.get(1), row.get(2)),
            (Some("0/1"), None, Some(""))
        );
        assert_eq!(row.get(3), None);
        assert_eq!(
            row.to_strings(),
            vec![Some("0/1".into()), None, Some("".into())]
        );
        let mut sasl = 10u32.to_be_bytes().to_vec();
        sasl.extend(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        assert_eq!(
            one(&frame(b'R', &sasl)),
            Backend::AuthenticationSasl(vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()])
        );
        let mut md5 = 5u32.to_be_bytes().to_vec();
        md5.extend([1, 2, 3, 4]);
        assert_eq!(
            one(&frame(b'R', &md5)),
            Backend::AuthenticationMd5([1, 2, 3, 4])
        );
    }

    #[test]
    fn pipeline_messages_are_read() {
        assert_eq!(one(&frame(b'1', b"")), Backend::ParseComplete);
        assert_eq!(one(&frame(b'2', b"")), Backend::BindComplete);
        assert_eq!(one(&frame(b'3', b"")), Backend::CloseComplete);
        assert_eq!(one(&frame(b'I', b"")), Backend::EmptyQueryResponse);
        assert_eq!(one(&frame(b'n', b"")), Backend::NoData);
        assert_eq!(
            one(&frame(b'C', b"SELECT 2\0")),
            Backend::CommandComplete("SELECT 2".into())
        );
        assert_eq!(
            one(&frame(b'S', b"default_transaction_read_only\0on\0")),
            Backend::ParameterStatus {
                name: "default_transaction_read_only".into(),
                value: "on".into()
            }
        );
        let mut key = 7i32.to_be_bytes().to_vec();
        key.extend((-3i32).to_be_bytes());
        assert_eq!(
            one(&frame(b'K', &key)),
            Backend::CancelKey {
                process_id: 7,
                secret_key: -3
            }
        );
        assert_eq!(one(&frame(b'T', &[0, 0])), Backend::Other(b'T'));
        assert_eq!(one(&frame(b'Z', b"E")), Backend::ReadyForQuery(b'E'));
    }

    #[test]
    fn lengths_are_seen_before_the_message_is_whole() {
        assert_eq!(next_len(&[b'D', 0, 0, 1]), None);
        assert_eq!(next_len(&[b'D', 0, 0, 1, 0]), Some((b'D', 256)));
        let mut input = BytesMut::from(&[b'D', 0, 0, 1, 0, 0][..]);
        assert_eq!(take_message(&mut input), Ok(None));
        assert_eq!(
            input.len(),
            6,
            "nothing is consumed until the message is whole"
        );
    }

    #[test]
    fn impossible_lengths_short_bodies_and_bad_text_are_errors() {
        let mut input = BytesMut::from(&[b'Z', 0, 0, 0, 3][..]);
        assert!(take_message(&mut input).is_err());
        let mut input = BytesMut::from(&frame(b'D', &[0, 1, 0, 0, 0, 9, b'x'])[..]);
        assert!(take_message(&mut input).is_err());
        let mut input = BytesMut::from(&frame(b'D', &[0, 1, 0, 0, 0, 1, 0xff])[..]);
        assert!(take_message(&mut input).is_err());
        let mut input = BytesMut::from(&frame(b'Z', b"")[..]);
        assert!(take_message(&mut input).is_err());
    }
}
