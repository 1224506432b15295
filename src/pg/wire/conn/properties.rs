//! Properties of `Conn` over random pipelines against `FakePg`: every request is answered
//! exactly once and in order, with its own rows or its own error; no statement runs alone
//! where the session's default is not read-only; a failed Parse is parsed again on resend;
//! and the events do not depend on how the stream is chunked nor on notices, settings and
//! notifications arriving between any two messages.

use super::tests::Pair;
use super::*;
use crate::pg::wire::frontend::Param;
use crate::pg::wire::server;
use proptest::prelude::*;

const SQL: [&str; 8] = [
    "SELECT a", "SELECT b", "ERROR c", "FAIL d", "OFF e", "ON f", "BIG g", "FLAKY h",
];

fn param() -> impl Strategy<Value = Param> {
    prop_oneof![
        "[a-z0-9 ]{0,6}".prop_map(Param::Text),
        proptest::collection::vec(proptest::option::of("[a-z]{0,4}"), 0..3)
            .prop_map(Param::TextArray),
    ]
}

/// A request and whether the pipeline is written and read after it.
fn scenario() -> impl Strategy<Value = Vec<(usize, Vec<Param>, bool)>> {
    proptest::collection::vec(
        (
            0..SQL.len(),
            proptest::collection::vec(param(), 0..3),
            any::<bool>(),
        ),
        1..14,
    )
}

/// What the fake server echoes for `params`.
fn echoed(sql: &str, params: &[Param]) -> Vec<Vec<Option<String>>> {
    let mut row: Vec<Option<String>> = params
        .iter()
        .map(|p| match p {
            Param::Text(t) => Some(t.clone()),
            Param::TextArray(items) => {
                let items: Vec<&str> = items
                    .iter()
                    .map(|i| i.as_deref().unwrap_or("NULL"))
                    .collect();
                Some(format!("{{{}}}", items.join(",")))
            }
        })
        .collect();
    if sql.starts_with("BIG") {
        row.push(Some("x".repeat(1000)));
    }
    vec![row]
}

#[derive(Debug, Clone)]
enum Action {
    Send(usize, Vec<Param>),
    Exchange,
}

/// Runs `scenario` feeding each answer whole, checking what every request got; resends
/// what was refused for a failed Parse. The actions taken and the events, per exchange.
fn record(scenario: &[(usize, Vec<Param>, bool)]) -> (Vec<Action>, Vec<Vec<Event>>) {
    let mut pair = Pair::new("on");
    let mut actions = Vec::new();
    let mut events = Vec::new();
    let mut sent: Vec<(Token, usize, Vec<Param>, u32)> = Vec::new();
    let mut answered = 0;
    let mut resend: Vec<(usize, Vec<Param>, u32)> = Vec::new();
    let mut exchange = |pair: &mut Pair,
                        actions: &mut Vec<Action>,
                        sent: &mut Vec<(Token, usize, Vec<Param>, u32)>,
                        resend: &mut Vec<(usize, Vec<Param>, u32)>| {
        actions.push(Action::Exchange);
        let got = pair.exchange().expect("no broken connection");
        for event in &got {
            let (token, result) = match event {
                Event::Setting { name, .. } => {
                    assert_eq!(name, READ_ONLY_SETTING);
                    continue;
                }
                Event::Answered { token, rows } => (
                    *token,
                    Ok(rows.iter().map(TextRow::to_strings).collect::<Vec<_>>()),
                ),
                Event::Refused { token, error } => (*token, Err(error.code.clone())),
            };
            let (expected, sql, params, tries) = &sent[answered];
            assert_eq!(token, *expected, "answered in order, once");
            answered += 1;
            let sql = SQL[*sql];
            match (sql.split(' ').next().unwrap(), result) {
                (_, Ok(rows)) => {
                    assert!(!sql.starts_with("ERROR") && !sql.starts_with("FAIL"));
                    assert_eq!(rows, echoed(sql, params), "{sql}");
                }
                ("ERROR", Err(code)) => assert_eq!(code, "22012"),
                ("FAIL", Err(code)) => assert!(code == "42601" || code == "26000", "{code}"),
                ("FLAKY", Err(code)) => {
                    assert!(code == "42P01" || code == "26000", "{code}");
                    // The resend parses again (and the fake lets every other Parse pass).
                    assert!(*tries < 3, "FLAKY refused on try {tries}");
                    resend.push((
                        SQL.iter().position(|s| *s == sql).unwrap(),
                        params.clone(),
                        tries + 1,
                    ));
                }
                (_, Err(code)) => panic!("{sql} refused with {code}"),
            }
        }
        assert!(pair.conn.idle());
        events.push(got);
    };
    for (i, (sql, params, boundary)) in scenario.iter().enumerate() {
        let token = pair.send(SQL[*sql], params);
        actions.push(Action::Send(*sql, params.clone()));
        sent.push((token, *sql, params.clone(), 1));
        if *boundary || i == scenario.len() - 1 {
            exchange(&mut pair, &mut actions, &mut sent, &mut resend);
        }
    }
    while !resend.is_empty() {
        for (sql, params, tries) in std::mem::take(&mut resend) {
            let token = pair.send(SQL[sql], &params);
            actions.push(Action::Send(sql, params.clone()));
            sent.push((token, sql, params, tries));
        }
        exchange(&mut pair, &mut actions, &mut sent, &mut resend);
    }
    assert_eq!(answered, sent.len());
    // No statement ran alone where the session's default was no longer read-only.
    let mut read_only = true;
    for (sql, in_block) in &pair.pg.executed {
        assert!(*in_block || read_only, "{sql} ran alone after OFF");
        if sql.starts_with("OFF") {
            read_only = false;
        } else if sql.starts_with("ON") {
            read_only = true;
        }
    }
    (actions, events)
}

/// The frames' boundaries in a backend byte stream.
fn boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut at = vec![0];
    let mut i = 0;
    while i < bytes.len() {
        i += 1 + u32::from_be_bytes(bytes[i + 1..i + 5].try_into().unwrap()) as usize;
        at.push(i);
    }
    at
}

fn noise(kind: u8) -> Vec<u8> {
    match kind % 3 {
        0 => server::notice("noise"),
        1 => server::parameter_status("application_name", "noise"),
        _ => server::frame(b'A', b"\0\0\0\x07channel\0payload\0"),
    }
}

/// Replays `actions`, the answers with `noise` inserted at message boundaries and read in
/// chunks of `chunks` sizes (the rest at once): the events, noise settings left out.
fn replay(actions: &[Action], noise_at: &[(usize, u8)], chunks: &[usize]) -> Vec<Vec<Event>> {
    let mut pair = Pair::new("on");
    let mut chunks = chunks.iter();
    let mut events = Vec::new();
    for action in actions {
        let (sql, params) = match action {
            Action::Send(sql, params) => (sql, params),
            Action::Exchange => {
                let answer = pair.write();
                let at = boundaries(&answer);
                let mut noisy = Vec::new();
                for i in 0..at.len() {
                    for (_, kind) in noise_at.iter().filter(|(n, _)| n % at.len() == i) {
                        noisy.extend(noise(*kind));
                    }
                    if let Some(end) = at.get(i + 1) {
                        noisy.extend(&answer[at[i]..*end]);
                    }
                }
                let mut got = Vec::new();
                let mut rest = &noisy[..];
                while !rest.is_empty() {
                    let n = chunks.next().copied().unwrap_or(rest.len()).min(rest.len());
                    pair.conn.input().extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    while let Some(event) = pair.conn.step().expect("no broken connection") {
                        if !matches!(&event, Event::Setting { name, .. } if name == "application_name")
                        {
                            got.push(event);
                        }
                    }
                }
                events.push(got);
                continue;
            }
        };
        pair.send(SQL[*sql], params);
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn events_do_not_depend_on_chunking_or_noise(
        scenario in scenario(),
        noise_at in proptest::collection::vec((0usize..64, any::<u8>()), 0..12),
        chunks in proptest::collection::vec(1usize..40, 0..300),
    ) {
        let (actions, whole) = record(&scenario);
        prop_assert_eq!(replay(&actions, &noise_at, &chunks), whole);
    }
}
