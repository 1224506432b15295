"""How a statement's placeholders are rewritten, without a server."""

from __future__ import annotations

from pgcache._placeholders import nulls_written


def test_a_statement_without_none_is_left_as_it_is() -> None:
    assert nulls_written("SELECT $1, $2", [1, "a"]) == ("SELECT $1, $2", [1, "a"])


def test_a_none_is_written_as_null_and_the_others_numbered_again() -> None:
    sql = "SELECT * FROM t WHERE a = $1 AND b = $2::int AND c = $3 OR d = $1"
    assert nulls_written(sql, [None, None, "x"]) == (
        "SELECT * FROM t WHERE a = NULL AND b = NULL::int AND c = $1 OR d = NULL",
        ["x"],
    )
    assert nulls_written("SELECT $2, $1", [7, None]) == ("SELECT NULL, $1", [7])


def test_question_marks_are_written_in_order() -> None:
    assert nulls_written("SELECT ? WHERE a = ? AND b = ?", [1, None, 3]) == (
        "SELECT ? WHERE a = NULL AND b = ?",
        [1, 3],
    )
    # `??` is jsonb's `?`, not a placeholder.
    assert nulls_written("SELECT d ?? 'k' FROM t WHERE a = ?", [None]) == (
        "SELECT d ?? 'k' FROM t WHERE a = NULL",
        [],
    )


def test_literals_identifiers_and_comments_are_not_placeholders() -> None:
    sql = (
        "SELECT '$1', E'\\'$1', \"$1\", $q$ $1 $q$ -- $1\n/* $1 ? */ FROM t WHERE a = $1 AND b = $2"
    )
    written, values = nulls_written(sql, [None, 5])
    assert written == sql.replace("a = $1 AND b = $2", "a = NULL AND b = $1")
    assert values == [5]


def test_a_number_past_the_parameters_is_left_for_pgcache_to_refuse() -> None:
    assert nulls_written("SELECT $1, $3", [None, 2]) == ("SELECT NULL, $3", [2])
