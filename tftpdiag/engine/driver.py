"""Between a socket and a protocol machine: what the client's loop (engine/client_loop.py) and the
server's (engine/server.py) both do with a datagram, written once.

- **Out**: a machine's datagrams leave through :meth:`Driver.sender`: a window as one UDP GSO send
  (engine/offload.py), or one by one when the impairer decides each datagram's fate (--impair) or
  when the destination must be written as IPv4-mapped IPv6 (a dual-stack listener's IPv4 client).
- **In**: under --impair an arriving datagram passes :meth:`Driver.arrives`: handled now, later,
  twice, or never.
- **Events**: a machine's events reach the bus through :meth:`Driver.placed`, which puts the Impaired
  events of what it sent where they belong: at the time of the PacketSent each applies to, just
  before it (a recorder needs a datagram's fate before it writes the datagram), so they never come
  ahead of the packets before it (the DATA an ACK answers) nor carry the later time of the send.
- **Held**: what the impairer delays waits in :attr:`Driver.held` until :meth:`Driver.release`
  sends it (out) or hands it to the loop's ``deliver`` (in); :meth:`Driver.drain` sends what is still
  on its way out when a client ends.
- **Socket errors**: :meth:`Driver.socket_error` reads the ICMP error the kernel queued, publishes the
  SocketError event, and says what it means for the machine it is about (see there).

How the loops wait differs with the roles and stays in them: the client blocks on its one socket with a
receive timeout and spins briefly for a lock-step reply; the server polls every session's socket
(engine/poller.py) and reads one datagram per socket per turn.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Generic, TypeVar

from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.held import Held
from tftpdiag.engine.net import describe_errno, errored_destination, normalise
from tftpdiag.engine.offload import DatagramWriter
from tftpdiag.fmt import address
from tftpdiag.protocol.events import Address, Event, Impaired, PacketSent, SocketError
from tftpdiag.protocol.session import Session

if TYPE_CHECKING:
    from tftpdiag.engine.impair import Impairer, ImpairSpec

__all__ = ["Driver", "OnError", "Send", "About", "UNREACHABLE", "LOST_ON_SEND", "wire_address"]

T = TypeVar("T")  # where a held arriving datagram goes: the client needs nothing, the server a session or a listener

OnError = Callable[[Address, OSError], None]  # a send failed: (destination, error)
Send = Callable[[list[tuple[bytes, Address]], OnError], None]  # a machine's datagrams out, as DatagramWriter.send
# Who a socket error is about, given the address it blames (None: it names none): the session's id, its
# machine and its peer, or None when it is about no session.
About = Callable[[Address | None], "tuple[int, Session, Address] | None"]

# ICMP-borne errors that say the peer cannot be reached (IP_RECVERR reports them to the socket).
UNREACHABLE = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN)
# A send that fails with these was not sent, as if lost on the wire: the retransmit timer covers it.
LOST_ON_SEND = (errno.EAGAIN, errno.ENOBUFS)


def wire_address(sock: socket.socket, dest: Address) -> Address:
    """``dest`` as ``sock`` must be given it. Addresses are shown and kept as plain IPv4; an IPv6 socket
    (a dual-stack listener, from systemd) that heard an IPv4 client sends to it IPv4-mapped."""
    if sock.family == socket.AF_INET6 and ":" not in dest[0]:
        return "::ffff:" + dest[0], dest[1]
    return dest


# The most fates waiting for their PacketSent (see Driver.placed): a machine's events are placed after
# each turn, a window's at most; more means one was sent on a path that never places its events, and the
# fates after it would wait forever (rows gone, memory growing in a server impaired for days).
_FATES_MAX = 1024


class Driver(Generic[T]):
    """One per loop. ``alone``: each socket serves one session (the client's), which decides what an
    error that blames no address means (see :meth:`socket_error`); ``label`` comes before the peer's
    address in the message that ends a machine ("client " in the server's)."""

    __slots__ = ("publish", "impairer", "offload", "held", "alone", "label", "fates")

    def __init__(self, bus: EventBus, impair: ImpairSpec | None, offload: bool, *, alone: bool,
                 label: str = "") -> None:
        self.publish = bus.publish
        self.impairer: Impairer | None = None
        if impair is not None:
            from tftpdiag.engine.impair import Impairer  # loaded only for a run that asks for --impair

            self.impairer = Impairer(impair)
        # The impairer decides each datagram's fate, so under --impair they travel one by one.
        self.offload = offload and self.impairer is None
        self.held: Held[socket.socket | T] = Held()  # "out": the socket to send on; "in": where it goes
        self.alone = alone
        self.label = label
        # The Impaired events of each datagram sent, oldest first, until placed with its PacketSent.
        self.fates: deque[tuple[bytes, list[Event]]] = deque()

    # -- out ---------------------------------------------------------------------------------------

    def sender(self, sock: socket.socket, writer: DatagramWriter | None, session: int,
               mapped: bool = False) -> Send:
        """How a machine's datagrams leave ``sock``: through ``writer`` (a window in one system call), or,
        when the impairer decides each one's fate, when ``mapped`` (the session's client is IPv4 and the
        socket a dual-stack listener) or without a writer, one by one (:meth:`send_each`). Chosen once:
        a lock-step transfer sends once per block."""
        if self.impairer is None and writer is not None and not mapped:
            return writer.send
        return partial(self.send_each, sock, session)

    def send_each(self, sock: socket.socket, session: int, out: list[tuple[bytes, Address]],
                  on_error: OnError) -> None:
        """Send datagrams one by one, each through the impairer if there is one (a copy it delays is
        held), to its destination as ``sock`` needs it written; ``on_error`` hears of each failed send."""
        impairer = self.impairer
        for raw, dest in out:
            to = wire_address(sock, dest)
            if impairer is None:
                try:
                    sock.sendto(raw, to)
                except OSError as exc:
                    on_error(dest, exc)
                continue
            now = time.time()
            times, events = impairer.fate(raw, to, now, "out", session)
            if events:
                self.fates.append((raw, events))  # published with the machine's events: see placed
                if len(self.fates) > _FATES_MAX:  # one a path never placed (a bug): said as it was, not kept
                    self.publish(self.fates.popleft()[1])
            for when in times:
                if when <= now:
                    try:
                        sock.sendto(raw, to)
                    except OSError as exc:
                        on_error(dest, exc)
                else:
                    self.held.add(when, "out", raw, to, sock)

    def placed(self, events: list[Event]) -> list[Event]:
        """A machine's ``events`` (taken after what it sent went through :meth:`send_each`) with the
        Impaired events of those datagrams placed: each datagram's just before its PacketSent and at its
        time, the one the machine sent it at. The machine's datagrams and its PacketSent events come in
        the same order, so the first fate waiting belongs to the first PacketSent of its bytes."""
        fates = self.fates
        if not fates:
            return events
        out: list[Event] = []
        for event in events:
            if fates and type(event) is PacketSent and event.raw == fates[0][0]:
                at = event.time
                out += [Impaired(e.session, at, e.direction, e.action, e.peer, e.raw, e.delay, e.why)
                        for e in fates.popleft()[1] if isinstance(e, Impaired)]
            out.append(event)
        return out

    # -- in ----------------------------------------------------------------------------------------

    def arrives(self, data: bytes, addr: Address, now: float, session: int, target: T) -> bool:
        """Pass an arriving datagram through the impairer (there must be one): True when it is to be
        handled now; copies due later are held for ``target``; False when none is due now."""
        assert self.impairer is not None
        times, events = self.impairer.fate(data, addr, now, "in", session)
        self.publish(events)
        due_now = False
        for when in times:
            if when <= now:
                due_now = True
            else:
                self.held.add(when, "in", data, addr, target)
        return due_now

    # -- held --------------------------------------------------------------------------------------

    def wait(self, wait: float, now: float) -> float:
        """``wait`` shortened to when the next held datagram falls due."""
        return min(wait, self.held.next_time() - now) if self.held else wait

    def release(self, now: float, deliver: Callable[[bytes, Address, T], None]) -> None:
        """Carry out what has fallen due: a datagram on its way out is sent (a failure is as if the network
        lost it), one on its way in goes to ``deliver`` with its target."""
        for _, raw, addr, target in self.held.pop_due(now):
            if isinstance(target, socket.socket):
                with contextlib.suppress(OSError):
                    target.sendto(raw, addr)
            else:
                deliver(raw, addr, target)

    def drain(self, patience: float = 2.0) -> None:
        """Send what is still held on its way out (the ERROR that tells the peer we stopped, the final
        ACK) as late as the impairment says, not never, for at most ``patience`` seconds; what was on its
        way in is dropped."""
        held = self.held
        give_up = time.time() + patience
        while held and time.time() < give_up:
            time.sleep(max(min(held.next_time() - time.time(), 0.05), 0.0))
            self.release(time.time(), _drop)

    # -- socket errors -----------------------------------------------------------------------------

    def socket_error(self, sock: socket.socket, exc: OSError, now: float, about: About,
                     dest: Address | None = None, sending: bool = False) -> Session | None:
        """Publish a socket error and do what it means; the machine it ended, else None.

        The address it blames is the error queue's (the destination of the datagram that drew the ICMP
        error), else ``dest`` (the datagram being sent, if any). Then:

        - an ICMP unreachable about the session's peer ends the session as unreachable; one about another
          address (drawn by an ERROR 5 sent to a stray source) only shows as the event;
        - on a socket of its own (``alone``: the client's), an error that blames no address is about
          its peer, and any error that is no ICMP unreachable is a local failure: the transfer aborts
          (saying so itself, with no SocketError event);
        - on sockets a server shares among sessions (a listener in single-port mode), an error that
          blames no address ends no session, a send that failed for want of buffer space
          (``LOST_ON_SEND``) is as if lost on the wire, and any error blaming a session's client
          ends that session as unreachable.
        """
        code = exc.errno or 0
        if not self.alone and sending and code in LOST_ON_SEND:
            return None
        if self.alone and code not in UNREACHABLE:
            found = about(None)
            if found is None:
                return None
            found[1].abort(now, f"socket error: {exc.strerror or exc}")
            return found[1]
        blamed = errored_destination(sock) or dest  # reading the queue also empties it
        message = describe_errno(code)
        found = about(blamed)
        self.publish([SocketError(found[0] if found is not None else 0, now, blamed, code, message)])
        if found is None:
            return None
        _, machine, peer = found
        if blamed == peer or (blamed is None and self.alone):
            if _waiting_from(sock, peer):
                # Linux reports a socket's ICMP error before the datagrams that arrived ahead of it: the
                # peer's last word (a final ACK: a retransmitted last DATA drew the error after the client
                # had gone) is read first. A peer that is really gone draws the error again at our next send.
                return None
            machine.unreachable(now, f"{self.label}{address(peer)}: {message}")
            return machine
        return None


def _waiting_from(sock: socket.socket, peer: Address) -> bool:
    """Whether the next datagram waiting on ``sock`` (a peek: it stays) comes from ``peer``."""
    try:
        _, addr = sock.recvfrom(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return False
    return normalise(addr) == peer


def _drop(raw: bytes, addr: Address, target: object) -> None:
    """What was on its way in when the loop ended goes nowhere."""
