"""The history in PostgreSQL (``postgresql://`` URL): several servers share one history.

psycopg 3 is in the ``postgres`` extra, imported only here, so a plain ``serve`` does not need it."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from tftpdiag.history.store import HistoryError, SqlStore

__all__ = ["PostgresStore", "shown_url"]

_MIGRATION_LOCK = 0x7466_7470  # "tftp": the advisory lock servers take to migrate one at a time


def shown_url(url: str) -> str:
    """The URL without its password, to name the database in a message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class PostgresStore(SqlStore):
    TYPES = {"id": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION", "int": "BIGINT"}
    PARAM = "%s"

    def __init__(self, url: str) -> None:
        self.name = shown_url(url)
        try:
            import psycopg
        except ImportError:
            raise HistoryError("a PostgreSQL history needs psycopg: pip install 'tftpdiag[postgres]'") from None
        self._psycopg = psycopg
        self._url = url
        super().__init__(self._connect())

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._url, connect_timeout=10, autocommit=True)
        except self._psycopg.Error as exc:
            raise HistoryError(f"cannot connect to {self.name}: {_first_line(exc)}") from None

    @contextlib.contextmanager
    def transaction(self, write: bool = True) -> Iterator[Any]:
        if self.conn.closed or self.conn.broken:  # the server restarted: connect again
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = self._connect()
        try:
            # Autocommit: each block is one transaction of its own, committed at its end.
            with self.conn.transaction(), self.conn.cursor() as cur:
                yield cur
        except self._psycopg.Error as exc:
            raise HistoryError(f"{self.name}: {_first_line(exc)}") from None

    def lock_schema(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
