"""Every session and refusal a server saw, kept for later questions ("which phones failed last
night?"): in SQLite by default, in PostgreSQL for a ``postgresql://`` URL.

The server writes through :class:`~tftpdiag.history.writer.HistoryWriter`, a thread of its own, so a
slow or broken database never slows a transfer; ``tftpdiag history`` reads through
:mod:`tftpdiag.history.query`.
"""

from __future__ import annotations

from pathlib import Path

from tftpdiag.history.sqlite import default_path
from tftpdiag.history.store import Filter, HistoryError, SqlStore

__all__ = ["open_store", "default_path", "is_url", "Filter", "HistoryError", "SqlStore"]


def is_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_store(target: str | None, *, create: bool = True) -> SqlStore:
    """The store at ``target`` (a path, a PostgreSQL URL, or None for the default file), its schema
    brought up to date. ``create=False``: a file that does not exist is an error, not a new history."""
    if target is not None and is_url(target):
        from tftpdiag.history.postgres import PostgresStore

        store: SqlStore = PostgresStore(target)
    else:
        from tftpdiag.history.sqlite import SqliteStore

        store = SqliteStore(Path(target).expanduser() if target else default_path(), create=create,
                            make_parents=not target)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
