"""The decoding of each type's JSON text, without a server."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

from pgcache._decode import Decoder, converter
from pgcache.rows import dict_row, tuple_row


def decode(type_name: str, value):
    convert = converter(type_name)
    return value if convert is None else convert(value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("00:00:00", timedelta(0)),
        ("3 days", timedelta(days=3)),
        ("1 year", timedelta(days=365)),
        ("2 mons", timedelta(days=60)),
        (
            "1 year 2 mons 3 days 04:05:06.789",
            timedelta(days=428, hours=4, minutes=5, seconds=6, microseconds=789000),
        ),
        ("-1 days +02:03:00", timedelta(days=-1, hours=2, minutes=3)),
        ("-00:00:01", timedelta(seconds=-1)),
        ("-1 years -2 mons", timedelta(days=-425)),
        ("1 day -00:00:00.5", timedelta(days=1, microseconds=-500000)),
        ("100:00:00", timedelta(hours=100)),
    ],
)
def test_intervals_count_a_year_as_365_days_and_a_month_as_30(
    text: str, expected: timedelta
) -> None:
    assert decode("interval", text) == expected


def test_times_dates_and_timestamps() -> None:
    assert decode("time", "24:00:00") == time(23, 59, 59, 999999)
    assert decode("timetz", "12:00:00.5+05:30") == time(
        12, 0, 0, 500000, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    assert decode("timestamptz", "2024-06-01T10:00:00.5+00:00") == datetime(
        2024, 6, 1, 10, 0, 0, 500000, tzinfo=timezone.utc
    )
    assert decode("timestamptz", "1900-01-01T00:00:00+05:53:28").utcoffset() == timedelta(
        hours=5, minutes=53, seconds=28
    )
    assert decode("timestamp", "2024-02-29T23:59:59.999999") == datetime(
        2024, 2, 29, 23, 59, 59, 999999
    )
    assert decode("date", "infinity") == date.max and decode("date", "-infinity") == date.min
    with pytest.raises(ValueError, match="outside Python's range"):
        decode("date", "10000-01-01")


def test_numbers_nulls_and_arrays() -> None:
    assert decode("numeric", 5) == Decimal(5) and isinstance(decode("numeric", 5), Decimal)
    assert decode("numeric", "NaN").is_nan()
    assert decode("float8", "-Infinity") == float("-inf")
    assert decode("float8", Decimal("0.1")) == 0.1
    assert decode("int4[]", [[1, None], [3, 4]]) == [[1, None], [3, 4]]
    assert decode("numeric[]", [1, None, "NaN"])[0] == Decimal(1)
    assert decode("bytea[]", ["\\x01", None]) == [b"\x01", None]
    for type_name in ("numeric", "date", "interval", "uuid", "bytea", "jsonb", "int4"):
        assert decode(type_name, None) is None


def test_a_row_keeps_two_columns_of_one_name_apart() -> None:
    text = '[{"id":1,"id":2,"j":{"a":1.5,"a":2}}]'
    assert Decoder([("id", "int4"), ("id", "int4"), ("j", "jsonb")], tuple_row).rows(text) == [
        (1, 2, {"a": 2})
    ]
    assert Decoder([("id", "int4"), ("id", "int4"), ("j", "jsonb")], dict_row).rows(text) == [
        {"id": 2, "j": {"a": 2}}
    ]
