"""engine/files.py: the file work the machines leave to the engine, and errno -> TFTP ERROR."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest

from tftpdiag.engine.files import (
    FileSource,
    HashingSink,
    HashingSource,
    UploadSink,
    storage_error,
)
from tftpdiag.engine.partfiles import create_part
from tftpdiag.protocol.packets import ErrorCode
from tftpdiag.protocol.session import StorageError


@pytest.mark.parametrize(("number", "code", "text"), [
    (errno.ENOSPC, ErrorCode.DISK_FULL, "disk full: "),
    (errno.EDQUOT, ErrorCode.DISK_FULL, "disk full: "),
    (errno.EFBIG, ErrorCode.DISK_FULL, "disk full: "),
    (errno.EEXIST, ErrorCode.FILE_EXISTS, "file already exists"),
    (errno.EACCES, ErrorCode.ACCESS_VIOLATION, "access violation: "),
    (errno.EPERM, ErrorCode.ACCESS_VIOLATION, "access violation: "),
    (errno.EIO, ErrorCode.NOT_DEFINED, "local I/O error: "),
])
def test_errno_becomes_the_tftp_error(number, code, text):
    error = storage_error(OSError(number, os.strerror(number)))
    assert error.code == code and error.message.startswith(text)
    if number != errno.EEXIST:
        assert os.strerror(number) in error.message


class Broken(io.BytesIO):
    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def read(self, size: int | None = -1) -> bytes:
        raise OSError(self.number, os.strerror(self.number))

    def write(self, data) -> int:  # type: ignore[override]
        raise OSError(self.number, os.strerror(self.number))

    def flush(self) -> None:
        raise OSError(self.number, os.strerror(self.number))


def test_sources_raise_storage_errors_and_hash_what_they_read():
    with pytest.raises(StorageError) as caught:
        FileSource(Broken(errno.EIO)).read(512)  # type: ignore[arg-type]
    assert caught.value.code == ErrorCode.NOT_DEFINED
    source = HashingSource(io.BytesIO(b"abc" * 1000))  # type: ignore[arg-type]
    assert source.read(1000) + source.read(5000) == b"abc" * 1000
    assert source.hash.hexdigest() == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_hashing_sink_writes_at_flush_and_commit_reports_a_full_disk():
    kept = io.BytesIO()
    sink = HashingSink(kept)  # type: ignore[arg-type]
    sink.write(b"one")
    sink.write(b"two")
    assert kept.getvalue() == b""  # nothing until the engine flushes, after the ACK left
    sink.commit()
    assert kept.getvalue() == b"onetwo" and sink.hash.hexdigest() == hashlib.sha256(b"onetwo").hexdigest()
    full = HashingSink(Broken(errno.ENOSPC))  # type: ignore[arg-type]
    full.write(b"x")
    with pytest.raises(StorageError) as caught:
        full.commit()
    assert caught.value.code == ErrorCode.DISK_FULL


def test_upload_sink_puts_the_file_in_place_or_refuses_to_clobber(tmp_path: Path):
    target = tmp_path / "up.bin"
    fd, temp = create_part(target)
    sink = UploadSink(os.fdopen(fd, "wb"), temp, target, overwrite=False)
    sink.write(b"data")
    sink.commit()
    assert target.read_bytes() == b"data" and not os.path.exists(temp)
    fd, temp = create_part(target)
    second = UploadSink(os.fdopen(fd, "wb"), temp, target, overwrite=False)
    second.write(b"other")
    with pytest.raises(StorageError) as caught:
        second.commit()  # another upload of the same name finished first
    assert caught.value.code == ErrorCode.FILE_EXISTS
    second.discard()
    assert target.read_bytes() == b"data" and not os.path.exists(temp)


def test_upload_sink_write_failure_is_a_storage_error(tmp_path: Path):
    sink = UploadSink(Broken(errno.ENOSPC), str(tmp_path / "x.part"), tmp_path / "x", overwrite=True)  # type: ignore[arg-type]
    with pytest.raises(StorageError) as caught:
        sink.write(b"x")
    assert caught.value.code == ErrorCode.DISK_FULL
