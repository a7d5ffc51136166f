"""The file work of a transfer, which the protocol machines leave to the engine: where the data to send
comes from and where the data received goes, hashing, putting an upload in place, and turning what
the operating system says (errno) into the TFTP ERROR the peer is told.

The machines call ``read``, ``write`` and ``commit`` on these and know only :class:`StorageError`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tftpdiag.engine.partfiles import set_final_mode
from tftpdiag.protocol.packets import ErrorCode
from tftpdiag.protocol.session import StorageError

__all__ = ["storage_error", "FileSource", "HashingSource", "HashingSink", "UploadSink"]


def storage_error(exc: OSError) -> StorageError:
    """The TFTP ERROR that tells the peer about a local failure to read or store its data."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageError(ErrorCode.DISK_FULL, f"disk full: {exc.strerror}")
    if exc.errno == errno.EEXIST:
        return StorageError(ErrorCode.FILE_EXISTS, "file already exists")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(ErrorCode.ACCESS_VIOLATION, f"access violation: {exc.strerror}")
    return StorageError(ErrorCode.NOT_DEFINED, f"local I/O error: {exc.strerror or exc}")


class FileSource:
    """A file being sent. A sender reads it many blocks at a time, so this costs a call per 64 KiB."""

    __slots__ = ("file",)

    def __init__(self, file: BinaryIO) -> None:
        self.file = file

    def read(self, size: int = -1) -> bytes:
        try:
            return self.file.read(size)
        except OSError as exc:
            raise storage_error(exc) from exc


class HashingSource(FileSource):
    """A file being uploaded, hashed as it is read."""

    __slots__ = ("hash",)

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = FileSource.read(self, size)
        self.hash.update(data)
        return data


class HashingSink:
    """A download: keeps received blocks until :meth:`flush`, so hashing and disk writes happen after the
    ACK has gone out instead of delaying it (in lock-step the ACK's latency is the transfer's speed).
    Without a file the data is only hashed."""

    __slots__ = ("hash", "file", "_pending", "write")

    def __init__(self, file: BinaryIO | None) -> None:
        self.hash = hashlib.sha256()
        self.file = file
        self._pending: list[bytes] = []
        self.write: Callable[[bytes], object] = self._pending.append  # a call per block: the cheapest there is

    def flush(self) -> None:
        """Hash and write what arrived since the last flush. Raises OSError (the engine's to report)."""
        pending = self._pending
        if pending:
            # One buffer: the hash then runs without the interpreter lock, so the thread folding the
            # event stream can use it meanwhile.
            data = b"".join(pending)
            pending.clear()
            self.hash.update(data)
            if self.file is not None:
                self.file.write(data)

    def commit(self) -> None:
        """The machine calls this before its final ACK: what the disk refuses (full, over a size limit)
        then still reaches the server as an ERROR, and the download fails instead of seeming done."""
        try:
            self.flush()
            if self.file is not None:
                self.file.flush()
        except OSError as exc:
            raise storage_error(exc) from exc


class UploadSink:
    """An upload's temporary file; :meth:`commit` puts it in place before the final ACK goes out.

    Without overwrite the target is linked, which fails (EEXIST) rather than clobber a file that
    appeared meanwhile, e.g. another client's upload of the same name that finished first. The file
    gets the mode of the one it replaces, or the umask's for a new one (so tftpd-hpa, which serves
    only world-readable files, can serve it under the usual umask 022).
    """

    def __init__(self, file: BinaryIO, temp_path: str, target: Path, overwrite: bool) -> None:
        self.file = file
        self.temp_path = temp_path
        self.target = target
        self.overwrite = overwrite
        self.committed = False

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            raise storage_error(exc) from exc

    def commit(self) -> None:
        try:
            self.file.flush()
            set_final_mode(self.file.fileno(), self.target)
            os.fsync(self.file.fileno())
            self.file.close()
            if self.overwrite:
                os.replace(self.temp_path, self.target)
            else:
                os.link(self.temp_path, self.target)
                os.unlink(self.temp_path)
        except OSError as exc:
            raise storage_error(exc) from exc
        self.committed = True

    def discard(self) -> None:
        """A transfer that did not complete leaves nothing behind, and the old file untouched."""
        with contextlib.suppress(OSError):
            self.file.close()
        if not self.committed:
            with contextlib.suppress(OSError):
                os.unlink(self.temp_path)
