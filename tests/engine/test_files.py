"""engine/files.py: the file work the machines leave to the engine (feeding a sender, storing what a
receiver took and committing it before the final ACK), and errno -> TFTP ERROR."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest

from tests.support.machines import CLIENT, SERVER, TID, data, sent_packets
from tftpdiag.engine.files import (
    FileSource,
    HashingSink,
    HashingSource,
    UploadSink,
    feed_sender,
    storage_error,
    store_received,
)
from tftpdiag.engine.partfiles import create_part
from tftpdiag.protocol import events as ev
from tftpdiag.protocol.client import ClientRead
from tftpdiag.protocol.packets import Ack, Data, Error, ErrorCode, Opcode, Request, encode
from tftpdiag.protocol.server import ServerRead
from tftpdiag.protocol.session import State, StorageError


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


def test_hashing_sink_hashes_and_writes_what_is_stored_and_reports_a_full_disk():
    kept = io.BytesIO()
    sink = HashingSink(kept)  # type: ignore[arg-type]
    sink.store([b"one", b"two"])
    sink.commit()
    assert kept.getvalue() == b"onetwo" and sink.hash.hexdigest() == hashlib.sha256(b"onetwo").hexdigest()
    full = HashingSink(Broken(errno.ENOSPC))  # type: ignore[arg-type]
    with pytest.raises(StorageError) as caught:
        full.store([b"x"])
    assert caught.value.code == ErrorCode.DISK_FULL
    with pytest.raises(StorageError) as caught:
        full.commit()
    assert caught.value.code == ErrorCode.DISK_FULL


class Watching:
    """A sink that records, at commit, whether the machine had already let its final ACK go."""

    def __init__(self, machine: ClientRead, fail: bool = False) -> None:
        self.machine, self.fail, self.data = machine, fail, b""
        self.acked_before_commit: bool | None = None

    def store(self, chunks: list[bytes]) -> None:
        self.data += b"".join(chunks)

    def commit(self) -> None:
        self.acked_before_commit = any(isinstance(e, ev.PacketSent) and e.packet == Ack(2)
                                       for e in self.machine.events())
        if self.fail:
            raise StorageError(ErrorCode.DISK_FULL, "disk full: No space left on device")


@pytest.mark.parametrize("fail", [False, True])
def test_the_file_is_committed_before_the_final_ack(fail):
    machine = ClientRead(1, filename="f", server=SERVER, local=CLIENT, now=0.0)
    sink = Watching(machine, fail)
    machine.datagrams_to_send()  # the RRQ
    machine.receive(data(1, bytes(512)), TID, 0.01)
    assert store_received(machine, sink, 0.01) is False  # only stored: nothing new to send
    machine.receive(data(2, b"end"), TID, 0.02)
    assert machine.state is State.STORING and sent_packets(machine) == [Ack(1)]
    assert store_received(machine, sink, 0.02) is True
    assert sink.acked_before_commit is False and sink.data == bytes(512) + b"end"
    if fail:
        assert sent_packets(machine) == [Error(ErrorCode.DISK_FULL, "disk full: No space left on device")]
        assert isinstance(machine.result, ev.Failed) and machine.result.reason is ev.Reason.LOCAL
    else:
        assert sent_packets(machine) == [Ack(2)]
        assert isinstance(machine.result, ev.Completed)


def test_feed_sender_reads_what_the_sender_asks_and_maps_read_errors():
    request = Request(Opcode.RRQ, "f", "octet", ())
    machine = ServerRead(2, request=request, raw=encode(request), client=CLIENT, local=TID, now=0.0)
    assert feed_sender(machine, FileSource(io.BytesIO(b"abc")), 0.0) is True  # type: ignore[arg-type]
    assert sent_packets(machine) == [Data(1, b"abc")]
    assert feed_sender(machine, FileSource(io.BytesIO(b"more")), 0.0) is False  # the file had ended
    broken = ServerRead(3, request=request, raw=encode(request), client=CLIENT, local=TID, now=0.0)
    assert feed_sender(broken, FileSource(Broken(errno.EIO)), 0.0) is True  # type: ignore[arg-type]
    error = sent_packets(broken)
    assert len(error) == 1 and isinstance(error[0], Error) and error[0].code == ErrorCode.NOT_DEFINED
    assert isinstance(broken.result, ev.Failed) and "Input/output error" in broken.result.message


def test_upload_sink_puts_the_file_in_place_or_refuses_to_clobber(tmp_path: Path):
    target = tmp_path / "up.bin"
    fd, temp = create_part(target)
    sink = UploadSink(os.fdopen(fd, "wb"), temp, target, overwrite=False)
    sink.store([b"da", b"ta"])
    sink.commit()
    assert target.read_bytes() == b"data" and not os.path.exists(temp)
    fd, temp = create_part(target)
    second = UploadSink(os.fdopen(fd, "wb"), temp, target, overwrite=False)
    second.store([b"other"])
    with pytest.raises(StorageError) as caught:
        second.commit()  # another upload of the same name finished first
    assert caught.value.code == ErrorCode.FILE_EXISTS
    second.discard()
    assert target.read_bytes() == b"data" and not os.path.exists(temp)


def test_upload_sink_write_failure_is_a_storage_error(tmp_path: Path):
    sink = UploadSink(Broken(errno.ENOSPC), str(tmp_path / "x.part"), tmp_path / "x", overwrite=True)  # type: ignore[arg-type]
    with pytest.raises(StorageError) as caught:
        sink.store([b"x"])
    assert caught.value.code == ErrorCode.DISK_FULL
