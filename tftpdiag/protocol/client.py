"""Client machines: read (RRQ, download) and write (WRQ, upload)."""

from __future__ import annotations

from tftpdiag.protocol.events import Address, Note, Reason, Retransmit, Role, Side, TransferStarted
from tftpdiag.protocol.netascii import NetasciiReader
from tftpdiag.protocol.options import RequestedOptions, accept_oack, options_ignored, options_refused
from tftpdiag.protocol.packets import (
    MAX_REQUEST_SIZE,
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
)
from tftpdiag.protocol.session import Readable, Receiver, Sender, State, Timing, Writable

__all__ = ["ClientRead", "ClientWrite"]

MODES = ("octet", "netascii")


def _build_request(opcode: Opcode, filename: str, mode: str, options: RequestedOptions,
                   upload_size: int | None) -> tuple[Request, bytes]:
    mode = mode.lower()
    if mode not in MODES:
        raise ValueError(f"mode must be octet or netascii, not {mode!r}")
    if not filename or "\0" in filename:
        raise ValueError("the file name must be non-empty and hold no NUL")
    request = Request(opcode, filename, mode, options.to_wire(upload_size))
    raw = encode(request)
    if len(raw) > MAX_REQUEST_SIZE:
        raise ValueError(f"the request would take {len(raw)} bytes; RFC 2347 allows {MAX_REQUEST_SIZE}")
    return request, raw


class _ClientMixin:
    """The request phase both clients share: send, resend on timeout, lock onto the first reply."""

    request: Request
    _request_raw: bytes

    def _start(self, now: float) -> None:  # type: ignore[misc]
        self.state = State.REQUESTING
        self._events.append(TransferStarted(self.session_id, now, self.role, self.request.filename,
                                            self.request.mode, self.local, self.peer, self.request.options))
        self._send(self.request, self._request_raw, now)
        self._rtt_mark = now
        self._arm(now)

    def _refused_by_peer(self, packet: Error, oack: tuple | None, now: float) -> None:  # type: ignore[misc]
        if packet.code == ErrorCode.OPTION_REFUSED and self.request.options:
            self._set_negotiated(options_refused(self.request.options, oack), now)
        self._peer_error(packet, now)

    def _negotiate(self, packet: OAck, now: float) -> bool:  # type: ignore[misc]
        """Accept or refuse the OACK; True when the transfer goes on."""
        try:
            negotiated = accept_oack(self.request.options, packet.options, is_read=self.request.is_read)
        except ProtocolError as exc:
            self._set_negotiated(options_refused(self.request.options, packet.options), now)
            self._fail(now, Reason.PROTOCOL, Side.LOCAL, exc.code, exc.message)
            return False
        self._set_negotiated(negotiated, now)
        return True

    def _unexpected_reply(self, packet: Packet, raw: bytes, now: float) -> None:  # type: ignore[misc]
        self._note_received(raw, packet, self.peer, now, Note.UNEXPECTED)
        self._fail(now, Reason.PROTOCOL, Side.LOCAL, ErrorCode.ILLEGAL_OPERATION,
                   f"{packet.opcode.name} is not a valid reply to {self.request.opcode.name}")


class ClientRead(_ClientMixin, Receiver):
    """Download ``filename`` from ``server``; the received bytes go to ``sink.write``."""

    role = Role.CLIENT_READ

    def __init__(self, session_id: int, *, filename: str, server: Address, local: Address, sink: Writable,
                 now: float, mode: str = "octet", options: RequestedOptions = RequestedOptions(),
                 timing: Timing = Timing(), max_bytes: int | None = None) -> None:
        super().__init__(session_id, local=local, peer=server, timing=timing, now=now)
        self.request, self._request_raw = _build_request(Opcode.RRQ, filename, mode, options, None)
        self._init_receiver(sink, netascii=self.request.mode == "netascii", max_bytes=max_bytes)
        self._last_reply = (self.request, self._request_raw)
        self._start(now)

    def _on_packet(self, packet: Packet, raw: bytes, addr: Address, now: float) -> None:
        if self.state is State.REQUESTING:
            self._lock(addr, now)
            if isinstance(packet, Data):
                self._set_negotiated(options_ignored(self.request.options), now)
                self.state = State.TRANSFERRING
                self._on_data(packet, raw, now)
            elif isinstance(packet, OAck):
                self._note_received(raw, packet, addr, now)
                self._sample_rtt(now)
                if self._negotiate(packet, now) and self._size_fits(now):
                    self.total = self.negotiated.tsize
                    self._expect_at_most(self.total)
                    self.state = State.NEGOTIATING
                    self._progressed(now)
                    self._ack(0, now)
                    self._arm(now)
            elif isinstance(packet, Error):
                self._note_received(raw, packet, addr, now)
                self._refused_by_peer(packet, None, now)
            else:
                self._unexpected_reply(packet, raw, now)
            return
        if isinstance(packet, Data):
            if self.state is State.NEGOTIATING:
                self.state = State.TRANSFERRING
            self._on_data(packet, raw, now)
        elif isinstance(packet, Error):
            self._note_received(raw, packet, addr, now)
            if self.state is not State.DALLYING:
                self._peer_error(packet, now)
        elif isinstance(packet, OAck) and self.state is State.NEGOTIATING:
            # The server did not hear our ACK 0 and sent its OACK again.
            self.duplicates += 1
            self._note_received(raw, packet, addr, now, Note.DUPLICATE)
            self._ack(0, now, Note.REACK)
        else:
            detail = "OACK after the transfer began" if isinstance(packet, OAck) else ""
            self._note_received(raw, packet, addr, now, Note.UNEXPECTED, detail)

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
    """Upload what ``source.read`` yields as ``filename``. ``size`` (if known) is offered as tsize."""

    role = Role.CLIENT_WRITE

    def __init__(self, session_id: int, *, filename: str, server: Address, local: Address, source: Readable,
                 now: float, size: int | None = None, mode: str = "octet",
                 options: RequestedOptions = RequestedOptions(), timing: Timing = Timing()) -> None:
        super().__init__(session_id, local=local, peer=server, timing=timing, now=now)
        self.request, self._request_raw = _build_request(Opcode.WRQ, filename, mode, options, size)
        self._init_sender(NetasciiReader(source) if self.request.mode == "netascii" else source)
        self.total = size
        self._start(now)

    def _on_packet(self, packet: Packet, raw: bytes, addr: Address, now: float) -> None:
        if self.state is State.REQUESTING:
            self._lock(addr, now)
            if isinstance(packet, Ack) and packet.block == 0:
                self._note_received(raw, packet, addr, now)
                self._sample_rtt(now)
                self._set_negotiated(options_ignored(self.request.options), now)
                self._start_data(now)
            elif isinstance(packet, OAck):
                self._note_received(raw, packet, addr, now)
                self._sample_rtt(now)
                if self._negotiate(packet, now):
                    self._start_data(now)
            elif isinstance(packet, Error):
                self._note_received(raw, packet, addr, now)
                self._refused_by_peer(packet, None, now)
            else:
                self._unexpected_reply(packet, raw, now)
            return
        if isinstance(packet, Ack):
            self._on_ack(packet, raw, now)
        elif isinstance(packet, Error):
            self._note_received(raw, packet, addr, now)
            self._peer_error(packet, now)
        elif isinstance(packet, OAck):
            # Our DATA 1 is late or lost; the timer resends it, so a repeated OACK is not answered.
            self.duplicates += 1
            self._note_received(raw, packet, addr, now, Note.DUPLICATE)
        else:
            self._note_received(raw, packet, addr, now, Note.UNEXPECTED)

    def _on_timeout(self, now: float) -> None:
        if self.state is State.REQUESTING:
            self.retransmits += 1
            self._events.append(Retransmit(self.session_id, now, "timeout", None, 1, self._attempt))
            self._send(self.request, self._request_raw, now, Note.RETRANSMIT)
            self._arm(now)
        else:
            self._sender_timeout(now)

    def _waiting_for(self) -> str:
        if self.state is State.REQUESTING:
            return "reply to WRQ"
        return super()._waiting_for()
