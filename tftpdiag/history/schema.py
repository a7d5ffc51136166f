"""The history's tables, their versions, and a finished session as one row of them.

Each version is a list of statements that takes the schema from the one before; a store runs those its
database has not had, in order, and records the version in ``schema_version``. Types are written as
placeholders that each database fills in (``{id}``, ``{real}``, ``{int}``), so SQLite and PostgreSQL
keep the same columns.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from tftpdiag import fmt
from tftpdiag.served import Served

__all__ = ["MIGRATIONS", "LATEST", "COLUMNS", "STORED_TEXT", "row_of", "read_row", "storable", "FILE_CHARS",
           "TEXT_CHARS"]

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE sessions (
            id {id},
            started {real} NOT NULL,
            ended {real} NOT NULL,
            kind TEXT NOT NULL,
            result TEXT NOT NULL,
            client_address TEXT,
            client_port INTEGER,
            server_address TEXT,
            server_port INTEGER,
            file TEXT,
            direction TEXT,
            mode TEXT,
            options_asked TEXT,
            options_granted TEXT,
            bytes {int},
            duration_s {real},
            error_code INTEGER,
            error TEXT,
            reason TEXT,
            findings TEXT
        )""",
        "CREATE INDEX sessions_started ON sessions (started)",
    ],
    # Several servers may share one history (PostgreSQL): each row names the one that served it. And the
    # retransmits, the first sign of a lossy path to a device.
    2: [
        "ALTER TABLE sessions ADD COLUMN server TEXT",
        "ALTER TABLE sessions ADD COLUMN retransmits {int}",
        "CREATE INDEX sessions_client ON sessions (client_address, started)",
    ],
    # The client's text is stored by fmt.storable's rule, which doubles backslashes so that an escaped
    # byte (\xNN) cannot be told from a backslash the name had. Rows written before kept backslashes
    # single: double them, so that they read back as they were stored (their \xNN, ambiguous then,
    # now reads as the text it is). A literal '\' (standard_conforming_strings in PostgreSQL, the default).
    3: [
        "UPDATE sessions SET file = REPLACE(file, '\\', '\\\\'), mode = REPLACE(mode, '\\', '\\\\'), "
        "error = REPLACE(error, '\\', '\\\\')",
    ],
    # What reached the listening port when it was no request at all (a stray ACK, undecodable bytes): a
    # row of a refusal with no file, no RRQ or WRQ, says what it was. NULL for a request.
    4: [
        "ALTER TABLE sessions ADD COLUMN received TEXT",
    ],
}
LATEST = max(MIGRATIONS)

COLUMNS = ("started", "ended", "kind", "result", "client_address", "client_port", "server_address", "server_port",
           "file", "direction", "mode", "options_asked", "options_granted", "bytes", "duration_s", "error_code",
           "error", "reason", "findings", "server", "retransmits", "received")

# The columns that hold what a client sent, stored by the one rule (fmt.storable) and read back by its
# reverse: not escaped for a terminal (whoever reads shows it through tftpdiag.fmt), but bounded: a
# hostile client cannot make one row large.
STORED_TEXT = ("file", "mode", "error")
FILE_CHARS = 1024
TEXT_CHARS = 512
_OPTIONS = 32
_SERVER = socket.gethostname()[:TEXT_CHARS]


def storable(text: str | None, limit: int = TEXT_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters and written by :func:`tftpdiag.fmt.storable`: what a
    database cannot hold as text made visible (a byte that was not UTF-8, kept by the decoder as a lone
    surrogate, becomes ``\\xNN``, a NUL ``\\x00``) and backslashes doubled, so that it reads back exactly."""
    return None if text is None else fmt.storable(text[:limit])


def read_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as read, its :data:`STORED_TEXT` columns back to the text the session had."""
    for column in STORED_TEXT:
        if row.get(column) is not None:
            row[column] = fmt.unstored(row[column])
    return row


def _options(pairs: dict[str, Any] | None) -> str | None:
    if pairs is None:
        return None
    bounded = {str(k)[:TEXT_CHARS]: str(v)[:TEXT_CHARS] for k, v in list(pairs.items())[:_OPTIONS]}
    return json.dumps(bounded)  # ASCII: a lone surrogate is written as an escape, which any database holds


def row_of(session: Served) -> tuple[Any, ...]:
    """The row of :data:`COLUMNS` for a finished or refused session, from the same object ``--json`` prints."""
    obj, record = session.obj, session.record
    client, server = record.client, record.local  # a refusal has no session address of its own
    error = obj.get("error") or {}
    options = obj.get("options") or {}
    return (
        session.started, session.ended, obj["event"], session.result,
        client[0] if client else None, client[1] if client else None,
        server[0] if server else None, server[1] if server else None,
        storable(record.filename, FILE_CHARS), record.direction, storable(record.mode or None),
        _options(options.get("requested")), _options(options.get("granted")),
        record.bytes, round(record.duration, 6), error.get("code"), storable(error.get("message")),
        error.get("reason"), json.dumps(sorted({f.id for f in session.findings})), _SERVER, record.retransmits,
        obj.get("received"),
    )
