//! Tests only: the server side of the wire, small enough to trust by reading. `frame` and
//! the message builders write backend bytes; `frontend_messages` splits what a client wrote;
//! `FakePg` answers a query pipeline as PostgreSQL's extended protocol does (prepared names,
//! skip to Sync after an error, implicit and explicit transactions, 26000 for an unknown
//! name, 42P05 for a name parsed twice), so `Conn` is tested against a server that checks
//! its bytes instead of against a replay of what `Conn` expects.
//!
//! What a statement does is spelled in its SQL: `FAIL ...` does not parse (42601), `ERROR
//! ...` fails when it runs (22012), `FATAL ...` ends the session (57P01), `OFF ...` and `ON
//! ...` report `default_transaction_read_only` off or on while running, `BIG ...` returns a
//! 1000-byte column, `FLAKY ...` fails to parse every other time it is parsed (a table
//! created in between); any statement returns one row echoing its parameters as text.

use super::backend::Reader;
use std::collections::HashMap;

/// A backend message: tag, length, body.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(((body.len() + 4) as u32).to_be_bytes());
    out.extend(body);
    out
}

/// The messages in `bytes` (a client's, after its start-up message): (tag, body).
pub fn frontend_messages(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        messages.push((bytes[0], bytes[5..1 + len].to_vec()));
        bytes = &bytes[1 + len..];
    }
    messages
}

pub fn error(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!("S{severity}\0V{severity}\0C{code}\0M{message}\0\0");
    frame(b'E', body.as_bytes())
}

pub fn notice(message: &str) -> Vec<u8> {
    let body = format!("SNOTICE\0VNOTICE\0C00000\0M{message}\0\0");
    frame(b'N', body.as_bytes())
}

pub fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    frame(b'S', format!("{name}\0{value}\0").as_bytes())
}

pub fn command_complete(tag: &str) -> Vec<u8> {
    frame(b'C', format!("{tag}\0").as_bytes())
}

pub fn ready(status: u8) -> Vec<u8> {
    frame(b'Z', &[status])
}

pub fn data_row(columns: &[Option<&str>]) -> Vec<u8> {
    let mut body = (columns.len() as u16).to_be_bytes().to_vec();
    for column in columns {
        match column {
            Some(text) => {
                body.extend((text.len() as u32).to_be_bytes());
                body.extend(text.as_bytes());
            }
            None => body.extend(u32::MAX.to_be_bytes()),
        }
    }
    frame(b'D', &body)
}

/// A decoded Bind: the statement name, parameter formats, values, result formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub statement: String,
    pub formats: Vec<i16>,
    pub values: Vec<Option<Vec<u8>>>,
    pub result_formats: Vec<i16>,
}

pub fn decode_bind(body: &[u8]) -> Bind {
    let mut r = Reader(body);
    assert_eq!(r.string().unwrap(), "", "the unnamed portal");
    let statement = r.string().unwrap();
    let formats = (0..r.u16().unwrap())
        .map(|_| r.u16().unwrap() as i16)
        .collect();
    let values = (0..r.u16().unwrap())
        .map(|_| match r.u32().unwrap() {
            u32::MAX => None,
            len => Some(r.take(len as usize).unwrap().to_vec()),
        })
        .collect();
    let result_formats = (0..r.u16().unwrap())
        .map(|_| r.u16().unwrap() as i16)
        .collect();
    assert!(r.0.is_empty());
    Bind {
        statement,
        formats,
        values,
        result_formats,
    }
}

/// A binary one-dimensional `text[]` as PostgreSQL's array_recv reads it; the text form.
pub fn decode_text_array(bytes: &[u8]) -> String {
    let mut r = Reader(bytes);
    let dimensions = r.u32().unwrap();
    let _has_nulls = r.u32().unwrap();
    assert_eq!(r.u32().unwrap(), 25, "element type text");
    if dimensions == 0 {
        return "{}".into();
    }
    assert_eq!(dimensions, 1);
    let len = r.u32().unwrap();
    assert_eq!(r.u32().unwrap(), 1, "lower bound");
    let items: Vec<String> = (0..len)
        .map(|_| match r.u32().unwrap() {
            u32::MAX => "NULL".to_string(),
            n => String::from_utf8(r.take(n as usize).unwrap().to_vec()).unwrap(),
        })
        .collect();
    assert!(r.0.is_empty());
    format!("{{{}}}", items.join(","))
}

/// A pretend PostgreSQL session (see the module's doc).
#[derive(Debug)]
pub struct FakePg {
    /// Prepared name → SQL.
    pub prepared: HashMap<String, String>,
    /// `I`, `T` or `E`.
    status: u8,
    /// After an error in the extended protocol: messages are dropped until Sync.
    skipping: bool,
    /// The unnamed portal's statement and parameters as text.
    portal: Option<(String, Vec<Option<String>>)>,
    /// Every statement executed, and whether it ran inside BEGIN.
    pub executed: Vec<(String, bool)>,
    /// Parse messages seen (name, SQL), and Close messages seen.
    pub parsed: Vec<(String, String)>,
    pub closed: Vec<String>,
    pub ended: bool,
    /// Whether the next Parse of a `FLAKY` statement fails.
    flaky_fails: bool,
    /// `undo::UNDO`s answered.
    pub undone: usize,
}

impl Default for FakePg {
    fn default() -> Self {
        FakePg {
            prepared: HashMap::new(),
            status: b'I',
            skipping: false,
            portal: None,
            executed: Vec::new(),
            parsed: Vec::new(),
            closed: Vec::new(),
            ended: false,
            flaky_fails: true,
            undone: 0,
        }
    }
}

impl FakePg {
    /// What PostgreSQL answers to `bytes`, whole messages written by the client.
    pub fn answer(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, body) in frontend_messages(bytes) {
            if self.ended {
                break;
            }
            if self.skipping && tag != b'S' {
                continue;
            }
            let mut r = Reader(&body);
            match tag {
                b'Q' => {
                    let sql = r.string().unwrap();
                    // A simple query destroys the unnamed statement.
                    self.prepared.remove("");
                    match (sql.as_str(), self.status) {
                        ("BEGIN READ ONLY", b'I') => {
                            self.status = b'T';
                            out.extend(command_complete("BEGIN"));
                        }
                        ("COMMIT", b'T') => {
                            self.status = b'I';
                            out.extend(command_complete("COMMIT"));
                        }
                        ("COMMIT", b'E') => {
                            self.status = b'I';
                            out.extend(command_complete("ROLLBACK"));
                        }
                        (crate::pg::undo::UNDO, b'T' | b'E') => {
                            self.status = b'I';
                            out.extend(command_complete("ROLLBACK"));
                            out.extend(frame(b'T', b"\0\x01pg_advisory_unlock_all\0\0\0\0\0\0\0\0\0\x08\xe6\0\x04\xff\xff\xff\xff\0\0"));
                            out.extend(frame(b'D', b"\0\x01\0\0\0\0"));
                            out.extend(command_complete("SELECT 1"));
                            self.undone += 1;
                        }
                        other => panic!("unexpected simple query {other:?}"),
                    }
                    out.extend(ready(self.status));
                }
                b'C' => {
                    assert_eq!(r.take(1).unwrap(), b"S");
                    let name = r.string().unwrap();
                    self.prepared.remove(&name);
                    self.closed.push(name);
                    out.extend(frame(b'3', b""));
                }
                b'P' => {
                    let name = r.string().unwrap();
                    let sql = r.string().unwrap();
                    self.parsed.push((name.clone(), sql.clone()));
                    // The unnamed statement is replaced by each Parse of it; a named one
                    // must be closed first.
                    if !name.is_empty() && self.prepared.contains_key(&name) {
                        self.fail(&mut out, "ERROR", "42P05", "prepared statement exists");
                    } else if sql.starts_with("FLAKY") && {
                        self.flaky_fails = !self.flaky_fails;
                        !self.flaky_fails
                    } {
                        self.fail(&mut out, "ERROR", "42P01", "relation does not exist");
                    } else if sql.starts_with("FAIL") {
                        self.fail(&mut out, "ERROR", "42601", "syntax error");
                    } else {
                        self.prepared.insert(name, sql);
                        out.extend(frame(b'1', b""));
                    }
                }
                b'B' => {
                    let bind = decode_bind(&body);
                    let Some(sql) = self.prepared.get(&bind.statement).cloned() else {
                        let message =
                            format!("prepared statement \"{}\" does not exist", bind.statement);
                        self.fail(&mut out, "ERROR", "26000", &message);
                        continue;
                    };
                    assert_eq!(bind.result_formats, vec![0], "text results");
                    let params = bind
                        .values
                        .iter()
                        .zip(&bind.formats)
                        .map(|(value, format)| {
                            value.as_ref().map(|v| match format {
                                0 => String::from_utf8(v.clone()).unwrap(),
                                1 => decode_text_array(v),
                                other => panic!("format {other}"),
                            })
                        })
                        .collect();
                    self.portal = Some((sql, params));
                    out.extend(frame(b'2', b""));
                }
                b'E' => {
                    let (sql, params) = self.portal.take().expect("a bound portal");
                    self.executed.push((sql.clone(), self.status == b'T'));
                    if sql.starts_with("ERROR") {
                        self.fail(&mut out, "ERROR", "22012", "division by zero");
                        continue;
                    }
                    if sql.starts_with("FATAL") {
                        out.extend(error("FATAL", "57P01", "terminating connection"));
                        self.ended = true;
                        continue;
                    }
                    if sql.starts_with("OFF") {
                        out.extend(parameter_status("default_transaction_read_only", "off"));
                    }
                    if sql.starts_with("ON") {
                        out.extend(parameter_status("default_transaction_read_only", "on"));
                    }
                    let mut columns: Vec<Option<&str>> =
                        params.iter().map(|p| p.as_deref()).collect();
                    let big = "x".repeat(1000);
                    if sql.starts_with("BIG") {
                        columns.push(Some(&big));
                    }
                    out.extend(data_row(&columns));
                    out.extend(command_complete("SELECT 1"));
                }
                b'S' => {
                    // Sync ends an implicit transaction (an error in one leaves `I`);
                    // inside BEGIN it only ends the skipping.
                    self.skipping = false;
                    out.extend(ready(self.status));
                }
                other => panic!("unexpected frontend message {}", char::from(other)),
            }
        }
        out
    }

    fn fail(&mut self, out: &mut Vec<u8>, severity: &str, code: &str, message: &str) {
        out.extend(error(severity, code, message));
        self.skipping = true;
        if self.status == b'T' {
            self.status = b'E';
        }
    }
}
