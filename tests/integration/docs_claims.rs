//! Limits and defaults the documentation states, each held to the server (issue #70 item 8:
//! the docs said a tag is "1 to 200 bytes" where a non-UTF-8 one is refused, and described
//! the miss path the code took before misses went out from the event loop). Each claim is
//! quoted from its page, so the test fails when the page stops saying it, and tried on a
//! running server, so it fails when the server stops doing it. (The examples in the pages
//! are run by `readme`.)
use crate::query::query;
use pgcache_testkit::*;
use std::time::Duration;

/// Asserts that `page` (under the repository) says `claim`, whitespace aside (a sentence
/// may be wrapped anywhere).
fn page_says(page: &str, claim: &str) {
    let text = std::fs::read_to_string(repo_root().join(page)).unwrap();
    let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        squeeze(&text).contains(&squeeze(claim)),
        "{page} no longer says: {claim}"
    );
}

fn tagged_read(
    con: &mut redis::Connection,
    tags: &[Vec<u8>],
) -> redis::RedisResult<Option<String>> {
    let mut call = redis::cmd("PGCACHE.READ");
    call.arg("users").arg(r#"{"id":1}"#).arg("TAG");
    for tag in tags {
        call.arg(tag.as_slice());
    }
    call.query(con)
}

#[test]
fn the_documented_limits_are_the_server_s() {
    let stack = Stack::start(&format!("{USERS_SQL} {TRIGGER_SQL}"));
    stack.pg.execute("SELECT pgcache_watch('users')");
    let mut con = stack.con();

    page_says(
        "docs/commands.md",
        "At most 16 tags, each 1 to 200 bytes of UTF-8 text.",
    );
    let tag = |n: usize, fill: u8| vec![fill; n];
    let sixteen: Vec<Vec<u8>> = (0..16u8).map(|i| tag(200, b'a' + i)).collect();
    tagged_read(&mut con, &sixteen).unwrap();
    let refused = |tags: &[Vec<u8>]| tagged_read(&mut stack.con(), tags).unwrap_err().to_string();
    assert!(refused(&[sixteen.clone(), vec![tag(1, b'z')]].concat()).contains("16 tags"));
    assert!(refused(&[tag(201, b'a')]).contains("1 to 200 bytes"));
    assert!(refused(&[Vec::new()]).contains("1 to 200 bytes"));
    assert!(refused(&[vec![0xff, 0xfe]]).contains("UTF-8"));

    page_says("docs/limits.md", "Keys are at most 8 KiB of JSON");
    let key = |bytes: usize| {
        let head = r#"{"id":1,"pad":""#;
        format!("{head}{}\"}}", "x".repeat(bytes - head.len() - 2))
    };
    let e = read(&mut con, "users", &key(8 * 1024 + 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("8192"), "{e}");
    let e = read(&mut con, "users", &key(8 * 1024))
        .unwrap_err()
        .to_string();
    assert!(!e.contains("8192"), "an 8 KiB key is within the limit: {e}");

    page_says(
        "docs/queries.md",
        "Each statement text a client sends (up to 64 KiB",
    );
    let padded = |bytes: usize| {
        let head = "SELECT id FROM users WHERE id = $1 -- ";
        format!("{head}{}", "x".repeat(bytes - head.len()))
    };
    query(&mut con, &padded(64 * 1024), &["1"]).unwrap();
    let e = query(&mut con, &padded(64 * 1024 + 1), &["1"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("65536"), "{e}");

    page_says("docs/limits.md", "(`loop_connections`, 2 by default)");
    assert_eq!(
        config_get(&mut con, "pgcache.loop_connections"),
        ["pgcache.loop_connections", "2"]
    );
    // Misses of a known statement go out from the loop once it has its connections (the
    // first misses open them and go to the workers meanwhile).
    let mut id = 1;
    wait_for(
        "a miss sent from the event loop",
        Duration::from_secs(30),
        || {
            id += 1;
            query(
                &mut con,
                "SELECT name FROM users WHERE id = $1",
                &[&id.to_string()],
            )
            .unwrap();
            (stats_figure(&mut con, "misses_on_loop") > 0).then_some(())
        },
    );
}
