"""DHCP messages as a netbooting client sends and reads them (RFC 2131/2132, RFC 3396, PXE 2.1).

Sans-IO: bytes in, a :class:`DhcpMessage` out, and the reverse. Everything in a received message is
chosen by whoever sent it, so parsing is bounded (a datagram is at most 64 KiB, every loop walks it
once) and a malformed message raises :class:`DhcpParseError` and nothing else.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import field

from tftpdiag.records import record

__all__ = [
    "BOOTREQUEST", "BOOTREPLY", "DISCOVER", "OFFER", "REQUEST", "ACK", "NAK", "RELEASE", "INFORM",
    "MESSAGE_TYPES", "MAGIC", "DhcpMessage", "DhcpParseError", "parse", "encode", "parse_suboptions",
    "encode_options",
]

BOOTREQUEST, BOOTREPLY = 1, 2
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
MESSAGE_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE",
                 8: "INFORM"}
MAGIC = b"\x63\x82\x53\x63"
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # op .. file: 236 bytes, then the magic cookie
HEADER_SIZE = _FIXED.size + len(MAGIC)
OPT_PAD, OPT_END, OPT_OVERLOAD = 0, 255, 52
MAX_DATAGRAM = 65535


class DhcpParseError(ValueError):
    """A datagram that is not a DHCP message we can read; the text says why, in plain words."""


@record
class DhcpMessage:
    """One DHCP message. ``options`` maps each option code to its value, the parts of an option that
    appears several times joined in order (RFC 3396); ``order`` keeps the codes as they first came."""

    op: int
    xid: int
    chaddr: bytes  # the hardware address (hlen bytes of the 16-byte field)
    yiaddr: str = "0.0.0.0"  # the address offered
    siaddr: str = "0.0.0.0"  # next-server
    giaddr: str = "0.0.0.0"  # the relay agent
    ciaddr: str = "0.0.0.0"
    flags: int = 0
    secs: int = 0
    hops: int = 0
    htype: int = 1
    sname: bytes = b""  # the server host name field, when it is not holding options
    file: bytes = b""  # the boot file field, when it is not holding options
    options: dict[int, bytes] = field(default_factory=dict)
    order: tuple[int, ...] = ()
    overload: int = 0  # option 52: 1 file, 2 sname, 3 both held options

    @property
    def message_type(self) -> int | None:
        value = self.options.get(53)
        return value[0] if value and len(value) == 1 else None

    def option_text(self, code: int) -> str | None:
        """A string option's bytes as text (bytes that are not UTF-8 kept as surrogate escapes, which
        :mod:`tftpdiag.fmt` shows as ``\\xNN``); trailing NULs dropped, as many servers add one."""
        value = self.options.get(code)
        return None if value is None else _text(value)

    def option_address(self, code: int) -> str | None:
        value = self.options.get(code)
        return str(ipaddress.IPv4Address(value[:4])) if value is not None and len(value) >= 4 else None

    @property
    def file_text(self) -> str:
        return _text(self.file)

    @property
    def sname_text(self) -> str:
        return _text(self.sname)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _addr(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def _walk(raw: bytes, where: str, into: dict[int, bytes], order: list[int]) -> None:
    """Read the options in ``raw`` into ``into``, joining repeats (RFC 3396 long options)."""
    i, n = 0, len(raw)
    while i < n:
        code = raw[i]
        if code == OPT_END:
            return
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= n:
            raise DhcpParseError(f"option {code} in the {where} has no length byte")
        length = raw[i + 1]
        if i + 2 + length > n:
            raise DhcpParseError(f"option {code} in the {where} says {length} bytes but only {n - i - 2} are left")
        value = raw[i + 2:i + 2 + length]
        if code in into:
            into[code] += value
        else:
            into[code] = value
            order.append(code)
        i += 2 + length
    # No END: RFC 2131 asks for one, but many stacks stop at the datagram's end; accept it.


def parse(data: bytes) -> DhcpMessage:
    """Read a BOOTP/DHCP datagram; :class:`DhcpParseError` when it is not one."""
    if len(data) > MAX_DATAGRAM:
        raise DhcpParseError(f"{len(data)} bytes is more than a UDP datagram holds")
    if len(data) < HEADER_SIZE:
        raise DhcpParseError(f"{len(data)} bytes is shorter than a DHCP header ({HEADER_SIZE})")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     file) = _FIXED.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpParseError(f"op {op} is neither a BOOTREQUEST nor a BOOTREPLY")
    if data[_FIXED.size:HEADER_SIZE] != MAGIC:
        raise DhcpParseError("no DHCP magic cookie (a plain BOOTP message)")
    options: dict[int, bytes] = {}
    order: list[int] = []
    _walk(data[HEADER_SIZE:], "options field", options, order)
    value = options.get(OPT_OVERLOAD)
    overload = value[0] if value else 0
    if overload not in (0, 1, 2, 3):
        raise DhcpParseError(f"option 52 (overload) has the value {overload}, not 1, 2 or 3")
    # RFC 3396: the options field first, then the file field, then sname.
    if overload & 1:
        _walk(file, "file field (option 52)", options, order)
    if overload & 2:
        _walk(sname, "sname field (option 52)", options, order)
    return DhcpMessage(
        op=op, xid=xid, chaddr=chaddr[:min(hlen, 16)], yiaddr=_addr(yiaddr), siaddr=_addr(siaddr),
        giaddr=_addr(giaddr), ciaddr=_addr(ciaddr), flags=flags, secs=secs, hops=hops, htype=htype,
        sname=b"" if overload & 2 else sname.rstrip(b"\0"), file=b"" if overload & 1 else file.rstrip(b"\0"),
        options=options, order=tuple(order), overload=overload)


def encode_options(options: list[tuple[int, bytes]]) -> bytes:
    """Options as TLVs; a value over 255 bytes is split into several (RFC 3396)."""
    out = bytearray()
    for code, value in options:
        if not 1 <= code <= 254:
            raise ValueError(f"option code {code} cannot be sent")
        chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [b""]
        for chunk in chunks:
            out += bytes((code, len(chunk))) + chunk
    return bytes(out)


def encode(msg: DhcpMessage, extra: list[tuple[int, bytes]] | None = None) -> bytes:
    """A message as bytes: its options in ``order`` (or dict order), then END, padded to the 300
    bytes of a BOOTP message, the least some servers and relays accept."""
    codes = msg.order or tuple(msg.options)
    body = encode_options([(c, msg.options[c]) for c in codes] + (extra or []))
    chaddr = msg.chaddr[:16].ljust(16, b"\0")
    fixed = _FIXED.pack(msg.op, msg.htype, len(msg.chaddr[:16]), msg.hops, msg.xid, msg.secs, msg.flags,
                        ipaddress.IPv4Address(msg.ciaddr).packed, ipaddress.IPv4Address(msg.yiaddr).packed,
                        ipaddress.IPv4Address(msg.siaddr).packed, ipaddress.IPv4Address(msg.giaddr).packed,
                        chaddr, msg.sname[:64].ljust(64, b"\0"), msg.file[:128].ljust(128, b"\0"))
    return (fixed + MAGIC + body + bytes((OPT_END,))).ljust(300, b"\0")


def parse_suboptions(raw: bytes) -> list[tuple[int, bytes]]:
    """The sub-options of an encapsulated option (43, 82, 175): PAD skipped, stop at END; a sub-option
    that runs past the end raises :class:`DhcpParseError`."""
    out: dict[int, bytes] = {}
    order: list[int] = []
    _walk(raw, "option 43", out, order)
    return [(code, out[code]) for code in order]
