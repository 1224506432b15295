"""The one fallback of every integration (issue #51, rule B): a read pgcache does not answer,
for whatever reason of the client's own (pgcache refused the statement, Redis out of reach,
a parameter the client cannot send, a column it cannot type as the driver does), runs on the
database as it would without pgcache: counted, logged once per statement, never raised into
the application. Statements pgcache refused are remembered, so they go straight to the
database next time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import redis

T = TypeVar("T")

# Statements remembered (refused, or logged); past this the memory starts over.
_MOST_REMEMBERED = 10_000


class Refusal(Exception):
    """The client will not answer a statement (a column it cannot type as the driver
    would): like pgcache's refusals, remembered."""


class Fallbacks:
    """``answered``: reads pgcache answered; ``fell_back``: reads run on the database."""

    def __init__(self, log: logging.Logger, database: str) -> None:
        self.answered = 0
        self.fell_back = 0
        self._refused: dict[str, str] = {}
        self._logged: dict[str, None] = {}
        self._lock = threading.Lock()
        self._log = log
        self._database = database

    def refused(self) -> dict[str, str]:
        """The statements pgcache (or the client) refused, each with the reason."""
        with self._lock:
            return dict(self._refused)

    def known_refused(self, statement: str) -> bool:
        """Whether pgcache refused ``statement`` before (then it is counted as run on the
        database)."""
        if statement in self._refused:
            self.fell_back += 1
            return True
        return False

    def attempt(self, statement: str, read: Callable[[], T]) -> T | None:
        """``read()``'s answer, counted as answered; None where it raised, counted as run on
        the database and logged (the first time for ``statement``)."""
        try:
            answer = read()
        except (redis.ResponseError, Refusal) as refusal:
            self._fall_back(statement, f"refused: {refusal}", remember=True)
            return None
        except redis.RedisError as unreachable:
            self._fall_back(statement, f"unreachable: {unreachable}", remember=False)
            return None
        except Exception as error:  # the client's own failing, never the application's
            self._fall_back(statement, f"{type(error).__name__}: {error}", remember=False)
            return None
        self.answered += 1
        return answer

    def _fall_back(self, statement: str, reason: str, *, remember: bool) -> None:
        self.fell_back += 1
        with self._lock:
            if len(self._logged) >= _MOST_REMEMBERED:
                self._logged.clear()
                self._refused.clear()
            first = statement not in self._logged
            self._logged[statement] = None
            if remember:
                self._refused[statement] = reason
        if first:
            self._log.warning(
                "pgcache did not answer a read, which runs on %s (logged once per "
                "statement; counted in fell_back): %s (%s)",
                self._database,
                reason,
                statement,
            )
