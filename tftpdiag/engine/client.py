"""One client transfer (download or upload) over a real UDP socket, on a worker thread or the caller's
own: the request, its set-up and its outcome. The loop that drives the machine is engine/client_loop.py.

A download is kept only when it completes (and has the expected SHA-256, if one was given): it is
written to a temporary file beside the target and renamed over it at the end, with the mode the file
it replaces had, or the umask's for a new one. Without a target it is only hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tftpdiag.engine import broken
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client_loop import ClientLoop
from tftpdiag.engine.files import HashingSink, HashingSource, feed_sender, store_received
from tftpdiag.engine.net import normalise, resolve, udp_socket
from tftpdiag.engine.partfiles import create_part, set_final_mode, written_through
from tftpdiag.engine.spin import BUSY_POLL
from tftpdiag.protocol.client import ClientRead, ClientWrite
from tftpdiag.protocol.events import (
    Address,
    Completed,
    Event,
    Failed,
    Role,
    Side,
    TransferStarted,
    TransferStats,
)
from tftpdiag.protocol.netascii import netascii_size
from tftpdiag.protocol.options import Negotiated, RequestedOptions
from tftpdiag.protocol.packets import Options
from tftpdiag.protocol.session import StorageError
from tftpdiag.protocol.timer import Timing
from tftpdiag.records import record

if TYPE_CHECKING:
    from tftpdiag.engine.impair import ImpairSpec

__all__ = ["ClientRequest", "ClientOutcome", "ClientTransfer", "TransferSetupError"]


class TransferSetupError(Exception):
    """The transfer could not start: a name that does not resolve, a missing local file, ..."""


@record
class ClientRequest:
    """What a probe or put asks for, as the command line gave it."""

    host: str
    filename: str  # the name on the server
    port: int = 69
    upload: bool = False
    mode: str = "octet"
    options: RequestedOptions = field(default_factory=RequestedOptions)
    # A client gains little by dallying after its final ACK (a lost one only makes the server log a
    # timeout), so by default it does not; a caller that wants RFC 1350's linger sets Timing.dally.
    timing: Timing = field(default_factory=lambda: Timing(dally=0.0))
    family: int = 0  # socket.AF_INET, socket.AF_INET6, or 0 for either
    output: Path | None = None  # where a download is kept; None: hash only
    stdout: bool = False  # the download goes to this process's stdout as it comes (-o -), not to ``output``
    source: Path | None = None  # what an upload sends
    deadline: float | None = None  # seconds for the whole transfer
    impair: ImpairSpec | None = None  # fault injection between the socket and the machine
    busy_poll: float = BUSY_POLL  # seconds to spin for a fast reply before sleeping (0: never)
    offload: bool = True  # windows leave and arrive in one system call each (UDP GSO/GRO, Linux)
    max_size: int | None = None  # most bytes a download may bring (ERROR 3 past it); None: no limit
    enough: int | None = None  # a download is cancelled (ERROR 0) past this many bytes: all it needs
    expected_sha256: str | None = None  # a download with another digest is not kept at ``output``


@record
class ClientOutcome:
    """How a client transfer ended, with the file's digest and what was negotiated."""

    session: int
    result: Completed | Failed
    sha256: str  # of the file's bytes as received (download) or as read (upload)
    requested: Options
    negotiated: Negotiated
    server: Address  # where the request was sent
    peer: Address | None  # who answered (None: nobody did)
    local: Address
    output: Path | None
    # The file's bytes as stored (download) or read (upload): what sha256 covers. In netascii they are
    # not the bytes on the wire (result.stats.bytes): line ends travel as CR LF.
    file_bytes: int = 0

    @property
    def ok(self) -> bool:
        return isinstance(self.result, Completed)


def _no_address(server: Address) -> Address:
    """The local address of a transfer that never had a socket: the wildcard of the server's family."""
    return ("::" if ":" in server[0] else "0.0.0.0", 0)


def _source_address(family: int, server: Address) -> str:
    """The local address the kernel would use towards ``server`` (so traces show real addresses)."""
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect(server)
        return probe.getsockname()[0]
    except OSError:
        return "::" if family == socket.AF_INET6 else "0.0.0.0"
    finally:
        probe.close()


def _output_kind(path: Path) -> str:
    """What -o names: "file" (a regular file, or nothing yet: written beside it, then put in place),
    "directory", or "stream" (a device or a pipe, /dev/null the common one: written straight into).

    Why: a temporary file put in place over /dev/null (as root, /dev is writable) replaced the device
    with the download, for every program on the machine."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return "file" if stat.S_ISREG(mode) else "stream"


def _check_output(out: Path) -> None:
    """Raise TransferSetupError unless a download can be kept at ``out`` (see _output_kind)."""
    kind = _output_kind(out)
    if kind == "directory":
        raise TransferSetupError(f"cannot write {out}: it is a directory (name a file in it)")
    if kind == "stream":
        if not os.access(out, os.W_OK):
            raise TransferSetupError(f"cannot write {out}: permission denied")
        return
    out = written_through(out)  # a link is written through: the directory that matters is its file's
    if not out.parent.is_dir():
        raise TransferSetupError(f"cannot write {out}: no such directory {out.parent}")
    if not os.access(out.parent, os.W_OK):
        raise TransferSetupError(f"cannot write {out}: {out.parent} is not writable")


class ClientTransfer:
    """Set up with :meth:`__init__` (which raises TransferSetupError for user mistakes), then
    :meth:`run` here or :meth:`start` on a worker thread and :meth:`wait`."""

    def __init__(self, request: ClientRequest, bus: EventBus | None = None, *, runs: bool = False) -> None:
        """``runs``: publish DATA and ACK as PacketRun columns (protocol/runs.py), for a transfer whose
        events cross to another process (engine/apart.py)."""
        self.request = request
        self.runs = runs
        self.bus = bus or EventBus()
        self.session_id = self.bus.new_session_id()
        try:
            self.family, self.server = resolve(request.host, request.port, request.family)
        except Exception as exc:
            raise TransferSetupError(str(exc)) from None
        if request.upload:
            if request.source is None:
                raise TransferSetupError("an upload needs a local file")
            try:
                # Not a with-block: the transfer owns the file past this call (run() or close() closes it).
                self._upload_file: BinaryIO | None = open(request.source, "rb")  # noqa: SIM115
            except OSError as exc:
                raise TransferSetupError(f"cannot read {request.source}: {exc.strerror}") from None
            if not os.path.isfile(request.source):
                self._upload_file.close()
                raise TransferSetupError(f"{request.source} is not a regular file")
        else:
            self._upload_file = None
            if request.output is not None:
                _check_output(request.output)
        self._cancel = threading.Event()
        self._cancel_reason = "cancelled by the user"
        self._done = threading.Event()
        self._outcome: ClientOutcome | None = None
        self._thread: threading.Thread | None = None
        self.machine: ClientRead | ClientWrite | None = None
        self._sink: HashingSink | None = None
        self._hashing: HashingSink | HashingSource | None = None  # what hashes the file, and counts it
        # The engine's half of the machine (engine/files.py): feeds a sender, stores what a receiver took.
        self._files: Callable[[float], bool] = lambda now: False

    # -- control ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Let go of what the constructor opened, for a transfer that will not run here (engine/apart.py)."""
        if self._upload_file is not None:
            self._upload_file.close()

    def start(self) -> ClientTransfer:
        self._thread = threading.Thread(target=self.run, name=f"tftp-client-{self.session_id}", daemon=True)
        self._thread.start()
        return self

    def cancel(self, reason: str = "cancelled by the user") -> None:
        """Stop as soon as possible; the peer is sent ERROR 0 with ``reason``."""
        self._cancel_reason = reason
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> ClientOutcome | None:
        """The outcome once the transfer has completed or failed (before any dally ends)."""
        self._done.wait(timeout)
        return self._outcome

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker thread itself, dally included."""
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the work ----------------------------------------------------------------------------------

    def run(self) -> ClientOutcome:
        req = self.request
        sock: socket.socket | None = None
        self._temp: BinaryIO | None = None
        self._temp_path = ""
        self._final: Path | None = None  # where the part file goes when the download is kept
        try:
            local_ip = _source_address(self.family, self.server)
            sock = udp_socket(self.family, (local_ip, 0))
            local = normalise(sock.getsockname())
            now = time.time()
            if req.upload:
                assert self._upload_file is not None
                source = HashingSource(self._upload_file)
                size = os.fstat(self._upload_file.fileno()).st_size
                if req.mode == "netascii":
                    size = _netascii_file_size(self._upload_file)
                writer = ClientWrite(self.session_id, filename=req.filename, server=self.server, local=local,
                                     size=size, now=now, mode=req.mode, options=req.options, timing=req.timing)
                machine: ClientRead | ClientWrite = writer
                self._files = partial(feed_sender, writer, source)
                self._digest = source.hash
                self._hashing = source
            else:
                if req.stdout:  # a descriptor of its own: closing it when done leaves stdout open
                    sys.stdout.flush()
                    self._temp = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
                elif req.output is not None and _output_kind(req.output) == "stream":
                    self._temp = open(req.output, "wb")  # noqa: SIM115 - closed in _finalise or below
                elif req.output is not None:
                    self._final = written_through(req.output)
                    fd, self._temp_path = create_part(self._final)
                    self._temp = os.fdopen(fd, "wb")
                sink = self._sink = HashingSink(self._temp)
                reader = ClientRead(self.session_id, filename=req.filename, server=self.server, local=local,
                                    now=now, mode=req.mode, options=req.options, timing=req.timing,
                                    max_bytes=req.max_size, enough=req.enough)
                machine = reader
                self._files = partial(store_received, reader, sink)
                self._digest = sink.hash
                self._hashing = sink
            self.machine = machine
            self._drive(sock, machine, now)
            if self._outcome is None:
                self._finalise(machine)
            assert self._outcome is not None
            return self._outcome
        except Exception as exc:  # noqa: BLE001 - whatever it was, the outcome says so (see _broken)
            self._outcome = self._broken(exc, sock)
            return self._outcome
        finally:
            if sock is not None:
                sock.close()
            if self._temp is not None:
                with contextlib.suppress(OSError):
                    self._temp.close()
                if self._temp_path:  # never the output itself (a device, a pipe)
                    with contextlib.suppress(OSError):
                        os.unlink(self._temp_path)
            if self._upload_file is not None:
                self._upload_file.close()
            self._done.set()

    def _broken(self, exc: Exception, sock: socket.socket | None) -> ClientOutcome:
        """The outcome of a transfer stopped by what nothing here expected (engine/broken.py): the
        download's directory made read-only mid-transfer, no descriptor left for the socket, a bug of
        ours. Before, the thread ended with no outcome, and a caller waiting for one (the headless loop,
        the view) waited for ever, the headless loop at 100% CPU."""
        now = time.time()
        machine = self.machine
        message = broken.reason(exc)
        if machine is not None and not machine.state.finished:
            machine.broken(now, message, broken.TOLD_BY_CLIENT, broken.kind(exc))
            for datagram, addr in machine.datagrams_to_send():
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.sendto(datagram, addr)
            self.bus.publish(machine.events())  # its ERROR, and its result with the whole reason
            result = machine.result
        else:  # it stopped before it began, or after it ended (keeping the file): its result is this
            zero = TransferStats(0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0)
            result = Failed(self.session_id, now, broken.kind(exc), Side.LOCAL, None, message,
                            machine.stats(now) if machine is not None else zero)
            began: list[Event] = []
            if machine is None:  # the record learns what was asked of whom, as for any transfer
                req = self.request
                role = Role.CLIENT_WRITE if req.upload else Role.CLIENT_READ
                began.append(TransferStarted(self.session_id, now, role, req.filename, req.mode,
                                             _no_address(self.server), self.server, ()))
            self.bus.publish([*began, result])
        assert isinstance(result, Failed)
        digest = getattr(self, "_digest", None)  # (None: it stopped before the file was opened)
        return ClientOutcome(
            session=self.session_id, result=result, sha256=(digest or hashlib.sha256()).hexdigest(),
            requested=machine.request.options if machine is not None else (),
            negotiated=machine.negotiated if machine is not None else Negotiated(), server=self.server,
            peer=machine.peer if machine is not None and machine.locked else None,
            local=machine.local if machine is not None else _no_address(self.server), output=None,
            file_bytes=self._hashing.size if self._hashing is not None else 0)

    def _finalise(self, machine: ClientRead | ClientWrite) -> None:
        """Keep or drop the download and publish the outcome, as soon as the transfer has ended.

        A completed download is whole before the machine's dally ends (dallying only repeats ACKs).
        One whose SHA-256 is not the expected one is dropped like a failed one: it never appears at
        the output path, and a file already there stays as it was.
        """
        result = machine.result
        assert result is not None
        stored = True
        if self._sink is not None and isinstance(machine, ClientRead):
            try:
                # Nothing is left for a completed download (it was stored before the final ACK); a failed
                # one's last blocks still count in its digest.
                self._sink.store(machine.received())
            except StorageError:
                stored = False
        output = None
        temp, self._temp = self._temp, None
        if temp is not None and not self._temp_path:  # a device or a pipe, written as the data came
            expected = self.request.expected_sha256
            keep = stored and isinstance(result, Completed) and (
                expected is None or self._digest.hexdigest() == expected.lower())
            try:
                temp.close()
            except OSError:
                keep = False
            output = self.request.output if keep else None
        elif temp is not None:
            expected = self.request.expected_sha256
            final = self._final  # never None here: the part file was made beside it
            keep = stored and isinstance(result, Completed) and (
                expected is None or self._digest.hexdigest() == expected.lower())
            try:
                if keep and final is not None:
                    set_final_mode(temp.fileno(), final)
                try:
                    temp.close()
                except OSError:
                    keep = False
                if keep and final is not None:
                    os.replace(self._temp_path, final)
                    output = self.request.output  # the name the user gave, a link's too
            finally:
                if output is None:
                    with contextlib.suppress(OSError):
                        os.unlink(self._temp_path)
        self._outcome = ClientOutcome(
            session=self.session_id, result=result, sha256=self._digest.hexdigest(),
            requested=machine.request.options,
            negotiated=machine.negotiated, server=self.server,
            peer=machine.peer if machine.locked else None, local=machine.local, output=output,
            file_bytes=self._hashing.size if self._hashing is not None else 0)
        self._done.set()

    def _drive(self, sock: socket.socket, machine: ClientRead | ClientWrite, now: float) -> None:
        req = self.request
        ClientLoop(sock, machine, bus=self.bus, session=self.session_id, server=self.server, impair=req.impair,
                   offload=req.offload, windowed=bool(req.options.windowsize), busy_poll=req.busy_poll,
                   deadline=req.deadline, files=self._files, cancel=self._cancel,
                   cancel_reason=lambda: self._cancel_reason, on_finished=lambda: self._finished(machine),
                   runs=self.runs).run(now)

    def _finished(self, machine: ClientRead | ClientWrite) -> None:
        if self._outcome is None:
            self._finalise(machine)


def _netascii_file_size(file: BinaryIO) -> int:
    """Size of the file as it will travel in netascii (each CR and LF gains a byte)."""
    size = 0
    while chunk := file.read(1 << 20):
        size += netascii_size(chunk)
    file.seek(0)
    return size


