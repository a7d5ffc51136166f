"""``serve --log FILE``: each finished or refused session appended to FILE as one JSON line, the same
object ``serve --json`` prints. SIGHUP reopens the file, so logrotate (or a rename by hand) can move it
away: the lines after the signal go to a new FILE, none are lost or split.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

from tftpdiag.fmt import json_line, line
from tftpdiag.served import Served

__all__ = ["JsonLog", "LogSetupError"]


class LogSetupError(Exception):
    """The log file cannot be opened at start: one line for the user."""


class JsonLog:
    def __init__(self, path: Path, *, errors: TextIO | None = None) -> None:
        self.path = path
        self._errors = errors or sys.stderr
        self._lock = threading.Lock()  # a reopen (on its own thread) never cuts a line in two
        self._failed = False  # said once; said again only after it worked in between
        try:
            self._file: TextIO | None = self._open()
        except OSError as exc:
            raise LogSetupError(f"cannot open the log {path}: {exc.strerror or exc}") from None

    def _open(self) -> TextIO:
        return open(self.path, "a", encoding="utf-8")

    def add(self, session: Served) -> None:
        text = json_line(session.obj) + "\n"  # ASCII: every character from the network escaped
        with self._lock:
            try:
                if self._file is None:
                    self._file = self._open()
                self._file.write(text)
                self._file.flush()
                self._failed = False
            except OSError as exc:
                self._trouble(f"cannot write to the log {self.path}: {exc.strerror or exc}")

    def reopen(self) -> None:
        """Close the file and open FILE anew (it may have been renamed away)."""
        with self._lock:
            self._close_file()
            try:
                self._file = self._open()
            except OSError as exc:
                self._trouble(f"cannot reopen the log {self.path}: {exc.strerror or exc}; trying again "
                              "at the next session")

    def on_sighup(self) -> None:
        """Reopen on SIGHUP (the main thread must call this). The handler hands the work to a thread:
        a handler runs between two steps of whatever the main thread was doing, perhaps inside
        :meth:`add` holding the lock."""
        def handler(signum: int, frame: object) -> None:
            threading.Thread(target=self.reopen, name="log-reopen", daemon=True).start()

        signal.signal(signal.SIGHUP, handler)

    def close(self) -> None:
        with self._lock:
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # a full disk refuses the last flush: nothing more to do about it
                pass
            self._file = None

    def _trouble(self, text: str) -> None:
        if not self._failed:
            self._failed = True
            print(line(f"tftpdiag: {text}"), file=self._errors, flush=True)
