//! What misses from standbys (issue #53, design/53 §3) take from PostgreSQL, checked on a
//! real primary and its streaming standby before pgcache builds on it: a standby answers as
//! of the log it has replayed, `pg_last_wal_replay_lsn()` says how far that is, and a read
//! made after that check in the same session sees at least what the check saw. A primary
//! has no replay position, which is how a promoted standby is told apart.
use pgcache_testkit::*;

#[test]
fn a_standby_answers_as_of_the_log_it_replayed_which_a_check_before_the_read_bounds() {
    let primary = Pg::start();
    primary.execute(
        "CREATE TABLE t (id integer PRIMARY KEY, v integer NOT NULL);
         INSERT INTO t VALUES (1, 1);",
    );
    let standby = primary.start_standby();
    standby.wait_replayed(primary.log_position());
    let mut reader = standby.client();
    let read_v = |reader: &mut postgres::Client| -> i32 {
        reader
            .query_one("SELECT v FROM t WHERE id = 1", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(read_v(&mut reader), 1);
    let writes = reader.batch_execute("UPDATE t SET v = 0").unwrap_err();
    assert_eq!(
        writes.code(),
        Some(&postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );

    // Replay paused: the standby still answers, from before the commit.
    standby.pause_replay();
    primary.execute("UPDATE t SET v = 2 WHERE id = 1");
    let committed = primary.log_position();
    let replayed = |reader: &mut postgres::Client| -> u64 {
        let text: String = reader
            .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
            .unwrap()
            .get(0);
        lsn(&text)
    };
    assert!(replayed(&mut reader) < committed);
    assert_eq!(read_v(&mut reader), 1, "a paused standby's answer");

    // Replayed through the commit: the check says so, and the read after it in the same
    // session sees the commit.
    standby.resume_replay();
    wait_for(
        "the reader's check to pass the commit",
        std::time::Duration::from_secs(60),
        || (replayed(&mut reader) >= committed).then_some(()),
    );
    assert_eq!(read_v(&mut reader), 2);

    // A primary has no replay position.
    let none: Option<String> = primary
        .client()
        .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(none, None);
}
