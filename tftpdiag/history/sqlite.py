"""The history in an SQLite file: the default, nothing to set up."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tftpdiag.history.store import HistoryError, SqlStore

__all__ = ["SqliteStore", "default_path"]


def default_path() -> Path:
    """$XDG_STATE_HOME/tftpdiag/history.sqlite (~/.local/state/... without it): state, not config or cache."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "tftpdiag" / "history.sqlite"


class SqliteStore(SqlStore):
    TYPES = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "int": "INTEGER"}
    PARAM = "?"

    def __init__(self, path: Path, *, create: bool = True, make_parents: bool = False) -> None:
        """``create``: a missing file becomes a new history. ``make_parents``: so do missing directories
        above it, which only the default path under the state directory may need; a path the user named
        in a directory that does not exist is refused, as --log and --trace refuse theirs."""
        self.name = str(path)
        if not create and not path.exists():
            raise HistoryError(f"there is no history at {path} (serve --history records one)")
        if create and not make_parents and not path.parent.is_dir():
            raise HistoryError(f"cannot open the history {path}: no such directory {path.parent}")
        try:
            if create and make_parents:
                path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: transactions are begun by hand, so that a migration's DDL is in one too.
            # check_same_thread off: opened (and migrated) by the main thread, then used by the writer only.
            conn = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")  # a query beside a running server waits for nothing
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"cannot open the history {path}: {_why(exc)}") from None
        super().__init__(conn)

    @contextlib.contextmanager
    def transaction(self, write: bool = True) -> Iterator[Any]:
        cur = self.conn.cursor()
        try:
            # IMMEDIATE takes the write lock at once, so two writers wait for each other instead of
            # one failing half-way; a reader takes none (WAL: it never waits for the writer).
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield cur
            cur.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                cur.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise HistoryError(f"{self.name}: {exc}") from None
            raise
        finally:
            cur.close()


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)
