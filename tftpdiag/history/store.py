"""What a history store does, whatever database holds it: migrate its schema, add rows, answer queries.

:class:`SqlStore` holds the SQL both databases share; :mod:`.sqlite` and :mod:`.postgres` say only how
to connect, how a parameter is written and what the column types are called.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from tftpdiag.fmt import storable
from tftpdiag.history.schema import COLUMNS, LATEST, MIGRATIONS, read_row
from tftpdiag.records import record

__all__ = ["HistoryError", "Filter", "SqlStore"]


class HistoryError(Exception):
    """The history cannot be opened, read or written: one line for the user."""


@record
class Filter:
    """Which rows a query wants; every part optional."""

    client: str | None = None  # an address, exactly
    file: str | None = None  # a name, exactly, or a pattern with * for any characters
    failed: bool = False  # only sessions that did not complete (failed or refused)
    since: float | None = None  # Unix time
    limit: int | None = None  # the newest this many


class SqlStore:
    """A database connection with the history's schema. Not shared between threads: the server's
    writer thread has its own, and a query its own."""

    TYPES: dict[str, str] = {}  # {id}, {real}, {int} in the migrations
    PARAM = "?"
    name = ""  # how the store is named to the user (a path, a URL without its password)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    # -- what each database says differently --------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, write: bool = True) -> Iterator[Any]:
        """A cursor in a transaction, committed at the end of the block (``write=False``: one that
        only reads, and takes no write lock)."""
        raise NotImplementedError

    def lock_schema(self, cur: Any) -> None:
        """Keep another server from migrating the same database at the same moment."""

    def close(self) -> None:
        self.conn.close()

    # -- schema -------------------------------------------------------------------------------------

    def version(self, cur: Any) -> int:
        cur.execute("SELECT MAX(version) FROM schema_version")
        row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def migrate(self) -> int:
        """Bring the schema up to :data:`LATEST`, a version at a time; the version it was at."""
        try:
            with self.transaction(write=False) as cur:
                if self.version(cur) == LATEST:
                    return LATEST  # up to date: a query takes no write lock beside a running server
        except HistoryError:
            pass  # no schema_version table yet
        with self.transaction() as cur:
            self.lock_schema(cur)
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            before = self.version(cur)
            if before > LATEST:
                raise HistoryError(f"{self.name} was written by a newer tftpdiag (schema version {before}; this "
                                   f"one knows up to {LATEST})")
            for version in range(before + 1, LATEST + 1):
                for statement in MIGRATIONS[version]:
                    cur.execute(statement.format(**self.TYPES))
                cur.execute("DELETE FROM schema_version")
                cur.execute(f"INSERT INTO schema_version (version) VALUES ({self.PARAM})", (version,))
        return before

    # -- rows ---------------------------------------------------------------------------------------

    def add(self, rows: Sequence[tuple[Any, ...]]) -> None:
        marks = ", ".join([self.PARAM] * len(COLUMNS))
        with self.transaction() as cur:
            cur.executemany(f"INSERT INTO sessions ({', '.join(COLUMNS)}) VALUES ({marks})", rows)

    def _where(self, f: Filter) -> tuple[str, list[Any]]:
        p = self.PARAM
        parts: list[str] = []
        args: list[Any] = []
        if f.client is not None:
            parts.append(f"client_address = {p}")
            args.append(f.client)
        if f.file is not None:
            stored = storable(f.file)  # compared with the file column as it is stored
            if "*" in stored:
                escaped = stored.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
                parts.append(f"file LIKE {p} ESCAPE '\\'")
                args.append(escaped)
            else:
                parts.append(f"file = {p}")
                args.append(stored)
        if f.failed:
            parts.append("result <> 'ok'")
        if f.since is not None:
            parts.append(f"started >= {p}")
            args.append(f.since)
        return (" WHERE " + " AND ".join(parts) if parts else ""), args

    def sessions(self, f: Filter) -> list[dict[str, Any]]:
        """The sessions that match, oldest first (the newest ``limit`` of them)."""
        where, args = self._where(f)
        sql = f"SELECT {', '.join(COLUMNS)} FROM sessions{where} ORDER BY started DESC, id DESC"
        if f.limit:
            sql += f" LIMIT {int(f.limit)}"
        with self.transaction(write=False) as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        return [read_row(dict(zip(COLUMNS, row, strict=True))) for row in reversed(rows)]

    def devices(self, f: Filter) -> list[dict[str, Any]]:
        """One row per client address: its newest session that matches, with how many matched and
        how many of those failed; the device heard from longest ago first."""
        where, args = self._where(f)
        cols = ", ".join(f"s.{c}" for c in COLUMNS)
        sql = (f"SELECT {cols}, d.n, d.failures FROM sessions s JOIN (SELECT MAX(id) AS last_id, COUNT(*) AS n, "
               f"SUM(CASE WHEN result <> 'ok' THEN 1 ELSE 0 END) AS failures FROM sessions{where} "
               f"GROUP BY client_address) d ON s.id = d.last_id ORDER BY s.started")
        with self.transaction(write=False) as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        out = []
        for row in rows:
            device = read_row(dict(zip(COLUMNS, row[:-2], strict=True)))  # then the two counts
            device["sessions"], device["failures"] = int(row[-2]), int(row[-1])
            out.append(device)
        return out
