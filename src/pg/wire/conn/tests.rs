//! `Conn` against `FakePg`: the bytes it writes, and the events the answers give.

use super::*;
use crate::pg::wire::frontend::Param;
use crate::pg::wire::server::{self, FakePg, frontend_messages};

/// A connection and the pretend server at its other end.
pub(super) struct Pair {
    pub conn: Conn,
    pub pg: FakePg,
}

impl Pair {
    pub fn new(read_only_default: &str) -> Pair {
        let parameters = [(READ_ONLY_SETTING.to_string(), read_only_default.to_string())];
        Pair {
            conn: Conn::new(&parameters),
            pg: FakePg::default(),
        }
    }

    pub fn send(&mut self, sql: &str, params: &[Param]) -> Token {
        self.conn
            .send(&Request {
                sql,
                param_oids: &[],
                params,
                parsing: Parsing::Kept,
                effects: Effects::None,
            })
            .unwrap()
    }

    /// Writes everything; the server's answer.
    pub fn write(&mut self) -> Vec<u8> {
        let written = self.conn.output().to_vec();
        self.conn.wrote(written.len());
        self.pg.answer(&written)
    }

    /// Writes everything, reads the whole answer: the events.
    pub fn exchange(&mut self) -> Result<Vec<Event>, Broken> {
        let answer = self.write();
        self.conn.input().extend_from_slice(&answer);
        let mut events = Vec::new();
        while let Some(event) = self.conn.step()? {
            events.push(event);
        }
        Ok(events)
    }
}

fn text(s: &str) -> Param {
    Param::Text(s.into())
}

/// The rows of an Answered event as strings; the code of a Refused one.
fn outcome(event: &Event) -> Result<Vec<Vec<Option<String>>>, String> {
    match event {
        Event::Answered { rows, .. } => Ok(rows.iter().map(TextRow::to_strings).collect()),
        Event::Refused { error, .. } => Err(error.code.clone()),
        Event::Setting { name, .. } => panic!("a setting {name}"),
    }
}

fn tags(bytes: &[u8]) -> String {
    frontend_messages(bytes)
        .iter()
        .map(|(tag, _)| char::from(*tag))
        .collect()
}

#[test]
fn a_request_is_parse_bind_execute_sync_with_text_scalars_binary_arrays_and_text_results() {
    let mut conn = Conn::new(&[(READ_ONLY_SETTING.into(), "on".into())]);
    let params = [
        text(""),
        text("7"),
        Param::TextArray(vec![Some("a".into()), None, Some("".into())]),
        Param::TextArray(vec![]),
    ];
    let token = conn
        .send(&Request {
            sql: "SELECT $1, $2, $3, $4",
            param_oids: &[0, 25, 1009],
            params: &params,
            parsing: Parsing::Kept,
            effects: Effects::None,
        })
        .unwrap();
    assert_eq!(token, Token(0));
    let messages = frontend_messages(conn.output());
    assert_eq!(tags(conn.output()), "PBES", "alone: no BEGIN");
    let mut parse = crate::pg::wire::backend::Reader(&messages[0].1);
    assert_eq!(parse.string().unwrap(), "pgc_0");
    assert_eq!(parse.string().unwrap(), "SELECT $1, $2, $3, $4");
    assert_eq!(parse.u16().unwrap(), 3);
    let oids: Vec<u32> = (0..3).map(|_| parse.u32().unwrap()).collect();
    assert_eq!(oids, [0, 25, 1009]);
    let bind = server::decode_bind(&messages[1].1);
    assert_eq!(bind.statement, "pgc_0");
    assert_eq!(bind.formats, [0, 0, 1, 1]);
    assert_eq!(bind.values[0].as_deref(), Some(&b""[..]), "empty, not NULL");
    assert_eq!(bind.values[1].as_deref(), Some(&b"7"[..]));
    let array = bind.values[2].as_deref().unwrap();
    assert_eq!(server::decode_text_array(array), "{a,NULL,}");
    assert_eq!(
        server::decode_text_array(bind.values[3].as_deref().unwrap()),
        "{}"
    );
    assert_eq!(bind.result_formats, [0], "every column as text");
    assert_eq!(messages[2].1, b"\0\0\0\0\0", "the unnamed portal, all rows");
    assert!(messages[3].1.is_empty());
    // The same SQL again: no Parse, and wrapped, since the first is still in flight.
    conn.send(&Request {
        sql: "SELECT $1, $2, $3, $4",
        param_oids: &[0, 25, 1009],
        params: &params,
        parsing: Parsing::Kept,
        effects: Effects::None,
    })
    .unwrap();
    assert_eq!(&tags(conn.output())[4..], "QBESQ");
    // Other parameter types are another statement.
    conn.send(&Request {
        sql: "SELECT $1, $2, $3, $4",
        param_oids: &[],
        params: &params,
        parsing: Parsing::Kept,
        effects: Effects::None,
    })
    .unwrap();
    assert_eq!(&tags(conn.output())[9..], "QPBESQ");
    assert_eq!((conn.in_flight(), conn.prepared()), (3, 2));
}

#[test]
fn written_bytes_leave_the_output_in_any_steps() {
    let mut pair = Pair::new("on");
    pair.send("SELECT 1", &[]);
    let all = pair.conn.output().to_vec();
    pair.conn.wrote(3);
    assert_eq!(pair.conn.output(), &all[3..]);
    pair.conn.wrote(all.len() - 3);
    assert!(pair.conn.output().is_empty());
    assert!(!pair.conn.idle());
    let answer = pair.pg.answer(&all);
    pair.conn.input().extend_from_slice(&answer);
    assert!(matches!(pair.conn.step(), Ok(Some(Event::Answered { .. }))));
    assert!(pair.conn.idle());
    assert_eq!(pair.conn.step(), Ok(None));
}

#[test]
fn alone_only_when_idle_and_read_only_by_default() {
    let mut pair = Pair::new("on");
    pair.send("SELECT a", &[]);
    pair.send("SELECT b", &[]);
    pair.exchange().unwrap();
    assert_eq!(
        pair.pg.executed,
        [("SELECT a".into(), false), ("SELECT b".into(), true)]
    );
    // Idle again: alone again.
    pair.send("SELECT a", &[]);
    assert_eq!(tags(pair.conn.output()), "BES");
    pair.exchange().unwrap();
    let mut pair = Pair::new("off");
    assert!(!pair.conn.read_only_default());
    pair.send("SELECT a", &[]);
    assert_eq!(tags(pair.conn.output()), "QPBESQ");
    assert_eq!(outcome(&pair.exchange().unwrap()[0]), Ok(vec![vec![]]));
    assert!(
        !Conn::new(&[]).read_only_default(),
        "not reported: not assumed"
    );
}

#[test]
fn a_setting_reported_mid_pipeline_changes_the_rule_for_what_follows() {
    let mut pair = Pair::new("on");
    pair.send("OFF a", &[]);
    let events = pair.exchange().unwrap();
    assert_eq!(
        events[0],
        Event::Setting {
            name: READ_ONLY_SETTING.into(),
            value: "off".into()
        }
    );
    assert!(matches!(events[1], Event::Answered { .. }));
    assert!(!pair.conn.read_only_default());
    pair.send("SELECT b", &[]);
    assert_eq!(tags(pair.conn.output()), "QPBESQ");
    pair.send("ON c", &[]);
    pair.exchange().unwrap();
    assert!(pair.conn.read_only_default());
    pair.send("SELECT b", &[]);
    pair.exchange().unwrap();
    let alone: Vec<bool> = pair
        .pg
        .executed
        .iter()
        .map(|(_, wrapped)| !wrapped)
        .collect();
    assert_eq!(alone, [true, false, false, true]);
}

#[test]
fn an_error_mid_pipeline_refuses_only_its_request() {
    for default in ["on", "off"] {
        let mut pair = Pair::new(default);
        let tokens = [
            pair.send("SELECT a", &[text("1")]),
            pair.send("ERROR b", &[text("2")]),
            pair.send("SELECT c", &[text("3")]),
        ];
        let events = pair.exchange().unwrap();
        let outcomes: Vec<_> = events.iter().map(outcome).collect();
        assert_eq!(
            outcomes,
            [
                Ok(vec![vec![Some("1".into())]]),
                Err("22012".into()),
                Ok(vec![vec![Some("3".into())]]),
            ],
            "{default}"
        );
        let order: Vec<Token> = events
            .iter()
            .map(|e| match e {
                Event::Answered { token, .. } | Event::Refused { token, .. } => *token,
                Event::Setting { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(order, tokens);
        assert!(pair.conn.idle());
        assert_eq!(
            pair.conn.prepared(),
            3,
            "a statement that ran is still prepared"
        );
    }
}

#[test]
fn a_failed_parse_is_forgotten_and_the_queued_reuses_get_26000_then_parse_again() {
    let mut pair = Pair::new("on");
    pair.send("FLAKY t", &[text("1")]);
    pair.send("FLAKY t", &[text("2")]);
    pair.send("SELECT other", &[]);
    assert_eq!(
        pair.conn.prepared(),
        2,
        "the name is reused before ParseComplete"
    );
    let outcomes: Vec<_> = pair.exchange().unwrap().iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [Err("42P01".into()), Err("26000".into()), Ok(vec![vec![]])]
    );
    assert_eq!(pair.conn.prepared(), 1);
    // The caller resends: the SQL is parsed again, under a new name, and runs.
    pair.send("FLAKY t", &[text("2")]);
    pair.send("FLAKY t", &[text("3")]);
    let outcomes: Vec<_> = pair.exchange().unwrap().iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [
            Ok(vec![vec![Some("2".into())]]),
            Ok(vec![vec![Some("3".into())]])
        ]
    );
    let flaky: Vec<&str> = pair
        .pg
        .parsed
        .iter()
        .filter(|(_, sql)| sql == "FLAKY t")
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(flaky, ["pgc_0", "pgc_2"]);
}

#[test]
fn an_error_in_begin_or_commit_refuses_the_request() {
    let mut conn = Conn::new(&[]);
    let token = conn
        .send(&Request {
            sql: "SELECT 1",
            param_oids: &[],
            params: &[],
            parsing: Parsing::Kept,
            effects: Effects::None,
        })
        .unwrap();
    let mut answer = server::error("ERROR", "25001", "already in a transaction");
    answer.extend(server::ready(b'I'));
    answer.extend(server::frame(b'1', b""));
    answer.extend(server::frame(b'2', b""));
    answer.extend(server::data_row(&[Some("1")]));
    answer.extend(server::command_complete("SELECT 1"));
    answer.extend(server::ready(b'I'));
    answer.extend(server::notice("there is no transaction in progress"));
    answer.extend(server::command_complete("COMMIT"));
    answer.extend(server::ready(b'I'));
    conn.input().extend_from_slice(&answer);
    let Ok(Some(Event::Refused {
        token: refused,
        error,
    })) = conn.step()
    else {
        panic!("not refused");
    };
    assert_eq!((refused, error.code.as_str()), (token, "25001"));
    assert_eq!(conn.in_flight(), 0);
}

#[test]
fn fatal_errors_break_the_connection() {
    let mut pair = Pair::new("on");
    pair.send("SELECT a", &[]);
    pair.send("FATAL b", &[]);
    let answer = pair.write();
    pair.conn.input().extend_from_slice(&answer);
    assert!(matches!(pair.conn.step(), Ok(Some(Event::Answered { .. }))));
    let Err(Broken::Fatal(e)) = pair.conn.step() else {
        panic!("not fatal");
    };
    assert_eq!(e.code, "57P01");
    // An error with nothing in flight (an idle session terminated) is fatal too.
    let mut conn = Conn::new(&[]);
    conn.input()
        .extend_from_slice(&server::error("ERROR", "XX000", "out of the blue"));
    assert!(matches!(conn.step(), Err(Broken::Fatal(_))));
}

#[test]
fn a_row_over_the_cap_breaks_the_connection_before_it_is_buffered() {
    let mut pair = Pair::new("on");
    pair.send("SELECT small", &[]);
    let big = pair.send("BIG", &[]);
    pair.conn.set_row_cap(1000);
    let answer = pair.write();
    let row_at = answer
        .windows(5)
        .position(|w| w[0] == b'D' && w[1..5] == 1010u32.to_be_bytes())
        .expect("the big row");
    // Only the big row's header has arrived.
    pair.conn.input().extend_from_slice(&answer[..row_at + 5]);
    assert!(matches!(pair.conn.step(), Ok(Some(Event::Answered { .. }))));
    assert_eq!(
        pair.conn.step(),
        Err(Broken::TooBig {
            token: big,
            len: 1010
        })
    );
    // Under the cap, it is read.
    let mut pair = Pair::new("on");
    pair.send("BIG", &[]);
    pair.conn.set_row_cap(1010);
    let rows = outcome(&pair.exchange().unwrap()[0]).unwrap();
    assert_eq!(rows[0][0].as_deref().map(str::len), Some(1000));
}

#[test]
fn the_least_recently_used_name_is_closed_before_the_next_parse() {
    let mut pair = Pair::new("on");
    for i in 0..MAX_PREPARED {
        pair.send(&format!("SELECT {i}"), &[]);
    }
    pair.exchange().unwrap();
    // SELECT 0 used again: SELECT 1 is now the oldest.
    pair.send("SELECT 0", &[]);
    pair.exchange().unwrap();
    pair.send("SELECT new", &[]);
    assert_eq!(tags(pair.conn.output()), "CPBES", "the Close goes first");
    let events = pair.exchange().unwrap();
    assert_eq!(
        outcome(&events[0]),
        Ok(vec![vec![]]),
        "CloseComplete is silent"
    );
    assert_eq!(pair.pg.closed, ["pgc_1"]);
    assert_eq!(pair.conn.prepared(), MAX_PREPARED);
    assert_eq!(pair.pg.prepared.len(), MAX_PREPARED);
    // SELECT 1 parses again, closing the next oldest.
    pair.send("SELECT 1", &[]);
    pair.exchange().unwrap();
    assert_eq!(pair.pg.closed, ["pgc_1", "pgc_2"]);
    assert_eq!(pair.pg.prepared.len(), MAX_PREPARED);
}

#[test]
fn after_ddl_every_name_is_closed_and_each_statement_parsed_again() {
    let mut pair = Pair::new("on");
    pair.conn.follow_catalog(3);
    pair.send("SELECT a", &[]);
    pair.send("SELECT b", &[]);
    pair.exchange().unwrap();
    pair.conn.follow_catalog(3);
    pair.send("SELECT a", &[]);
    assert_eq!(
        tags(pair.conn.output()),
        "BES",
        "no DDL since: the name is used"
    );
    pair.exchange().unwrap();
    pair.conn.follow_catalog(4);
    assert_eq!(pair.conn.prepared(), 0);
    pair.send("SELECT a", &[]);
    assert_eq!(
        tags(pair.conn.output()),
        "CCPBES",
        "both closed, then a Parse"
    );
    let events = pair.exchange().unwrap();
    assert_eq!(outcome(&events[0]), Ok(vec![vec![]]));
    pair.pg.closed.sort();
    assert_eq!(pair.pg.closed, ["pgc_0", "pgc_1"]);
    assert_eq!(pair.conn.prepared(), 1);
    assert_eq!(pair.pg.prepared.len(), 1);
}

#[test]
fn a_request_parsed_each_run_uses_the_unnamed_statement_and_keeps_no_name() {
    for read_only_default in ["on", "off"] {
        let mut pair = Pair::new(read_only_default);
        let each_run = |sql| Request {
            sql,
            param_oids: &[],
            params: &[],
            parsing: Parsing::EachRun,
            effects: Effects::None,
        };
        let first = pair.conn.send(&each_run("SELECT a")).unwrap();
        let second = pair.conn.send(&each_run("SELECT b")).unwrap();
        let again = pair.conn.send(&each_run("SELECT a")).unwrap();
        assert_eq!(pair.conn.prepared(), 0);
        let events = pair.exchange().unwrap();
        let answered: Vec<Token> = events
            .iter()
            .map(|e| match e {
                Event::Answered { token, .. } => *token,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(answered, [first, second, again]);
        let parsed: Vec<&str> = pair.pg.parsed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            parsed,
            ["", "", ""],
            "every request parses the unnamed statement"
        );
        let ran: Vec<&str> = pair.pg.executed.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(ran, ["SELECT a", "SELECT b", "SELECT a"]);
    }
}

#[test]
fn a_request_that_cannot_be_encoded_changes_nothing() {
    let mut pair = Pair::new("on");
    let refused = pair.conn.send(&Request {
        sql: "SELECT '\0'",
        param_oids: &[],
        params: &[],
        parsing: Parsing::Kept,
        effects: Effects::None,
    });
    assert!(refused.is_err());
    let too_many = vec![text(""); 70_000];
    let refused = pair.conn.send(&Request {
        sql: "SELECT 1",
        param_oids: &[],
        params: &too_many,
        parsing: Parsing::Kept,
        effects: Effects::None,
    });
    assert!(refused.is_err());
    assert!(pair.conn.idle());
    assert_eq!(pair.conn.prepared(), 0);
    pair.send("SELECT 1", &[]);
    assert_eq!(tags(pair.conn.output()), "PBES");
    assert_eq!(pair.exchange().unwrap().len(), 1);
}

#[test]
fn messages_out_of_turn_are_protocol_errors() {
    let cases: [(&str, Vec<u8>); 4] = [
        ("a row before BindComplete", {
            let mut b = server::frame(b'1', b"");
            b.extend(server::data_row(&[Some("1")]));
            b
        }),
        ("ReadyForQuery before the result", {
            let mut b = server::frame(b'1', b"");
            b.extend(server::frame(b'2', b""));
            b.extend(server::ready(b'I'));
            b
        }),
        ("a message after an error", {
            let mut b = server::error("ERROR", "42601", "syntax");
            b.extend(server::frame(b'2', b""));
            b
        }),
        ("a transaction left open", {
            let mut b = server::frame(b'1', b"");
            b.extend(server::frame(b'2', b""));
            b.extend(server::command_complete("SELECT 0"));
            b.extend(server::ready(b'T'));
            b
        }),
    ];
    for (case, bytes) in cases {
        let mut conn = Conn::new(&[(READ_ONLY_SETTING.into(), "on".into())]);
        conn.send(&Request {
            sql: "SELECT 1",
            param_oids: &[],
            params: &[],
            parsing: Parsing::Kept,
            effects: Effects::None,
        })
        .unwrap();
        conn.input().extend_from_slice(&bytes);
        assert!(matches!(conn.step(), Err(Broken::Protocol(_))), "{case}");
    }
    let mut conn = Conn::new(&[]);
    conn.input().extend_from_slice(&server::ready(b'I'));
    assert!(
        matches!(conn.step(), Err(Broken::Protocol(_))),
        "nothing in flight"
    );
}

/// A request whose effects are undone (`pg::undo`) runs inside BEGIN READ ONLY even alone
/// on a read-only session, and ends with the ROLLBACK and the advisory locks' release, also
/// when its statement failed; the requests around it are answered as before.
#[test]
fn a_request_whose_effects_are_undone_ends_in_a_rollback_and_the_locks_released() {
    let mut pair = Pair::new("on");
    let undone = |sql| Request {
        sql,
        param_oids: &[],
        params: &[],
        parsing: Parsing::Kept,
        effects: Effects::Undone,
    };
    let first = pair.conn.send(&undone("SELECT mine(1)")).unwrap();
    assert_eq!(tags(pair.conn.output()), "QPBESQ", "wrapped though alone");
    let failing = pair.conn.send(&undone("ERROR mine(0)")).unwrap();
    let plain = pair.send("SELECT 2", &[]);
    let events = pair.exchange().unwrap();
    assert_eq!(events.len(), 3);
    assert!(matches!(&events[0], Event::Answered { token, .. } if *token == first));
    assert!(matches!(&events[1], Event::Refused { token, .. } if *token == failing));
    assert!(matches!(&events[2], Event::Answered { token, .. } if *token == plain));
    assert_eq!(pair.pg.undone, 2, "each undone request released its locks");
    assert_eq!(
        pair.pg.executed,
        [
            ("SELECT mine(1)".to_string(), true),
            ("ERROR mine(0)".to_string(), true),
            ("SELECT 2".to_string(), true),
        ]
    );
    assert_eq!(pair.conn.in_flight(), 0);
}
