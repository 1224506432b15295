//! PostgreSQL's built-in `pgoutput` plugin's messages (protocol version 1, text values), as
//! "Logical Replication Message Formats" in PostgreSQL's documentation describes them.
//! Pure decoding: what a change means to the cache is `invalidation::replication`'s job.

use crate::model::lsn::Lsn;

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        /// The end of the commit record: the position a consumer has applied once it applied
        /// this transaction.
        end_lsn: Lsn,
        /// When it committed: microseconds since 2000-01-01 (PostgreSQL's epoch).
        commit_time_us: i64,
    },
    /// Describes a table before the first change of it in a session (and again after it
    /// changed); changes name it by `id`.
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple,
    },
    Update {
        relation: u32,
        /// The old key ('K', sent when the key changed) or the whole old row ('O', with
        /// REPLICA IDENTITY FULL).
        old: Option<Tuple>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: Tuple,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// `pg_logical_emit_message()`'s message.
    Logical {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Vec<u8>,
    },
    /// Origin and Type messages: nothing the cache needs.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    /// The schema's name ("" for pg_catalog, as PostgreSQL sends it).
    pub namespace: String,
    pub name: String,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the primary key by default).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
}

/// A row's values, one per column of its relation, in the relation's column order.
pub type Tuple = Vec<Value>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the change did not touch: not sent.
    Unchanged,
    /// The value in the type's text output form.
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed pgoutput message: {}", self.0)
    }
}

/// Decodes one message (the payload of one XLogData).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let tag = r.u8()?;
    let message = match tag {
        b'B' => {
            let final_lsn = Lsn(r.u64()?);
            r.u64()?; // commit timestamp
            Message::Begin {
                final_lsn,
                xid: r.u32()?,
            }
        }
        b'C' => {
            r.u8()?; // flags, unused
            let commit_lsn = Lsn(r.u64()?);
            let end_lsn = Lsn(r.u64()?);
            Message::Commit {
                commit_lsn,
                end_lsn,
                commit_time_us: r.u64()? as i64,
            }
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            r.u8()?; // replica identity setting
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(usize::from(count).min(1600));
            for _ in 0..count {
                let flags = r.u8()?;
                let name = r.string()?;
                let type_oid = r.u32()?;
                r.u32()?; // type modifier
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name,
                    type_oid,
                });
            }
            Message::Relation(Relation {
                id,
                namespace,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let old = match r.peek()? {
                b'K' | b'O' => {
                    r.u8()?;
                    Some(r.tuple()?)
                }
                _ => None,
            };
            r.expect(b'N')?;
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => {}
                other => return Err(unexpected("a delete's old row", other)),
            }
            Message::Delete {
                relation,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let count = r.u32()?;
            r.u8()?; // CASCADE / RESTART IDENTITY
            let mut relations = Vec::with_capacity((count as usize).min(4096));
            for _ in 0..count {
                relations.push(r.u32()?);
            }
            Message::Truncate { relations }
        }
        b'M' => {
            let transactional = r.u8()? & 1 == 1;
            let lsn = Lsn(r.u64()?);
            let prefix = r.string()?;
            let len = r.u32()? as usize;
            Message::Logical {
                transactional,
                lsn,
                prefix,
                content: r.take(len)?.to_vec(),
            }
        }
        b'O' | b'Y' => Message::Other(tag),
        other => return Err(unexpected("a message type", other)),
    };
    Ok(message)
}

fn unexpected(what: &str, byte: u8) -> DecodeError {
    DecodeError(format!("unexpected byte {byte:#04x} for {what}"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| DecodeError(format!("ends before byte {}", self.at + n)))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.bytes
            .get(self.at)
            .copied()
            .ok_or_else(|| DecodeError(format!("ends at byte {}", self.at)))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn expect(&mut self, byte: u8) -> Result<(), DecodeError> {
        match self.u8()? {
            b if b == byte => Ok(()),
            other => Err(unexpected(&format!("{:?}", byte as char), other)),
        }
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at..];
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| DecodeError("a string has no terminator".into()))?;
        let text = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = self.u16()?;
        let mut values = Vec::with_capacity(usize::from(count).min(1600));
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                kind @ (b't' | b'b') => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?.to_vec();
                    if kind == b't' {
                        Value::Text(bytes)
                    } else {
                        Value::Binary(bytes)
                    }
                }
                other => return Err(unexpected("a column value", other)),
            });
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds messages as PostgreSQL sends them.
    #[derive(Default)]
    struct Writer(Vec<u8>);

    impl Writer {
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn string(mut self, s: &str) -> Self {
            self.0.extend(s.as_bytes());
            self.0.push(0);
            self
        }
        fn text(self, s: &str) -> Self {
            let w = self.u8(b't').u32(s.len() as u32);
            let mut v = w.0;
            v.extend(s.as_bytes());
            Writer(v)
        }
    }

    #[test]
    fn transaction_boundaries_carry_their_positions() {
        let begin = Writer::default().u8(b'B').u64(0x100).u64(7).u32(42);
        assert_eq!(
            decode(&begin.0).unwrap(),
            Message::Begin {
                final_lsn: Lsn(0x100),
                xid: 42
            }
        );
        let commit = Writer::default()
            .u8(b'C')
            .u8(0)
            .u64(0x100)
            .u64(0x130)
            .u64(7);
        assert_eq!(
            decode(&commit.0).unwrap(),
            Message::Commit {
                commit_lsn: Lsn(0x100),
                end_lsn: Lsn(0x130),
                commit_time_us: 7
            }
        );
    }

    #[test]
    fn relations_name_their_key_columns() {
        let relation = Writer::default()
            .u8(b'R')
            .u32(16384)
            .string("public")
            .string("users")
            .u8(b'd')
            .u16(2)
            .u8(1)
            .string("id")
            .u32(23)
            .u32(u32::MAX)
            .u8(0)
            .string("name")
            .u32(25)
            .u32(u32::MAX);
        let Message::Relation(r) = decode(&relation.0).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(
            (r.id, r.namespace.as_str(), r.name.as_str()),
            (16384, "public", "users")
        );
        assert_eq!(
            r.columns,
            vec![
                RelationColumn {
                    key: true,
                    name: "id".into(),
                    type_oid: 23
                },
                RelationColumn {
                    key: false,
                    name: "name".into(),
                    type_oid: 25
                },
            ]
        );
    }

    #[test]
    fn changes_carry_their_rows_values() {
        let insert = Writer::default()
            .u8(b'I')
            .u32(5)
            .u8(b'N')
            .u16(3)
            .text("7")
            .u8(b'n')
            .u8(b'u');
        assert_eq!(
            decode(&insert.0).unwrap(),
            Message::Insert {
                relation: 5,
                new: vec![Value::Text(b"7".to_vec()), Value::Null, Value::Unchanged]
            }
        );
        // An UPDATE that changed the key sends the old key first.
        let update = Writer::default()
            .u8(b'U')
            .u32(5)
            .u8(b'K')
            .u16(2)
            .text("7")
            .u8(b'n')
            .u8(b'N')
            .u16(2)
            .text("8")
            .text("x");
        assert_eq!(
            decode(&update.0).unwrap(),
            Message::Update {
                relation: 5,
                old: Some(vec![Value::Text(b"7".to_vec()), Value::Null]),
                new: vec![Value::Text(b"8".to_vec()), Value::Text(b"x".to_vec())]
            }
        );
        let plain_update = Writer::default().u8(b'U').u32(5).u8(b'N').u16(1).text("8");
        assert!(matches!(
            decode(&plain_update.0).unwrap(),
            Message::Update { old: None, .. }
        ));
        let delete = Writer::default().u8(b'D').u32(5).u8(b'K').u16(1).text("9");
        assert_eq!(
            decode(&delete.0).unwrap(),
            Message::Delete {
                relation: 5,
                old: vec![Value::Text(b"9".to_vec())]
            }
        );
        let truncate = Writer::default().u8(b'T').u32(2).u8(0).u32(5).u32(6);
        assert_eq!(
            decode(&truncate.0).unwrap(),
            Message::Truncate {
                relations: vec![5, 6]
            }
        );
    }

    #[test]
    fn logical_messages_keep_prefix_and_content() {
        let mut m = Writer::default()
            .u8(b'M')
            .u8(1)
            .u64(0x200)
            .string("pgcache.flush")
            .u32(5)
            .0;
        m.extend(b"users");
        assert_eq!(
            decode(&m).unwrap(),
            Message::Logical {
                transactional: true,
                lsn: Lsn(0x200),
                prefix: "pgcache.flush".into(),
                content: b"users".to_vec()
            }
        );
    }

    #[test]
    fn truncated_or_unknown_messages_are_errors_not_panics() {
        let insert = Writer::default()
            .u8(b'I')
            .u32(5)
            .u8(b'N')
            .u16(1)
            .text("1234")
            .0;
        for end in 0..insert.len() {
            assert!(decode(&insert[..end]).is_err(), "{end}");
        }
        assert!(decode(b"Z").is_err());
        assert!(decode(&Writer::default().u8(b'D').u32(5).u8(b'N').u16(0).0).is_err());
        // A length past the end, or one that would overflow, is refused.
        let huge = Writer::default()
            .u8(b'I')
            .u32(5)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .u32(u32::MAX);
        assert!(decode(&huge.0).is_err());
    }
}
