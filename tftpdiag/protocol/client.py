"""Client machines: read (RRQ, download) and write (WRQ, upload)."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from tftpdiag.protocol.events import (
    Address,
    Note,
    Reason,
    RequestRetried,
    Retransmit,
    Role,
    Side,
    TransferStarted,
)
from tftpdiag.protocol.options import (
    Negotiated,
    OptionOutcome,
    RequestedOptions,
    Verdict,
    accept_oack,
    options_ignored,
    options_refused,
)
from tftpdiag.protocol.packets import (
    MAX_REQUEST_SIZE,
    Ack,
    Data,
    Error,
    ErrorCode,
    OAck,
    Opcode,
    Options,
    Packet,
    ProtocolError,
    Request,
    encode,
)
from tftpdiag.protocol.receiver import Receiver
from tftpdiag.protocol.sender import Sender
from tftpdiag.protocol.session import Session, State
from tftpdiag.protocol.timer import Timing

__all__ = ["ClientRead", "ClientWrite", "RequestError", "build_request"]

MODES = ("octet", "netascii")
_INVALID_REPLY = ("_invalid_reply", State.FAILED)  # what no server answers a request with
# Both clients' request phase alike: an ERROR refuses the request; a request is no answer to one.
_REQUEST_ANSWERED: dict[Opcode, tuple[str, State | None]] = {
    Opcode.ERROR: ("_on_refusal", None), Opcode.RRQ: _INVALID_REPLY, Opcode.WRQ: _INVALID_REPLY}


class RequestError(ValueError):
    """A request no client may send (its name, its mode, its size). The command line asks
    :func:`build_request` before it starts anything, so that a user's long or empty name is a usage
    error; the machines ask it again because they guard the wire whoever built them."""


def build_request(opcode: Opcode, filename: str, mode: str, options: RequestedOptions,
                  upload_size: int | None) -> tuple[Request, bytes]:
    """The request a client sends and its bytes, or :class:`RequestError` saying why it cannot be sent."""
    mode = mode.lower()
    if mode not in MODES:
        raise RequestError(f"mode must be octet or netascii, not {mode!r}")
    if not filename:
        raise RequestError("the file name is empty")
    if "\0" in filename:
        raise RequestError("the file name holds a NUL character, which ends it on the wire")
    request = Request(opcode, filename, mode, options.to_wire(upload_size))
    raw = encode(request)
    if len(raw) > MAX_REQUEST_SIZE:
        raise RequestError(f"file name too long: the request would take {len(raw)} bytes with its options; "
                           f"RFC 2347 allows {MAX_REQUEST_SIZE}")
    return request, raw


def fallback_options(error: Error, asked: Options) -> Options | None:
    """What to ask again with when the server answered a request asking ``asked`` with ``error``, or
    None when the ERROR does not refuse options. ERROR 8, or any ERROR whose text speaks of options or
    names one we asked: without the options it names, or without any when it names none (as UEFI
    firmware and other clients fall back)."""
    if not asked:
        return None
    text = error.message.lower()
    named = _named(error, asked)
    if error.code != ErrorCode.OPTION_REFUSED and not named and "option" not in text:
        return None
    return tuple((name, value) for name, value in asked if named and name not in named)


def _named(error: Error, asked: Options) -> set[str]:
    """The options asked that the ERROR's text names."""
    text = error.message.lower()
    return {name for name, _ in asked if re.search(rf"\b{re.escape(name.lower())}\b", text)}


def dropped_options(error: Error, asked: Options, keep: Options) -> tuple[OptionOutcome, ...]:
    """The outcomes of the options a refusal took out (``asked`` less ``keep``): each one the ERROR
    named, or, when it named none, all of them without claiming which one the server minded."""
    named = _named(error, asked)
    return tuple(OptionOutcome(name, value, None, Verdict.DROPPED, named=name in named)
                 for name, value in asked if (name, value) not in keep)


# The mixin is only ever mixed into a Session subclass (Receiver or Sender), whose attributes and
# methods it uses; the checker sees that base, while at run time the class adds nothing to the MRO.
if TYPE_CHECKING:
    _SessionBase = Session
else:
    _SessionBase = object


class _ClientMixin(_SessionBase):
    """The request phase both clients share: send, resend on timeout, lock onto the first reply, and
    ask once more without the options a server refused."""

    request: Request
    _request_raw: bytes
    _retried = False  # a refused request was asked again (once at most)
    _dropped: tuple[OptionOutcome, ...] = ()  # the options that refusal took out

    def _start(self, now: float) -> None:
        self.state = State.REQUESTING
        self._events.append(TransferStarted(self.session_id, now, self.role, self.request.filename,
                                            self.request.mode, self.local, self.peer, self.request.options))
        self._start_request(now)

    def _refused_by_peer(self, packet: Error, oack: tuple | None, now: float) -> None:
        keep = None if self._retried else fallback_options(packet, self.request.options)
        if keep is not None:
            self._ask_again(keep, packet, now)
            return
        if packet.code == ErrorCode.OPTION_REFUSED and self.request.options:
            self._set_negotiated(options_refused(self.request.options, oack), now)
        self._peer_error(packet, now)

    def _ask_again(self, keep: Options, refusal: Error, now: float) -> None:
        """A new request with only ``keep``: to the server's own port, and a new transfer on the wire
        (the server answers from a new port, so the transfer ID is locked again)."""
        asked = self.request.options
        self._retried = True
        self._dropped = dropped_options(refusal, asked, keep)
        self.request = dataclasses.replace(self.request, options=keep)
        self._request_raw = encode(self.request)
        self._events.append(RequestRetried(self.session_id, now, refusal.code, refusal.message, asked, keep))
        self.locked = False
        self.peer = self.requested_peer
        self._timer.restart()
        self._start_request(now)

    def _start_request(self, now: float) -> None:
        self._send(self.request, self._request_raw, now)
        self._timer.start_sample(now)
        self._arm(now)

    def _set_negotiated(self, negotiated: Negotiated, now: float) -> None:
        # The options a refusal took out stay in the outcomes, so every view shows what was refused.
        if self._dropped:
            negotiated = dataclasses.replace(negotiated, outcomes=self._dropped + negotiated.outcomes)
        super()._set_negotiated(negotiated, now)

    def _negotiate(self, packet: OAck, now: float) -> bool:
        """Accept or refuse the OACK; True when the transfer goes on."""
        try:
            negotiated = accept_oack(self.request.options, packet.options, is_read=self.request.is_read)
        except ProtocolError as exc:
            self._set_negotiated(options_refused(self.request.options, packet.options), now)
            self._fail(now, Reason.PROTOCOL, Side.LOCAL, exc.code, exc.message)
            return False
        self._set_negotiated(negotiated, now)
        return True

    def _invalid_reply(self, packet: Packet, raw: bytes, now: float) -> None:
        """What no server answers a request with ends the transfer."""
        self._note_received(raw, packet, self.peer, now, Note.UNEXPECTED)
        self._fail(now, Reason.PROTOCOL, Side.LOCAL, ErrorCode.ILLEGAL_OPERATION,
                   f"{packet.opcode.name} is not a valid reply to {self.request.opcode.name}")

    def _on_refusal(self, packet: Error, raw: bytes, now: float) -> None:
        """An ERROR answering the request: ask once more without the options it refused, or fail."""
        self._note_received(raw, packet, self.peer, now)
        self._refused_by_peer(packet, None, now)


class ClientRead(_ClientMixin, Receiver):
    """Download ``filename`` from ``server``; the caller stores what :meth:`received` hands it."""

    role = Role.CLIENT_READ
    TABLE = {
        State.REQUESTING: {Opcode.DATA: ("_first_data", State.TRANSFERRING),
                           Opcode.OACK: ("_on_oack", State.NEGOTIATING),
                           Opcode.ACK: _INVALID_REPLY, **_REQUEST_ANSWERED},
        State.NEGOTIATING: {Opcode.DATA: ("_on_data", State.TRANSFERRING),
                            Opcode.OACK: ("_repeated_oack", None),
                            Opcode.ERROR: ("_on_error", State.FAILED)},
        State.TRANSFERRING: {Opcode.DATA: ("_on_data", None),
                             Opcode.OACK: ("_late_oack", None),
                             Opcode.ERROR: ("_on_error", State.FAILED)},
        State.STORING: {Opcode.DATA: ("_data_while_storing", None),
                        Opcode.OACK: ("_late_oack", None),
                        Opcode.ERROR: ("_on_error", State.FAILED)},
        State.DALLYING: {Opcode.DATA: ("_data_after_end", None),
                         Opcode.OACK: ("_late_oack", None),
                         Opcode.ERROR: ("_error_after_end", None)},
    }

    def __init__(self, session_id: int, *, filename: str, server: Address, local: Address, now: float,
                 mode: str = "octet", options: RequestedOptions = RequestedOptions(),
                 timing: Timing = Timing(), max_bytes: int | None = None, enough: int | None = None) -> None:
        super().__init__(session_id, local=local, peer=server, timing=timing, now=now)
        self.request, self._request_raw = build_request(Opcode.RRQ, filename, mode, options, None)
        self._init_receiver(netascii=self.request.mode == "netascii", max_bytes=max_bytes, enough=enough)
        self._start(now)

    def _start_request(self, now: float) -> None:
        self._last_reply = (self.request, self._request_raw)  # what a timeout repeats until a reply
        super()._start_request(now)

    def _first_data(self, packet: Data, raw: bytes, now: float) -> None:
        """DATA 1 answering the RRQ: the server ignored our options (or we asked none)."""
        self._set_negotiated(options_ignored(self.request.options), now)
        self._on_data(packet, raw, now)

    def _on_oack(self, packet: OAck, raw: bytes, now: float) -> None:
        """The server's OACK: accept it (ACK 0) or refuse it."""
        self._note_received(raw, packet, self.peer, now)
        self._timer.end_sample(now)
        if self._negotiate(packet, now) and self._size_fits(now):
            self.total = self.negotiated.tsize
            # The server's tsize is the file's size: a download that ends short of it is cut (the file changed
            # as it was read, a server's read error), and fails rather than being kept, as an upload does on
            # our server; one that runs past it is stopped at once (a netascii size binds nothing).
            self._expect_exactly(self.total)
            self._progressed(now)
            self._ack(0, now)
            self._arm(now)

    def _repeated_oack(self, packet: OAck, raw: bytes, now: float) -> None:
        """The server did not hear our ACK 0 and sent its OACK again."""
        self.duplicates += 1
        self._note_received(raw, packet, self.peer, now, Note.DUPLICATE)
        self._ack(0, now, Note.REACK)

    def _late_oack(self, packet: OAck, raw: bytes, now: float) -> None:
        self._note_received(raw, packet, self.peer, now, Note.UNEXPECTED, "OACK after the transfer began")

    def _size_fits(self, now: float) -> bool:
        """Refuse at once a file the OACK says is larger than our limit, rather than fill it first."""
        size, limit = self.negotiated.tsize, self._max_bytes
        if size is None or limit is None or size <= limit or self.request.mode != "octet":
            return True
        self._fail(now, Reason.LOCAL, Side.LOCAL, ErrorCode.DISK_FULL,
                   f"download of {size} bytes (the announced tsize) exceeds the limit of {limit} bytes")
        return False

    def _on_timeout(self, now: float) -> None:
        self._receiver_timeout(now)

    def _waiting_for(self) -> str:
        if self.state is State.REQUESTING:
            return "reply to RRQ"
        return super()._waiting_for()


class ClientWrite(_ClientMixin, Sender):
    """Upload what the caller feeds (:meth:`feed`) as ``filename``. ``size`` (if known) is offered as tsize."""

    role = Role.CLIENT_WRITE
    TABLE = {
        State.REQUESTING: {Opcode.ACK: ("_first_ack", State.TRANSFERRING),
                           Opcode.OACK: ("_on_oack", State.TRANSFERRING),
                           Opcode.DATA: _INVALID_REPLY, **_REQUEST_ANSWERED},
        State.TRANSFERRING: {Opcode.ACK: ("_on_ack", None),
                             Opcode.OACK: ("_repeated_oack", None),
                             Opcode.ERROR: ("_on_error", State.FAILED)},
    }

    def __init__(self, session_id: int, *, filename: str, server: Address, local: Address, now: float,
                 size: int | None = None, mode: str = "octet",
                 options: RequestedOptions = RequestedOptions(), timing: Timing = Timing()) -> None:
        super().__init__(session_id, local=local, peer=server, timing=timing, now=now)
        self.request, self._request_raw = build_request(Opcode.WRQ, filename, mode, options, size)
        self._init_sender(netascii=self.request.mode == "netascii")
        self.total = size
        self._start(now)

    def _first_ack(self, packet: Ack, raw: bytes, now: float) -> None:
        """ACK 0 answering the WRQ (the server ignored our options) starts the data; any other is wrong."""
        if packet.block != 0:
            self._invalid_reply(packet, raw, now)
            return
        self._note_received(raw, packet, self.peer, now)
        self._timer.end_sample(now)
        self._set_negotiated(options_ignored(self.request.options), now)
        self._fill_window(now)

    def _on_oack(self, packet: OAck, raw: bytes, now: float) -> None:
        """The server's OACK: accept it and start the data, or refuse it."""
        self._note_received(raw, packet, self.peer, now)
        self._timer.end_sample(now)
        if self._negotiate(packet, now):
            self._fill_window(now)

    def _repeated_oack(self, packet: OAck, raw: bytes, now: float) -> None:
        """Our DATA 1 is late or lost; the timer resends it, so a repeated OACK is not answered."""
        self.duplicates += 1
        self._note_received(raw, packet, self.peer, now, Note.DUPLICATE)

    def _on_timeout(self, now: float) -> None:
        if self.state is State.REQUESTING:
            self.retransmits += 1
            self._events.append(Retransmit(self.session_id, now, "timeout", None, 1, self._timer.attempt))
            self._send(self.request, self._request_raw, now, Note.RETRANSMIT)
            self._arm(now)
        else:
            self._sender_timeout(now)

    def _waiting_for(self) -> str:
        if self.state is State.REQUESTING:
            return "reply to WRQ"
        return super()._waiting_for()
