"""Codec for the six TFTP packet kinds (RFC 1350, RFC 2347) and the protocol's error type.

Decoding never raises anything but :class:`ProtocolError`, and that error carries the ERROR packet the
caller should send back, so a malformed datagram is always answered the same way wherever it arrives.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from tftpdiag.records import record

__all__ = [
    "Opcode",
    "ErrorCode",
    "Request",
    "Data",
    "Ack",
    "Error",
    "OAck",
    "Packet",
    "ProtocolError",
    "decode",
    "head",
    "encode",
    "encode_data",
    "encode_ack",
    "ack_packet",
    "ack_bytes",
    "ack_reply",
    "ack_of",
    "MAX_REQUEST_SIZE",
    "SEEN_OPTIONS",
    "seen_request",
    "MAX_BLOCK",
    "OPTION_NAMES",
]

MAX_REQUEST_SIZE = 512  # RFC 2347: the request with its options fits in 512 octets
MAX_BLOCK = 0xFFFF
KNOWN_MODES = ("octet", "netascii", "mail")
OPTION_NAMES = ("blksize", "timeout", "tsize", "windowsize")
SEEN_OPTIONS = 64  # options of an observed request kept at most (a 64 KiB datagram could hold 16,000)

_HEAD = struct.Struct("!HH")
_OPCODE = struct.Struct("!H")


class Opcode(IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8

    @property
    def text(self) -> str:
        return _ERROR_TEXT[self]


_ERROR_TEXT = {
    ErrorCode.NOT_DEFINED: "not defined",
    ErrorCode.FILE_NOT_FOUND: "file not found",
    ErrorCode.ACCESS_VIOLATION: "access violation",
    ErrorCode.DISK_FULL: "disk full or allocation exceeded",
    ErrorCode.ILLEGAL_OPERATION: "illegal TFTP operation",
    ErrorCode.UNKNOWN_TID: "unknown transfer ID",
    ErrorCode.FILE_EXISTS: "file already exists",
    ErrorCode.NO_SUCH_USER: "no such user",
    ErrorCode.OPTION_REFUSED: "option negotiation refused",
}


def error_code_name(code: int) -> str:
    """Plain name of an error code, also for codes outside RFC 1350's list."""
    try:
        return ErrorCode(code).text
    except ValueError:
        return f"unknown error code {code}"


Options = tuple[tuple[str, str], ...]


@record
class Request:
    """RRQ or WRQ. ``mode`` is lower-cased when it is one of RFC 1350's, else kept as sent (the server
    refuses it in the client's words); option names are lower-cased (ASCII letters); option order is kept
    as sent. Bytes of a name or value that are not ASCII are kept as surrogate escapes, as a file name's:
    the server leaves such an option out of its OACK (protocol/options.py), whoever shows it escapes it."""

    opcode: Opcode
    filename: str
    mode: str = "octet"
    options: Options = ()

    @property
    def is_read(self) -> bool:
        return self.opcode is Opcode.RRQ

    def option(self, name: str) -> str | None:
        for key, value in self.options:
            if key == name:
                return value
        return None


@record  # one per datagram (see PacketSent)
class Data:
    """A DATA packet: one block of the file."""

    block: int
    payload: bytes

    opcode = Opcode.DATA


@record
class Ack:
    """An ACK packet: the receiver took every block up to ``block``."""

    block: int

    opcode = Opcode.ACK


@record
class Error:
    """An ERROR packet: the transfer ends with ``code`` and ``message``."""

    code: int
    message: str = ""

    opcode = Opcode.ERROR

    @property
    def code_name(self) -> str:
        return error_code_name(self.code)


@record
class OAck:
    """An OACK packet: the options the server accepted, with its values."""

    options: Options

    opcode = Opcode.OACK

    def option(self, name: str) -> str | None:
        for key, value in self.options:
            if key == name:
                return value
        return None


Packet = Request | Data | Ack | Error | OAck


# The longest text of an ERROR we send for a peer's mistake, and of what it quotes of the peer's bytes
# (brief). The text often quotes what the peer sent (an option's value, a name), which may be most of a
# 64 KiB datagram: quoted whole, the ERROR would not fit in one (its send failed), and the peer's bytes
# would fill our own record and JSON. The quote is cut, not the sentence around it, which says why.
ERROR_TEXT = 300
QUOTED = 64


def brief(value: bytes | str) -> str:
    """What a peer sent, quoted in an ERROR's text: at most QUOTED characters of its repr (bytes without
    Python's b prefix: the peer reads the text, not our source), the rest counted."""
    shown = repr(value) if isinstance(value, str) else repr(value)[1:]  # (bytes: '\xff', not b'\xff')
    if len(shown) <= QUOTED:
        return shown
    return f"{shown[:QUOTED]}...(+{len(shown) - QUOTED:,} chars)"


class ProtocolError(Exception):
    """The peer broke the rules. ``reply`` is the ERROR packet to send back (never to an ERROR); its
    message is cut at ERROR_TEXT characters, the rest counted (a last bound: each quote is brief)."""

    def __init__(self, code: int, message: str) -> None:
        if len(message) > ERROR_TEXT:
            message = f"{message[:ERROR_TEXT]}...(+{len(message) - ERROR_TEXT:,} chars)"
        super().__init__(message)
        self.reply = Error(int(code), message)

    @property
    def code(self) -> int:
        return self.reply.code

    @property
    def message(self) -> str:
        return self.reply.message


def _illegal(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.ILLEGAL_OPERATION, message)


# Filenames, modes and ERROR messages may hold any byte but NUL (firmware sends odd ones); surrogateescape keeps
# them exact, so that what is shown or written (tftpdiag.fmt) can say which bytes they were.
def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _encode_text(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _decode_ascii(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise _illegal(f"{what} is not ASCII: {brief(raw)}") from None


def _option_name(raw: bytes) -> str:
    """A requested option's name as text: lower-cased as RFC 2347 compares names, ASCII letters only
    (bytes.lower()), so that no other character lower-cases into a known name ('BL\u212aSIZE' is not
    blksize); any other byte kept as the file name's are, for the server to leave out as unknown."""
    return _decode_text(raw.lower())


def _decode_options(fields: list[bytes], where: str, *, requested: bool = False) -> Options:
    """The option pairs of a request (``requested``) or an OACK. Missing values, empty or repeated
    names are malformed either way (ERROR 8). A request's names and values may hold any byte: a server
    leaves an option it cannot read out of its OACK, as any it does not know (RFC 2347), and serves the
    file. An OACK is answered by our client, which took only what it can read: that stays ERROR 8."""
    if len(fields) % 2:
        raise ProtocolError(
            ErrorCode.OPTION_REFUSED, f"{where}: option {brief(fields[-1])} has no value"
        )
    options: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i in range(0, len(fields), 2):
        name_raw, value_raw = fields[i], fields[i + 1]
        if not name_raw:
            raise ProtocolError(ErrorCode.OPTION_REFUSED, f"{where}: empty option name")
        if requested:
            name, value = _option_name(name_raw), _decode_text(value_raw)
        else:
            # A garbled option is an option problem (ERROR 8), like a missing value or a repeated name.
            try:
                name = _decode_ascii(name_raw, "option name").lower()
                value = _decode_ascii(value_raw, f"value of option {name}")
            except ProtocolError as exc:
                raise ProtocolError(ErrorCode.OPTION_REFUSED, f"{where}: {exc.message}") from None
        if name in seen:
            raise ProtocolError(ErrorCode.OPTION_REFUSED, f"{where}: option {name} given twice")
        seen.add(name)
        options.append((name, value))
    return tuple(options)


def _split_fields(body: bytes, what: str) -> list[bytes]:
    if not body.endswith(b"\0"):
        raise _illegal(f"{what} is not NUL-terminated")
    return body[:-1].split(b"\0")


def decode(data: bytes) -> Packet:
    """Decode one datagram. Raises :class:`ProtocolError` (and nothing else) if it is malformed."""
    if len(data) < 2:
        raise _illegal(f"datagram of {len(data)} byte(s) is too short for an opcode")
    opcode = data[1] if data[0] == 0 else -1
    if opcode == 3:
        if len(data) < 4:
            raise _illegal("DATA packet truncated before the block number")
        return Data(_HEAD.unpack_from(data)[1], data[4:])
    if opcode == 4:
        if len(data) < 4:
            raise _illegal("ACK packet truncated before the block number")
        # Trailing bytes after an ACK are harmless padding from some embedded stacks: ignore them.
        return ack_packet((data[2] << 8) | data[3])
    if opcode in (1, 2):
        return _decode_request(data, Opcode(opcode))
    if opcode == 5:
        if len(data) < 4:
            raise _illegal("ERROR packet truncated before the error code")
        code = _HEAD.unpack_from(data)[1]
        body = data[4:]
        # Many stacks omit the final NUL or pad after it; the message is what comes before the first NUL.
        message = _decode_text(body.split(b"\0", 1)[0])
        return Error(code, message)
    if opcode == 6:
        body = data[2:]
        if not body:
            return OAck(())
        return OAck(_decode_options(_split_fields(body, "OACK"), "OACK"))
    raise _illegal(f"unknown opcode {_OPCODE.unpack_from(data)[0]}")


def head(raw: bytes) -> tuple[int, int]:
    """The opcode and the 16-bit number after it (a DATA's or an ACK's block) of a datagram whose first
    four bytes can be a TFTP header, else (0, 0); only opcodes 1..6 are TFTP's. The head alone is read,
    to tell kinds apart where every datagram of a capture passes; :func:`decode` judges the rest."""
    if len(raw) > 3 and raw[0] == 0:
        return raw[1], raw[2] << 8 | raw[3]
    return 0, 0


def _request_fields(data: bytes, kind: str) -> list[bytes]:
    """A request's fields: file name, mode, then the options' names and values, padding dropped."""
    fields = _split_fields(data[2:], kind)
    if len(fields) < 2:
        raise _illegal(f"{kind} has no transfer mode")
    if not fields[0]:
        raise _illegal(f"{kind} has an empty file name")
    if not fields[1]:
        raise _illegal(f"{kind} has no transfer mode")
    # Some clients pad the request with extra NULs after the options; RFC 2347 servers ignore them.
    # An odd trailing empty field is padding, and so is a pair of them (an empty name with no value).
    while len(fields) > 2 and fields[-1] == b"" and (len(fields) % 2 or fields[-2] == b""):
        fields.pop()
    return fields


def _mode(raw: bytes) -> str:
    # Any mode decodes: which modes are served is the server's rule (protocol/server.py), and a request
    # in another mode is still a request for a file, refused for its mode with its name and options.
    mode = _decode_text(raw)
    if mode.lower() in KNOWN_MODES:
        mode = mode.lower()  # RFC 1350: any mix of case; the rest of the code compares lower case
    return mode


def _decode_request(data: bytes, opcode: Opcode) -> Request:
    kind = opcode.name
    if len(data) > MAX_REQUEST_SIZE:
        raise _illegal(f"{kind} of {len(data)} bytes exceeds the {MAX_REQUEST_SIZE}-byte limit")
    fields = _request_fields(data, kind)
    return Request(opcode, _decode_text(fields[0]), _mode(fields[1]),
                   _decode_options(fields[2:], kind, requested=True))


def seen_request(data: bytes) -> Request | None:
    """The RRQ or WRQ in ``data`` as its client sent it, for one who watches others' traffic; None when
    ``data`` has not a request's shape (opcode 1 or 2, a file name, a mode, NUL-terminated).

    :func:`decode` judges a request as a server that must answer it: past 512 bytes, or with an option
    repeated or without a value, it refuses. A server it was sent to may still answer
    it (with an ERROR, or by ignoring the odd option), and that is what a watcher is there to see: every
    field is kept as sent (bytes that are not UTF-8 as surrogate escapes, as file names are; whoever
    shows them escapes them), name and mode read as :func:`decode` reads them, option names lower-cased
    as it does, an option without a value given an empty one. Bounded by the datagram (at most 64 KiB)
    and by :data:`SEEN_OPTIONS` options kept."""
    opcode = data[1] if len(data) > 1 and data[0] == 0 else 0
    if opcode != 1 and opcode != 2:
        return None
    try:
        fields = _request_fields(data, "request")
    except ProtocolError:
        return None
    rest = fields[2:2 + 2 * SEEN_OPTIONS]
    if len(rest) % 2:
        rest.append(b"")
    options = tuple((_option_name(rest[i]), _decode_text(rest[i + 1])) for i in range(0, len(rest), 2))
    return Request(Opcode(opcode), _decode_text(fields[0]), _mode(fields[1]), options)


def encode_data(block: int, payload: bytes) -> bytes:
    return _HEAD.pack(3, block) + payload


def encode_ack(block: int) -> bytes:
    return _HEAD.pack(4, block)


# One shared ACK and its bytes per block number, as the pair a machine sends and keeps to repeat: Ack
# is immutable, so one instance serves every ACK of that number, and ACKs are most of an upload's
# packets and half of every lock-step transfer's. Made on first use: building all 65536 at import would
# slow every start of the program (and a window's ACKs use one number in windowsize).
_ACKS: list[tuple[Ack, bytes] | None] = [None] * 0x10000


def ack_reply(block: int) -> tuple[Ack, bytes]:
    """ACK ``block`` (0..65535): the one shared instance and its bytes."""
    pair = _ACKS[block]
    if pair is None:
        pair = _ACKS[block] = (Ack(block), _HEAD.pack(4, block))
    return pair


def ack_packet(block: int) -> Ack:
    """ACK ``block`` (0..65535), the one shared instance."""
    return (_ACKS[block] or ack_reply(block))[0]


def ack_of(data: bytes) -> Ack | None:
    """The ACK datagram ``data`` holds (the shared instance), or None when it holds no ACK: what
    :func:`decode` would return for it, without the work of telling the other kinds apart."""
    if len(data) >= 4 and data[1] == 4 and data[0] == 0:
        return ack_packet((data[2] << 8) | data[3])
    return None


def ack_bytes(block: int) -> bytes:
    """The four bytes of ACK ``block`` (0..65535), the one shared instance."""
    return (_ACKS[block] or ack_reply(block))[1]


def encode(packet: Packet) -> bytes:
    """Encode a packet. Values out of the wire format's range raise ValueError (our own mistake)."""
    if isinstance(packet, Data):
        return _HEAD.pack(3, packet.block) + packet.payload
    if isinstance(packet, Ack):
        return _HEAD.pack(4, packet.block)
    if isinstance(packet, Request):
        parts = [_OPCODE.pack(packet.opcode), _encode_text(packet.filename), b"\0", _encode_text(packet.mode), b"\0"]
        for name, value in packet.options:  # (as text: a watched request's options may hold any byte)
            parts += [_encode_text(name), b"\0", _encode_text(value), b"\0"]
        return b"".join(parts)
    if isinstance(packet, Error):
        return _HEAD.pack(5, packet.code) + _encode_text(packet.message) + b"\0"
    if isinstance(packet, OAck):
        parts = [_OPCODE.pack(6)]
        for name, value in packet.options:
            parts += [name.encode("ascii"), b"\0", value.encode("ascii"), b"\0"]
        return b"".join(parts)
    raise TypeError(f"not a TFTP packet: {packet!r}")
