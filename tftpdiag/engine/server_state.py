"""What the server keeps: its configuration, its listening sockets and its sessions, and what its poller
(engine/poller.py) and its driver's held datagrams (engine/driver.py) point at. engine/server.py runs the
loop over them; engine/server_requests.py turns a request into a session or a refusal."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tftpdiag.engine.driver import OnError, Send
from tftpdiag.engine.files import UploadSink
from tftpdiag.engine.offload import DatagramWriter
from tftpdiag.engine.spin import BUSY_POLL
from tftpdiag.protocol.events import Address
from tftpdiag.protocol.options import ServerPolicy
from tftpdiag.protocol.server import GIVE_UP
from tftpdiag.protocol.session import Session
from tftpdiag.protocol.steady import Steady
from tftpdiag.protocol.timer import Timing
from tftpdiag.records import record

if TYPE_CHECKING:
    from tftpdiag.engine.impair import ImpairSpec

__all__ = ["ServerConfig", "ServerSetupError", "SERVE_TIMING"]

SERVE_TIMING = Timing(give_up=GIVE_UP)  # a session keeps a silent client a minute (see GIVE_UP)


class ServerSetupError(Exception):
    """The server cannot start: said in one line a user can act on."""


@record
class ServerConfig:
    """How serve runs: root, addresses, what it allows, its option policy and limits."""

    root: Path
    bind: tuple[str, ...] = ("0.0.0.0", "::")
    port: int = 69
    allow_upload: bool = False
    allow_overwrite: bool = False
    single_port: bool = False
    policy: ServerPolicy = field(default_factory=ServerPolicy)
    timing: Timing = SERVE_TIMING
    max_sessions: int | None = None  # None: as many as the open-file limit allows (admission.py)
    waiting_room: int = 4096  # requests that wait for a free session when all are taken, not refused
    inherited: tuple[socket.socket, ...] = ()  # sockets already bound (systemd socket activation): no bind
    idle_timeout: float = 120.0  # a session with no datagram from its client for this long is ended
    impair: ImpairSpec | None = None  # fault injection between the sockets and the sessions
    busy_poll: float = BUSY_POLL  # seconds to spin for the next datagram before sleeping (0: never)
    offload: bool = True  # a window leaves in one system call (UDP GSO, Linux); off under impair


@dataclass(eq=False)
class _Listener:
    """A socket the server listens on."""

    sock: socket.socket
    local: Address
    family: int


@dataclass(eq=False)
class _Active:
    """A session the server runs: its machine, socket and file."""

    machine: Session
    sock: socket.socket
    own_socket: bool
    client: Address
    request_raw: bytes
    last_heard: float
    file: BinaryIO | None = None
    upload: UploadSink | None = None
    target: Path | None = None
    finalised: bool = False
    offload: bool = True
    mapped: bool = False  # answers from a dual-stack IPv6 listener to an IPv4 client (see driver.wire_address)
    # Anything but a request heard from the client since: a session without it is half-open (perhaps a
    # forged source address) and gives its place up to a new request when the server is full.
    heard: bool = False

    # The engine's half of the machine (engine/files.py): feeds a sender, stores what a receiver took;
    # True when that gave the machine something to send.
    files: Callable[[float], bool] | None = None
    # Lock-step on a socket of its own, not impaired: the machine records runs, and its steady turns are
    # taken without it (protocol/steady.py) by ``steady``, while there is one (TftpServer._read_session).
    steadies: bool = False
    steady: Steady | None = None
    read: Callable[[int], tuple[bytes, tuple]] | None = None  # recvfrom, for steady runs (TftpServer._steady_run)
    set_wait: Callable[[float], None] | None = None  # the socket's receive timeout, likewise

    def __post_init__(self) -> None:
        self.writer = DatagramWriter(self.sock, self.offload)
        # How the machine's datagrams leave: the writer's, unless the driver says otherwise (TftpServer._add),
        # and who hears of a send that failed (TftpServer._add: made once, not per datagram).
        self.send: Send = self.writer.send
        self.send_failed: OnError = _unheard


# What the poller reports for each ready socket: what reads it (the listener's, a session's, or the wake-up
# socket's reader), so that the loop calls it without first asking which kind of socket it is.
_PollData = Callable[[], None]


def _unheard(dest: Address, exc: OSError) -> None:
    """A session's send failures before TftpServer._add gives it its own handler: none are sent before."""
# Where an arriving datagram the impairer held goes when it falls due: to a session, or to a listener (with
# the address it was sent to).
_HeldIn = _Active | tuple[_Listener, "str | None"]
