"""What an ORM integration reads through pgcache and what it leaves to the database: counted,
and the statements pgcache refused (remembered, so they go straight to the database next time,
each logged once with the reason)."""

from __future__ import annotations

import logging
import threading

# Refused statements remembered; past this the memory starts over.
_MOST_REFUSED = 10_000


class Fallbacks:
    """``answered``: reads pgcache answered; ``fell_back``: reads run on the database."""

    def __init__(self, log: logging.Logger, database: str) -> None:
        self.answered = 0
        self.fell_back = 0
        self._refused: dict[str, str] = {}
        self._lock = threading.Lock()
        self._log = log
        self._database = database

    def refused(self) -> dict[str, str]:
        """The statements pgcache refused, each with the reason."""
        with self._lock:
            return dict(self._refused)

    def known_refused(self, statement: str) -> bool:
        """Whether pgcache refused ``statement`` before (then it is counted as run on the
        database)."""
        if statement in self._refused:
            self.fell_back += 1
            return True
        return False

    def refusal(self, statement: str, reason: str) -> None:
        """pgcache refused ``statement`` for ``reason``: it runs on the database."""
        self.fell_back += 1
        with self._lock:
            if len(self._refused) >= _MOST_REFUSED:
                self._refused.clear()
            first = statement not in self._refused
            self._refused[statement] = reason
        if first:
            self._log.info(
                "pgcache refused a statement, which runs on %s: %s (%s)",
                self._database,
                reason,
                statement,
            )

    def unreachable(self, error: Exception) -> None:
        """Redis did not answer: the read runs on the database."""
        self.fell_back += 1
        self._log.warning("pgcache unreachable, read run on %s: %s", self._database, error)
