"""The server's side of the history: sessions queued by the reader, written in batches by a thread of
their own. A database that is slow or gone costs the server nothing but the rows it cannot keep: the
first error is said once on stderr, the rows wait (a bounded number) and are tried again."""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

from tftpdiag.fmt import line
from tftpdiag.history.schema import row_of
from tftpdiag.history.store import HistoryError, SqlStore
from tftpdiag.served import Served

__all__ = ["HistoryWriter"]

_BATCH = 500  # rows in one transaction
_LINGER = 0.2  # seconds the writer waits for more rows to fill a batch
_RETRY = 5.0  # seconds between tries while the database fails
_KEPT = 100_000  # rows held while the database fails; beyond that new ones are let go


class HistoryWriter:
    def __init__(self, store: SqlStore, *, errors: TextIO | None = None) -> None:
        self.store = store
        self._errors = errors or sys.stderr
        self._rows: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()  # held for an append or a pop, never across a write
        self._wake = threading.Event()
        self._closing = False
        self.lost = 0  # rows let go while the database failed
        self.written = 0
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    def add(self, session: Served) -> None:
        """Queue a session (the reader's thread: a tuple and an append, nothing more)."""
        row = row_of(session)
        with self._lock:
            if len(self._rows) >= _KEPT:
                self.lost += 1  # the queued rows stay as they are: the writer may be writing them
            else:
                self._rows.append(row)
        self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then close the database."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        if self._rows:
            self._say(f"history: {len(self._rows)} sessions were not written to {self.store.name}")
        try:
            self.store.close()
        except Exception:  # noqa: BLE001 - closing a broken connection: nothing left to lose
            pass

    def _run(self) -> None:
        rows = self._rows
        while True:
            # While the database fails, the queued rows are tried again every _RETRY seconds.
            self._wake.wait(_RETRY if rows and self._failing else None)
            self._wake.clear()
            if not self._closing and not self._failing:
                time.sleep(_LINGER)  # a burst of sessions goes in one transaction
            while rows:
                with self._lock:
                    batch = [rows[i] for i in range(min(_BATCH, len(rows)))]
                if not self._write(batch):
                    break
                with self._lock:
                    for _ in batch:
                        rows.popleft()
            if self._closing:
                return

    def _write(self, batch: list[tuple[Any, ...]]) -> bool:
        try:
            self.store.add(batch)
        except (HistoryError, OSError, Exception) as exc:  # noqa: BLE001 - any database error: never fatal
            if not self._failing:
                self._failing = True
                self._say(f"history: cannot write to {self.store.name}: {exc}; the server goes on, and "
                          f"tries again every {_RETRY:g} s (said once)")
            return False
        self.written += len(batch)
        if self._failing:
            self._failing = False
            lost = f" ({self.lost} sessions were let go)" if self.lost else ""
            self._say(f"history: writing to {self.store.name} again{lost}")
        return True

    def _say(self, text: str) -> None:
        print(line(f"tftpdiag: {text}"), file=self._errors, flush=True)
