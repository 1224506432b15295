"""Which statements the ORM integrations take for writes."""

from pgcache._statements import may_write


def test_only_a_plain_select_is_taken_for_a_read() -> None:
    assert not may_write("SELECT 1")
    assert not may_write("  select * FROM t")
    assert may_write("WITH u AS (UPDATE t SET v = 1 RETURNING id) SELECT count(*) FROM u")
    assert may_write("INSERT INTO t VALUES (1)")
    assert may_write("update t set v = 2")
    assert may_write("CALL refresh()")
