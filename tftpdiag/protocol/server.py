"""Server machines: answer a read (send the file) or a write (take an upload), and refuse requests.

The caller decodes the request that reached the listening port, decides whether the name is allowed
and opens the file; these machines run the transfer from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tftpdiag.fmt import quote  # pure text: the one way a name from the network is echoed
from tftpdiag.protocol.events import (
    Address,
    Event,
    Note,
    PacketReceived,
    PacketSent,
    Reason,
    RequestRefused,
    Retransmit,
    Role,
    Side,
    TransferStarted,
)
from tftpdiag.protocol.limits import GIVE_UP
from tftpdiag.protocol.options import (
    Negotiated,
    ServerPolicy,
    negotiate_server,
    options_refused,
)
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    OAck,
    Opcode,
    Packet,
    ProtocolError,
    Request,
    encode,
    seen_request,
)
from tftpdiag.protocol.receiver import Receiver
from tftpdiag.protocol.sender import Sender
from tftpdiag.protocol.session import Session, State
from tftpdiag.protocol.timer import Timing

__all__ = ["ServerRead", "ServerWrite", "refuse", "mode_refused", "MODES", "GIVE_UP"]

MODES = ("octet", "netascii")


def mode_refused(request: Request) -> str | None:
    """Why the server does not serve ``request`` in its transfer mode (the ERROR 4's message, the mode
    echoed as the client sent it, escaped), or None when it does: the one place that says which modes."""
    if request.mode in MODES:  # (the codec lower-cased a mode of RFC 1350's: any case matches)
        return None
    return f"transfer mode {quote(request.mode)} is not supported"


# In every state of a server session, a request from its client is that client resending it (single-port
# mode delivers it here): a duplicate, not a new transfer.
_REPEATED_REQUEST: dict[Opcode, tuple[str, State | None]] = {Opcode.RRQ: ("_repeated_request", None),
                                                             Opcode.WRQ: ("_repeated_request", None)}


def refuse(session_id: int, *, raw: bytes, packet: Packet | None, client: Address, local: Address, now: float,
           code: int, message: str, why: str, suggestion: str | None = None, answer: bool = True,
           told: str | None = None) -> tuple[list[tuple[bytes, Address]], list[Event]]:
    """Turn a request away before any transfer: the ERROR to send and the events that record it.

    An ERROR that arrived is logged but never answered; with ``answer`` False nothing is answered. The
    ERROR says ``told``, when given, instead of ``message``, which the record keeps.
    """
    note = Note.MALFORMED if packet is None else Note.NONE
    detail = message if packet is None else ""
    events: list[Event] = [PacketReceived(session_id, now, local, client, raw, packet, note, detail)]
    out: list[tuple[bytes, Address]] = []
    if answer and not isinstance(packet, Error):
        error = Error(code, message if told is None else told)
        error_raw = encode(error)
        out.append((error_raw, client))
        events.append(PacketSent(session_id, now, local, client, error_raw, error))
    # A request refused as malformed (an option without a value, a name given twice, past 512 bytes) is
    # still a request for a file: its record keeps what a watcher reads of it, not "undecodable bytes".
    request = packet if packet is not None else seen_request(raw)
    if isinstance(request, Request):
        events.append(RequestRefused(session_id, now, client, request.filename, request.is_read, code, message, why,
                                     suggestion, "", bool(out), request.mode, request.options))
        return out, events
    if packet is None:
        received = f"{len(raw)} undecodable byte{'' if len(raw) == 1 else 's'}"
    else:
        received = packet.opcode.name + (f" {packet.block}" if isinstance(packet, (Ack, Data)) else "")
    events.append(RequestRefused(session_id, now, client, "", True, code, message, why, suggestion, received,
                                 bool(out)))
    return out, events


# The mixin is only ever mixed into a Session subclass (Receiver or Sender), whose attributes and
# methods it uses; the checker sees that base, while at run time the class adds nothing to the MRO.
if TYPE_CHECKING:
    _SessionBase = Session
else:
    _SessionBase = object


class _ServerMixin(_SessionBase):
    """What both server machines do with the request that started them."""

    request: Request

    def _begin(self, request: Request, raw: bytes, listen: Address | None, now: float) -> bool:
        """Record the request (it arrived at ``listen``, the server's well-known port); False (and the
        session failed) if its mode is not served."""
        self.request = request
        self.locked = True  # the client's transfer ID is the request's source
        self._events.append(TransferStarted(self.session_id, now, self.role, request.filename, request.mode,
                                            self.local, self.peer, request.options))
        self._events.append(PacketReceived(self.session_id, now, listen or self.local, self.peer, raw, request))
        self.packets_received += 1
        refused = mode_refused(request)
        if refused is not None:  # (the server's request checks refuse it first: never a transfer in it)
            self._fail(now, Reason.PROTOCOL, Side.LOCAL, ErrorCode.ILLEGAL_OPERATION, refused)
            return False
        return True

    def _negotiate(self, policy: ServerPolicy, file_size: int | None, now: float) -> Negotiated | None:
        try:
            negotiated = negotiate_server(self.request.options, is_read=self.request.is_read,
                                          mode=self.request.mode, policy=policy, file_size=file_size)
        except ProtocolError as exc:
            self._fail(now, Reason.PROTOCOL, Side.LOCAL, exc.code, exc.message)
            return None
        self._set_negotiated(negotiated, now)
        return negotiated

    def _send_oack(self, negotiated: Negotiated, now: float) -> None:
        assert negotiated.oack is not None
        oack = OAck(negotiated.oack)
        self._oack = (oack, encode(oack))
        self._send(oack, self._oack[1], now)
        self._timer.start_sample(now)
        self.state = State.NEGOTIATING

    def _repeated_request(self, packet: Request, raw: bytes, now: float) -> None:
        """A client resending its request to our port (single-port mode) is not a new transfer."""
        self.duplicates += 1
        self._note_received(raw, packet, self.peer, now, Note.DUPLICATE, "request repeated")


class ServerRead(_ServerMixin, Sender):
    """Send the file the caller feeds (:meth:`feed`) to the client that asked for it with an RRQ."""

    role = Role.SERVER_READ
    TABLE = {
        State.NEGOTIATING: {Opcode.ACK: ("_ack_of_oack", None),
                            Opcode.ERROR: ("_oack_refused", State.FAILED),
                            **_REPEATED_REQUEST},
        State.TRANSFERRING: {Opcode.ACK: ("_on_ack", None),
                             Opcode.ERROR: ("_on_error", State.FAILED),
                             **_REPEATED_REQUEST},
    }

    def __init__(self, session_id: int, *, request: Request, raw: bytes, client: Address, local: Address,
                 now: float, file_size: int | None = None, listen: Address | None = None,
                 policy: ServerPolicy = ServerPolicy(), timing: Timing = Timing()) -> None:
        Session.__init__(self, session_id, local=local, peer=client, timing=timing, now=now)
        self._init_sender(netascii=request.mode == "netascii")
        if not self._begin(request, raw, listen, now):
            return
        self.total = file_size if request.mode == "octet" else None
        negotiated = self._negotiate(policy, file_size, now)
        if negotiated is None:
            return
        if negotiated.oack:
            self._send_oack(negotiated, now)
            self._arm(now)
        else:
            self._start_data(now)

    def _ack_of_oack(self, packet: Ack, raw: bytes, now: float) -> None:
        """ACK 0 accepts our OACK and starts the data; another block number is not an answer to it."""
        if packet.block != 0:
            self._note_received(raw, packet, self.peer, now, Note.UNEXPECTED, "ACK before the OACK was accepted")
            return
        self._note_received(raw, packet, self.peer, now)
        self._timer.end_sample(now)
        self._progressed(now)
        self._start_data(now)

    def _oack_refused(self, packet: Error, raw: bytes, now: float) -> None:
        """An ERROR answering our OACK; ERROR 8 turns it down (UEFI firmware does after reading tsize)."""
        if packet.code == ErrorCode.OPTION_REFUSED:
            self._set_negotiated(options_refused(self.request.options, self.negotiated.oack), now)
        self._on_error(packet, raw, now)

    def _on_timeout(self, now: float) -> None:
        if self.state is State.NEGOTIATING:
            oack, raw = self._oack
            self.retransmits += 1
            self._events.append(Retransmit(self.session_id, now, "timeout", None, 1, self._timer.attempt))
            self._send(oack, raw, now, Note.RETRANSMIT)
            self._arm(now)
        else:
            self._sender_timeout(now)

    def _waiting_for(self) -> str:
        if self.state is State.NEGOTIATING:
            return "ACK 0 (answer to OACK)"
        return super()._waiting_for()


class ServerWrite(_ServerMixin, Receiver):
    """Take the upload a client offered with a WRQ; the caller stores what :meth:`received` hands it."""

    role = Role.SERVER_WRITE
    TABLE = {
        State.NEGOTIATING: {Opcode.DATA: ("_on_data", State.TRANSFERRING),
                            Opcode.ERROR: ("_on_error", State.FAILED),
                            **_REPEATED_REQUEST},
        State.TRANSFERRING: {Opcode.DATA: ("_on_data", None),
                             Opcode.ERROR: ("_on_error", State.FAILED),
                             **_REPEATED_REQUEST},
        State.STORING: {Opcode.DATA: ("_data_while_storing", None),
                        Opcode.ERROR: ("_on_error", State.FAILED),
                        **_REPEATED_REQUEST},
        State.DALLYING: {Opcode.DATA: ("_data_after_end", None),
                         Opcode.ERROR: ("_error_after_end", None),
                         **_REPEATED_REQUEST},
    }

    def __init__(self, session_id: int, *, request: Request, raw: bytes, client: Address, local: Address,
                 now: float, listen: Address | None = None,
                 policy: ServerPolicy = ServerPolicy(), timing: Timing = Timing()) -> None:
        Session.__init__(self, session_id, local=local, peer=client, timing=timing, now=now)
        self._init_receiver(netascii=request.mode == "netascii", max_bytes=policy.max_upload)
        if not self._begin(request, raw, listen, now):
            return
        negotiated = self._negotiate(policy, None, now)
        if negotiated is None:
            return
        self.total = negotiated.tsize
        # The client's own tsize is what its file holds: an upload that ends at another size is damaged
        # (cut short, or the file changed as it was read), and is failed rather than kept. A tsize of 0
        # says nothing: clients that do not know the size send it (tftpy does), then the file.
        self._expect_exactly(negotiated.tsize or None)
        if negotiated.oack:
            self._send_oack(negotiated, now)
            self._last_reply = self._oack
        else:
            self.state = State.NEGOTIATING
            self._ack(0, now)
        self._arm(now)

    def _on_timeout(self, now: float) -> None:
        self._receiver_timeout(now)

    def _waiting_for(self) -> str:
        if self.state is State.NEGOTIATING:
            return "DATA 1"
        return super()._waiting_for()
