"""The file work of a transfer, which the protocol machines leave to the engine: where the data to send
comes from and where the data received goes, hashing, putting an upload in place, and turning what
the operating system says (errno) into the TFTP ERROR the peer is told.

The machines never call these: a sender asks for bytes (``prefetch()`` returns how many) and is fed
them, a receiver hands over what it took (``received()``) and waits, STORING, for its file to be put in
place before its final ACK. :func:`feed_sender` and :func:`store_received` are the engine's half of
that exchange, run after the machine's datagrams have been sent; they turn OSError into the
:class:`StorageError` a machine understands.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Protocol

from tftpdiag.engine.partfiles import set_final_mode
from tftpdiag.protocol.packets import ErrorCode
from tftpdiag.protocol.receiver import Receiver
from tftpdiag.protocol.said import READER_GONE
from tftpdiag.protocol.sender import Sender
from tftpdiag.protocol.session import State, StorageError

__all__ = ["storage_error", "feed_sender", "store_received", "Readable", "Storage", "FileSource", "HashingSource",
           "HashingSink", "UploadSink"]

# What a write to a pipe or FIFO whose reader closed it (EPIPE: -o - | head) is called: no disk or
# permission is at fault. The findings (local-error) and the headless run (exit 141) know it by these words.

_STORING = State.STORING


class Readable(Protocol):
    """Where a sender's bytes come from: ``read`` returns up to ``size`` bytes, fewer only at the end
    (or as a pipe does, until one returns nothing), and raises StorageError when it cannot."""

    def read(self, size: int = -1, /) -> bytes: ...


class Storage(Protocol):
    """Where a receiver's bytes go. Both raise StorageError when the data cannot be kept."""

    def store(self, chunks: list[bytes], /) -> None:
        """The next bytes of the file, in order."""

    def commit(self) -> None:
        """All of it has arrived: keep it for good, before the final ACK tells the peer it succeeded."""


def feed_sender(machine: Sender, source: Readable, now: float) -> bool:
    """Give a sender the bytes it asks for (and let it encode its next window meanwhile). True when it
    has DATA (or an ERROR) to send now: it was waiting for these bytes."""
    want = machine.prefetch()
    if not want:
        return False
    try:
        data = source.read(want)
        while 0 < len(data) < want:  # a short read is not the end until a read returns nothing
            more = source.read(want - len(data))
            if not more:
                break
            data += more
    except StorageError as exc:
        # What this read took is dropped with it: sending it would shift the bytes after the failure.
        return machine.read_failed(now, exc)
    return machine.feed(data, now, eof=len(data) < want)


def store_received(machine: Receiver, sink: Storage, now: float) -> bool:
    """Store what a receiver took; once it has the last block, commit the file and let it send its final
    ACK. True when it has something to send now (that ACK, or the ERROR saying the storing failed)."""
    chunks = machine.received()
    try:
        if chunks:
            sink.store(chunks)
        if machine.state is not _STORING:  # (the property costs a call per datagram)
            return False
        sink.commit()
    except StorageError as exc:
        machine.local_error(now, exc)
        return True
    machine.stored(now)
    return True


def storage_error(exc: OSError) -> StorageError:
    """The TFTP ERROR that tells the peer about a local failure to read or store its data."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageError(ErrorCode.DISK_FULL, f"disk full: {exc.strerror}")
    if exc.errno == errno.EEXIST:
        return StorageError(ErrorCode.FILE_EXISTS, "file already exists")
    if exc.errno == errno.EPIPE:
        return StorageError(ErrorCode.NOT_DEFINED, f"{READER_GONE} (broken pipe)")
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
    """A file being uploaded, hashed and counted as it is read."""

    __slots__ = ("hash", "size")

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.hash = hashlib.sha256()
        self.size = 0  # the file's bytes read: what the hash covers (netascii travels larger)

    def read(self, size: int = -1) -> bytes:
        data = FileSource.read(self, size)
        self.hash.update(data)
        self.size += len(data)
        return data


class HashingSink:
    """A download, hashed and written as the engine stores what the machine took (after the ACK that
    answered it has gone out: in lock-step the ACK's latency is the transfer's speed). Without a file the
    data is only hashed."""

    __slots__ = ("hash", "file", "size")

    def __init__(self, file: BinaryIO | None) -> None:
        self.hash = hashlib.sha256()
        self.file = file
        self.size = 0  # the file's bytes stored: what the hash covers (netascii arrives larger)

    def store(self, chunks: list[bytes]) -> None:
        # One buffer: the hash then runs without the interpreter lock, so the thread folding the event
        # stream can use it meanwhile.
        data = b"".join(chunks)
        self.hash.update(data)
        self.size += len(data)
        if self.file is not None:
            try:
                self.file.write(data)
            except OSError as exc:  # the disk is full, or the file over RLIMIT_FSIZE
                raise storage_error(exc) from exc

    def commit(self) -> None:
        """Before the final ACK: what the disk refuses (full, over a size limit) then still reaches the
        server as an ERROR, and the download fails instead of seeming done."""
        if self.file is not None:
            try:
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

    def store(self, chunks: list[bytes]) -> None:
        try:
            self.file.write(b"".join(chunks))
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
