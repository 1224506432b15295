//! Generated PGCACHE commands: random, mutated and boundary arguments, each with what its
//! reply must be. A seed makes a run repeatable.

pub use pgcache_testkit::Rng;

/// What a reply must be. Besides the value named, every command may answer a pgcache
/// error (`ERR pgcache: ...`, or Redis's arity error), except where the input was fine and
/// only a value is possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The input is malformed: an error reply, never nil or a value.
    Error,
    /// A row (a JSON object) or nil.
    Row,
    /// An array of rows or nils.
    Rows,
    /// A cache key: a bulk string under the cache prefix.
    Key,
    /// `OK`.
    Done,
    /// A map (STATS, HEALTH; name/value pairs in RESP2) or an array (SLOWLOG GET, HOOK LIST).
    Listing,
    /// An integer (SLOWLOG LEN).
    Count,
    /// CONFIG SET: `OK`, or Redis's refusal of the value.
    Config,
    /// A query result: a JSON array of row objects.
    Result,
}

/// One generated command.
pub struct Generated {
    pub args: Vec<Vec<u8>>,
    pub expect: Expect,
}

impl Generated {
    /// The command as a seed-reproducible line, bytes escaped.
    pub fn shown(&self) -> String {
        self.args
            .iter()
            .map(|a| format!("{:?}", String::from_utf8_lossy(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Table arguments that name a table of the fuzz schema, in several spellings.
const TABLES: &[&str] = &[
    "users",
    "public.users",
    "USERS",
    "\"users\"",
    "things",
    "events",
    "v_users",
];

/// Table arguments that name no table pgcache may read.
fn bad_table(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0 => Vec::new(),
        1 => b"userz".to_vec(),
        2 => b"a.b.c".to_vec(),
        3 => b"\"unterminated".to_vec(),
        4 => vec![b'x'; 300 + rng.below(5000)],
        5 => b"us\0ers".to_vec(),
        6 => vec![0xff, 0xfe, b'u'],
        7 => b"users{".to_vec(),
        8 => b"\"\"".to_vec(),
        _ => b"no_such_schema.users".to_vec(),
    }
}

/// Integers at and past the edges of every integer type, and floats past their edges.
const BOUNDARY_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "32767",
    "32768",
    "-32768",
    "-32769",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "170141183460469231731687303715884105728",
    "1e308",
    "1e309",
    "-1e309",
    "4.9e-324",
    "1e-400",
    "1.5",
    "1.0",
    "1e2",
    "0.1e1",
    "123456789012345678901234567890123456789",
];

/// Text values that stress escaping and encoding.
const ODD_STRINGS: &[&str] = &[
    "",
    "\\u0000",
    "\\ud800",
    "\\udc00\\ud800",
    "\\ud83d\\ude00",
    "\\u00e9",
    "é",
    "\\\"",
    "\\\\",
    "\\/",
    "{\\\"id\\\":1}",
    "NaN",
    "Infinity",
    "true",
    "null",
];

/// A pk JSON text, valid or malformed; true when it is surely malformed.
fn pk(rng: &mut Rng) -> Arg {
    match rng.below(16) {
        0..=3 => (format!("{{\"id\":{}}}", rng.below(60)).into_bytes(), false),
        4 => (
            format!("{{ \"id\" : \"{}\" }}", rng.below(60)).into_bytes(),
            false,
        ),
        5 => (
            format!("{{\"id\":{}}}", rng.pick(BOUNDARY_NUMBERS)).into_bytes(),
            false,
        ),
        6 => (
            format!("{{\"id\":\"{}\"}}", rng.pick(ODD_STRINGS)).into_bytes(),
            false,
        ),
        7 => (things_pk(rng).into_bytes(), false),
        8 => (
            format!(
                "{{\"at\":\"2024-0{}-0{} 10:00\"}}",
                1 + rng.below(9),
                1 + rng.below(9)
            )
            .into_bytes(),
            false,
        ),
        9 => (b"{\"id\":1,\"id\":2}".to_vec(), false),
        10 => (nested(rng), true),
        11 => (huge(rng), true),
        12 => (malformed(rng), true),
        13 => (
            rng.pick(&[&b"[]"[..], b"{}", b"null", b"1", b"\"id\"", b"[{\"id\":1}]"])
                .to_vec(),
            true,
        ),
        14 => (mutate(rng, b"{\"id\":1}".to_vec()), false),
        _ => (
            format!("{{\"id\":{},\"extra\":{}}}", rng.below(9), rng.below(9)).into_bytes(),
            false,
        ),
    }
}

/// A key of `things` (text, uuid and numeric columns), in some spelling.
fn things_pk(rng: &mut Rng) -> String {
    let uuid = format!(
        "{:032x}",
        rng.below(4) as u128 * 0x1234_5678_9abc_def0_1122_3344_5566_7788
    );
    let uuid = if rng.chance(50) {
        uuid.to_uppercase()
    } else {
        uuid
    };
    format!(
        "{{\"code\":\"{}\",\"ref\":\"{uuid}\",\"amount\":{}}}",
        rng.pick(&["a", "b", "é", "", "\\u0041"]),
        rng.pick(&["1.50", "1.5", "15e-1", "\"1.5\"", "0", "-0.0", "1e1000"])
    )
}

/// JSON nested deeper than any parser should follow.
fn nested(rng: &mut Rng) -> Vec<u8> {
    let depth = 100 + rng.below(20_000);
    let mut out = Vec::with_capacity(depth * 2 + 8);
    out.extend(std::iter::repeat_n(b'[', depth));
    out.extend(std::iter::repeat_n(b']', depth));
    out
}

/// A pk far larger than any key.
fn huge(rng: &mut Rng) -> Vec<u8> {
    let size = 9 * 1024 + rng.below(1 << 20);
    let mut out = b"{\"id\":\"".to_vec();
    out.extend(std::iter::repeat_n(b'7', size));
    out.extend_from_slice(b"\"}");
    out
}

/// Text that is not JSON.
fn malformed(rng: &mut Rng) -> Vec<u8> {
    rng.pick(&[
        &b""[..],
        b"{",
        b"{\"id\":}",
        b"{\"id\":1",
        b"{id:1}",
        b"{'id':1}",
        b"{\"id\":1}}",
        b"{\"id\":01}",
        b"{\"id\":1,}",
        b"{\"id\":0x10}",
        b"{\"id\":\"\xff\xfe\"}",
        b"{\"id\":1}\0",
        b"\0",
        b"{\"id\":\"\\ux\"}",
        b"{\"id\":NaN}",
        b"{\"id\":+1}",
        b"{\"id\":.5}",
    ])
    .to_vec()
}

/// `bytes` with a few random edits: flips, inserted NULs or invalid UTF-8, cuts.
pub fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(5) {
            0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
            1 => bytes.insert(at, 0),
            2 => bytes.insert(at, 0xc3 + (rng.below(2) as u8) * 0x3c),
            3 => bytes.truncate(at),
            _ => bytes.insert(at, rng.pick(b"{}[]\":,\\ 0-e.")),
        }
    }
    bytes
}

/// A ttl argument: valid, or not a ttl at all (true).
fn ttl(rng: &mut Rng) -> (Vec<u8>, bool) {
    let (text, bad) = rng.pick(&[
        ("1", false),
        ("60", false),
        ("0", false),
        ("31536000", false),
        ("-1", true),
        ("abc", true),
        ("", true),
        ("1.5", true),
        ("1e3", true),
        (" 5", true),
        ("9223372036854775807", true),
        ("18446744073709551616", true),
    ]);
    (text.as_bytes().to_vec(), bad)
}

/// A cache key: canonical, spelled otherwise, or not a key.
fn key(rng: &mut Rng) -> (Vec<u8>, bool) {
    match rng.below(8) {
        0..=3 => (
            format!("pg_cache:users:{{\"id\":{}}}", rng.below(60)).into_bytes(),
            false,
        ),
        4 => (b"pg_cache:users:{ \"id\": 1 }".to_vec(), true),
        5 => (b"users:{\"id\":1}".to_vec(), true),
        6 => (b"pg_cache:userz:{\"id\":1}".to_vec(), true),
        _ => (mutate(rng, b"pg_cache:users:{\"id\":1}".to_vec()), false),
    }
}

/// Commands, with the argument counts they accept (name excluded).
const ARITY: &[(&str, usize, usize)] = &[
    ("PGCACHE.READ", 2, 3),
    ("PGCACHE.MULTIREAD", 2, 3),
    ("PGCACHE.WRITE", 3, 4),
    ("PGCACHE.INVALIDATE", 2, 2),
    ("PGCACHE.FLUSH", 1, 1),
    ("PGCACHE.GET", 1, 2),
    ("PGCACHE.MGET", 1, usize::MAX),
    ("PGCACHE.KEY", 2, 2),
    ("PGCACHE.STATS", 0, 1),
    ("PGCACHE.HEALTH", 0, 0),
    ("PGCACHE.SLOWLOG", 1, 2),
    ("PGCACHE.HOOK", 1, usize::MAX),
    ("PGCACHE.QUERY", 2, usize::MAX),
];

/// An argument, and whether it alone makes the command malformed.
type Arg = (Vec<u8>, bool);

fn fine(bytes: impl Into<Vec<u8>>) -> Arg {
    (bytes.into(), false)
}

/// A table argument: mostly a table of the fuzz schema, sometimes none pgcache may read.
fn table(rng: &mut Rng) -> Arg {
    if rng.chance(85) {
        fine(rng.pick(TABLES))
    } else {
        (bad_table(rng), true)
    }
}

/// A MULTIREAD array: well-formed pks, an array made malformed, or text that is no array.
fn pk_array(rng: &mut Rng) -> Arg {
    let count = rng.pick(&[0usize, 1, 2, 5, 50, 300]);
    let items: Vec<String> = (0..count)
        .map(|_| pk(rng))
        .filter(|(p, malformed)| !malformed && std::str::from_utf8(p).is_ok())
        .map(|(p, _)| String::from_utf8(p).unwrap())
        .collect();
    let array = format!("[{}]", items.join(","));
    match rng.below(10) {
        0 => (malformed(rng), true),
        1 => fine(mutate(rng, array.into_bytes())),
        _ => fine(array),
    }
}

/// A WRITE's row JSON: a row, something else, or broken text.
fn row_data(rng: &mut Rng) -> Arg {
    match rng.below(4) {
        0 => fine(&b"{\"id\":1,\"name\":\"written\"}"[..]),
        1 => fine(nested(rng)),
        2 => fine(mutate(rng, b"{\"id\":2}".to_vec())),
        _ => fine(rng.pick(&[&b"1"[..], b"\"x\"", b"[]", b"null"])),
    }
}

/// The arguments of `name` and what its reply must be when they are well-formed.
fn arguments(rng: &mut Rng, name: &str) -> (Vec<Arg>, Expect) {
    match name {
        "PGCACHE.READ" => {
            let mut args = vec![table(rng), pk(rng)];
            if rng.chance(30) {
                args.push(ttl(rng));
            }
            (args, Expect::Row)
        }
        "PGCACHE.KEY" => (vec![table(rng), pk(rng)], Expect::Key),
        "PGCACHE.INVALIDATE" => (vec![table(rng), pk(rng)], Expect::Done),
        "PGCACHE.MULTIREAD" => (vec![table(rng), pk_array(rng)], Expect::Rows),
        "PGCACHE.WRITE" => {
            let mut args = vec![table(rng), pk(rng), row_data(rng)];
            if rng.chance(30) {
                args.push(ttl(rng));
            }
            (args, Expect::Done)
        }
        "PGCACHE.FLUSH" => (vec![table(rng)], Expect::Done),
        "PGCACHE.GET" => (vec![key(rng)], Expect::Row),
        "PGCACHE.MGET" => {
            // Keys of one slot: the same pk value (the hash tag) in each.
            let id = rng.below(60);
            let args = (0..1 + rng.below(4))
                .map(|_| {
                    fine(format!(
                        "pg_cache:{}:{{\"id\":{id}}}",
                        rng.pick(&["users", "v_users"])
                    ))
                })
                .collect();
            (args, Expect::Rows)
        }
        "PGCACHE.STATS" => match rng.below(4) {
            0 => (
                vec![fine(rng.pick(&[&b"RESET"[..], b"reset"]))],
                Expect::Done,
            ),
            1 => (
                vec![(rng.pick(&[&b"x"[..], b""]).to_vec(), true)],
                Expect::Error,
            ),
            _ => (Vec::new(), Expect::Listing),
        },
        "PGCACHE.HEALTH" => (Vec::new(), Expect::Listing),
        "PGCACHE.SLOWLOG" => slowlog(rng),
        "PGCACHE.QUERY" => query(rng),
        _ => hook(rng),
    }
}

/// Statements of the fuzz schema, with how many parameters they take (PGCACHE.QUERY may
/// refuse some: a STABLE function, a system catalog).
const STATEMENTS: &[(&str, usize)] = &[
    ("SELECT id, name FROM users WHERE id = $1", 1),
    ("select ID, name from USERS where id = ?", 1),
    ("SELECT count(*) FROM users WHERE name = ? AND id > ?", 2),
    ("SELECT * FROM v_users ORDER BY id LIMIT $1", 1),
    (
        "SELECT u.id FROM users u JOIN things t ON t.code = u.name WHERE u.id IN ($1, $2)",
        2,
    ),
    ("SELECT * FROM events WHERE at < now()", 0),
    ("SELECT * FROM pg_class", 0),
    ("SELECT '?' AS q, $1::text AS p", 1),
    ("SELECT id FROM users TABLESAMPLE BERNOULLI ($1)", 1),
    (
        "SELECT id FROM users TABLESAMPLE SYSTEM (50) REPEATABLE ($1)",
        1,
    ),
    ("SELECT id FROM users WHERE (born, id) < ($1::date, 3)", 1),
    (
        "SELECT ctid, xmin, xmax, cmin, cmax, tableoid, id FROM users WHERE id = $1",
        1,
    ),
    ("SELECT * FROM events WHERE at > 'now'::timestamp", 0),
    ("SELECT * FROM events WHERE at > ' Tomorrow 10:00'", 0),
    ("SELECT * FROM events WHERE at < $1", 1),
    ("SELECT * FROM users WHERE born = $1 OR name = 'today'", 1),
];

/// PGCACHE.QUERY with statements of the schema, mutated or broken ones, and parameters of
/// the right and wrong types and counts.
fn query(rng: &mut Rng) -> (Vec<Arg>, Expect) {
    let (sql, takes) = rng.pick(STATEMENTS);
    let (sql, nparams, bad) = match rng.below(8) {
        0 => (mutate(rng, sql.as_bytes().to_vec()), takes, false),
        1 => (malformed(rng), takes, false),
        2 => (sql.as_bytes().to_vec(), takes + 1, true),
        _ => (sql.as_bytes().to_vec(), takes, false),
    };
    let mut args = vec![fine(sql), (nparams.to_string().into_bytes(), bad)];
    for _ in 0..nparams.min(takes) {
        args.push(fine(
            rng.pick(&[
                "1",
                "007",
                "x",
                "",
                "-1",
                "99999999999",
                "now",
                "today",
                "YESTERDAY",
                "2024-05-01",
            ])
            .as_bytes(),
        ));
    }
    if rng.chance(20) {
        args.push(fine(&b"TTL"[..]));
        args.push(ttl(rng));
    }
    (args, Expect::Result)
}

/// PGCACHE.SLOWLOG GET [count] | LEN | RESET, and subcommands and counts it refuses.
fn slowlog(rng: &mut Rng) -> (Vec<Arg>, Expect) {
    let (sub, expect) = match rng.below(6) {
        0 => ("GET", Expect::Listing),
        1 => ("get", Expect::Listing),
        2 => ("LEN", Expect::Count),
        3 => ("RESET", Expect::Done),
        4 => ("BOGUS", Expect::Error),
        _ => ("", Expect::Error),
    };
    let mut args = vec![(sub.as_bytes().to_vec(), expect == Expect::Error)];
    if rng.chance(40) {
        let count = rng.pick(&["0", "1", "-1", "100000000000", "x"]);
        // Only GET takes a count, a whole number of -1 or more.
        let refused = expect != Expect::Listing || count == "x";
        args.push((count.as_bytes().to_vec(), refused));
    }
    (args, expect)
}

/// One command; `settings` are the runtime settings' names (CONFIG SET targets).
pub fn command(rng: &mut Rng, settings: &[String]) -> Generated {
    if rng.chance(3) {
        return config_set(rng, settings);
    }
    let (name, min, max) = rng.pick(ARITY);
    let (mut args, expect) = arguments(rng, name);
    // Wrong arity now and then: too few or too many arguments. (STATS, SLOWLOG and HOOK
    // answer differently by argument count; their generators make their own.)
    let uniform = !matches!(name, "PGCACHE.STATS" | "PGCACHE.SLOWLOG" | "PGCACHE.HOOK");
    if uniform && rng.chance(5) {
        if rng.chance(50) {
            args.truncate(rng.below(args.len() + 1));
        } else {
            args.extend((0..1 + rng.below(3)).map(|_| fine("extra")));
        }
    }
    let malformed = args.len() < min || args.len() > max || args.iter().any(|(_, bad)| *bad);
    let mut full = vec![name.as_bytes().to_vec()];
    full.extend(args.into_iter().map(|(bytes, _)| bytes));
    Generated {
        args: full,
        expect: if malformed { Expect::Error } else { expect },
    }
}

/// PGCACHE.HOOK ADD / DEL / LIST with well-formed and broken definitions.
fn hook(rng: &mut Rng) -> (Vec<Arg>, Expect) {
    let (words, expect): (Vec<&str>, Expect) = match rng.below(6) {
        0 => (vec!["LIST"], Expect::Listing),
        // DEL of a hook that may or may not exist: OK or an error.
        1 => (
            vec!["DEL", rng.pick(&["h1", "h2", "nope", "", "default"])],
            Expect::Done,
        ),
        2 => (
            vec![
                "ADD",
                rng.pick(&["h1", "h2"]),
                "ON",
                "write,invalidate",
                "PUBLISH",
                "fuzz-events",
            ],
            Expect::Done,
        ),
        3 => (
            vec![
                "ADD",
                "h2",
                "ON",
                rng.pick(&["all", "hit", "bogus", "", ",,"]),
                "TABLE",
                rng.pick(&["users", "userz", "\"x", ""]),
                "XADD",
                rng.pick(&["fuzz:stream", "pg_cache:x", "a b", ""]),
                "MAXLEN",
                rng.pick(&["~", "=", "x"]),
                rng.pick(&["10", "-1", "0", "99999999999999999999"]),
            ],
            Expect::Done,
        ),
        4 => (
            vec![
                "ADD",
                "h3",
                "ON",
                "write",
                "PUBLISH",
                "c",
                "BY",
                rng.pick(&["default", "nobody", ""]),
            ],
            Expect::Done,
        ),
        _ => (
            vec![
                rng.pick(&["ADD", "add", "SYNC", "BOGUS"]),
                rng.pick(&["", "x;y", "h1 ON"]),
            ],
            Expect::Error,
        ),
    };
    let args = words
        .into_iter()
        .map(|w| (w.as_bytes().to_vec(), expect == Expect::Error))
        .collect();
    (args, expect)
}

/// CONFIG SET of a pgcache setting, with a value often malformed.
fn config_set(rng: &mut Rng, settings: &[String]) -> Generated {
    let name = if settings.is_empty() || rng.chance(5) {
        "pgcache.no_such_setting".to_string()
    } else {
        rng.pick(settings)
    };
    let value: Vec<u8> = match rng.below(4) {
        0 => rng.pick(BOUNDARY_NUMBERS).as_bytes().to_vec(),
        1 => rng
            .pick(&[
                &b""[..],
                b"yes",
                b"no",
                b"maybe",
                b"all",
                b"none",
                b"read,bogus",
                b"\0",
                b"\xff",
            ])
            .to_vec(),
        2 => mutate(rng, b"users,public.orders".to_vec()),
        _ => vec![b'x'; rng.below(10_000)],
    };
    Generated {
        args: vec![
            b"CONFIG".to_vec(),
            b"SET".to_vec(),
            name.into_bytes(),
            value,
        ],
        expect: Expect::Config,
    }
}
