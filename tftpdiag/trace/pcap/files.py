"""The pcap and pcapng file formats: records and blocks read in large chunks, each frame handed to its
link type's decoder (links.py), IP fragments put back together (fragments.py); damage and truncation
reported with how much could be read."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import IO, Final

from tftpdiag.protocol.datagram import Datagram
from tftpdiag.trace.pcap.fragments import Fragments
from tftpdiag.trace.pcap.links import Decoder, link_decoder

__all__ = ["CaptureError", "read_datagrams"]


class CaptureError(Exception):
    """A capture file that is damaged, truncated or of an unsupported kind.

    ``packets`` counts the packet records read (of any protocol) before the problem and ``offset``
    is the byte offset in the file where the damage starts, so a caller can say how much of a
    capture was usable.
    """

    def __init__(self, message: str, *, packets: int = 0, offset: int = 0) -> None:
        super().__init__(message)
        self.packets = packets
        self.offset = offset



_CHUNK: Final = 1 << 20
_MAX_RECORD: Final = 64 << 20  # far above any real packet; a bigger length means damage

_PCAPNG_SHB: Final = 0x0A0D0D0A
_PCAPNG_IDB: Final = 1
_PCAPNG_OPB: Final = 2  # obsolete Packet Block, still written by old tools
_PCAPNG_SPB: Final = 3
_PCAPNG_EPB: Final = 6


class _Source:
    """A file read in large chunks; the parsers index into ``buf`` and ask for more at its end."""

    __slots__ = ("_file", "base", "eof")

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.base = 0  # file offset of buf[0]
        self.eof = False

    def refill(self, buf: bytes, pos: int, need: int) -> bytes:
        """Return a buffer that starts at old ``buf[pos]`` and holds ``need`` bytes unless EOF."""
        parts = [buf[pos:]]
        have = len(parts[0])
        self.base += pos
        while have < need and not self.eof:
            data = self._file.read(max(_CHUNK, need - have))
            if not data:
                self.eof = True
                break
            parts.append(data)
            have += len(data)
        return b"".join(parts)


def _truncated(packets: int, offset: int) -> CaptureError:
    return CaptureError(
        f"capture truncated after {packets} packets at byte offset {offset}", packets=packets, offset=offset
    )


def _damaged(packets: int, offset: int, what: str) -> CaptureError:
    return CaptureError(
        f"capture damaged after {packets} packets at byte offset {offset}: {what}", packets=packets, offset=offset
    )


def _read_pcap(src: _Source, buf: bytes, endian: str, ticks: int, frags: Fragments) -> Iterator[Datagram]:
    if len(buf) < 24:
        raise _truncated(0, 0)
    major, minor, _zone, _sigfigs, _snaplen, network = struct.unpack_from(endian + "HHiIII", buf, 4)
    if major != 2:
        raise CaptureError(f"unsupported pcap version {major}.{minor}")
    # The upper bits of the link type field can carry FCS information (pcap 2.4 extension).
    linktype = network & 0xFFFF
    decode = link_decoder(linktype, frags)
    if decode is None:
        raise CaptureError(f"unsupported link type {linktype} in pcap file (no IP/UDP decoder for it)")
    held = frags.held
    unpack_record = struct.Struct(endian + "IIII").unpack_from
    packets = 0
    pos = 24
    size = len(buf)
    while True:
        if pos + 16 > size:
            buf = src.refill(buf, pos, 16)
            pos, size = 0, len(buf)
            if size < 16:
                if size:
                    raise _truncated(packets, src.base)
                return
        sec, frac, incl, _orig = unpack_record(buf, pos)
        start = pos + 16
        stop = start + incl
        if stop > size:
            if incl > _MAX_RECORD:
                raise _damaged(packets, src.base + pos, f"record claims {incl} captured bytes")
            buf = src.refill(buf, pos, 16 + incl)
            pos, size = 0, len(buf)
            start, stop = 16, 16 + incl
            if stop > size:
                raise _truncated(packets, src.base)
        # Integer arithmetic first, one rounding: the float is the nearest to the true time.
        t = (sec * ticks + frac) / ticks
        datagram = decode(buf, start, stop, t)
        packets += 1
        pos = stop
        if held:  # behind a first fragment whose datagram is not whole yet
            yield from frags.release(datagram, t)
        elif datagram is not None:
            yield datagram


def _parse_idb(buf: bytes, pos: int, blen: int, endian: str,
               frags: Fragments) -> tuple[Decoder | None, int, int, int]:
    """(decoder, timestamp ticks per second, timestamp offset in seconds, snaplen) of an IDB."""
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", buf, pos + 8)
    ticks, ts_offset = 1_000_000, 0
    opt, opt_end = pos + 16, pos + blen - 4
    unpack_opt = struct.Struct(endian + "HH").unpack_from
    while opt + 4 <= opt_end:
        code, length = unpack_opt(buf, opt)
        value = opt + 4
        if code == 0 or value + length > opt_end:
            break
        if code == 9 and length >= 1:  # if_tsresol: 10**-n, or 2**-n if the top bit is set
            res = buf[value]
            ticks = 2 ** (res & 0x7F) if res & 0x80 else 10**res
        elif code == 14 and length >= 8:  # if_tsoffset, whole seconds added to every timestamp
            ts_offset = struct.unpack_from(endian + "q", buf, value)[0]
        opt = value + ((length + 3) & ~3)
    return link_decoder(linktype, frags), ticks, ts_offset, snaplen


def _read_pcapng(src: _Source, buf: bytes, frags: Fragments) -> Iterator[Datagram]:
    held = frags.held
    packets = 0
    pos = 0
    size = len(buf)
    endian = "<"
    unpack_head = struct.Struct("<II").unpack_from
    unpack_u32 = struct.Struct("<I").unpack_from
    unpack_epb = struct.Struct("<IIIII").unpack_from
    unpack_opb = struct.Struct("<HHIIII").unpack_from
    # Interfaces are numbered per section: (decoder or None if unsupported, ticks, offset, snaplen)
    interfaces: list[tuple[Decoder | None, int, int, int]] = []
    last_time = 0.0
    while True:
        if pos + 12 > size:
            buf = src.refill(buf, pos, 12)
            pos, size = 0, len(buf)
            if size < 12:
                if size:
                    raise _truncated(packets, src.base)
                return
        btype, blen = unpack_head(buf, pos)
        if btype == _PCAPNG_SHB:
            # The block type reads the same in both byte orders; the byte-order magic decides.
            bom = buf[pos + 8 : pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise _damaged(packets, src.base + pos, "section header with a bad byte-order magic")
            unpack_head = struct.Struct(endian + "II").unpack_from
            unpack_u32 = struct.Struct(endian + "I").unpack_from
            unpack_epb = struct.Struct(endian + "IIIII").unpack_from
            unpack_opb = struct.Struct(endian + "HHIIII").unpack_from
            interfaces = []
            btype, blen = unpack_head(buf, pos)
        if blen < 12 or blen & 3 or blen > _MAX_RECORD:
            raise _damaged(packets, src.base + pos, f"block of type {btype:#x} claims length {blen}")
        if pos + blen > size:
            buf = src.refill(buf, pos, blen)
            pos, size = 0, len(buf)
            if blen > size:
                raise _truncated(packets, src.base)
        if unpack_u32(buf, pos + blen - 4)[0] != blen:
            raise _damaged(packets, src.base + pos, f"block of type {btype:#x} has mismatched lengths")
        if btype in (_PCAPNG_EPB, _PCAPNG_OPB):
            if btype == _PCAPNG_EPB:
                ifid, hi, lo, cap, _orig = unpack_epb(buf, pos + 8)
            else:
                ifid, _drops, hi, lo, cap, _orig = unpack_opb(buf, pos + 8)
            if cap > blen - 32:
                raise _damaged(packets, src.base + pos, f"packet claims {cap} bytes in a {blen}-byte block")
            try:
                decode, ticks, ts_offset, _snap = interfaces[ifid]
            except IndexError:
                raise _damaged(packets, src.base + pos, f"packet on undeclared interface {ifid}") from None
            packets += 1
            if decode is not None:
                start = pos + 28
                last_time = (hi << 32 | lo) / ticks + ts_offset
                datagram = decode(buf, start, start + cap, last_time)
                if held:
                    yield from frags.release(datagram, last_time)
                elif datagram is not None:
                    yield datagram
        elif btype == _PCAPNG_SPB:
            if not interfaces:
                raise _damaged(packets, src.base + pos, "simple packet before any interface")
            decode, _ticks, _offset, snap = interfaces[0]
            orig = unpack_u32(buf, pos + 8)[0]
            cap = min(orig, blen - 16, snap or orig)
            packets += 1
            if decode is not None:
                # A simple packet has no timestamp; the previous one keeps the order plausible.
                datagram = decode(buf, pos + 12, pos + 12 + cap, last_time)
                if held:
                    yield from frags.release(datagram, last_time)
                elif datagram is not None:
                    yield datagram
        elif btype == _PCAPNG_IDB:
            if blen < 20:
                raise _damaged(packets, src.base + pos, "interface description too short")
            interfaces.append(_parse_idb(buf, pos, blen, endian, frags))
        elif btype == _PCAPNG_SHB:
            if blen < 28:
                raise _damaged(packets, src.base + pos, "section header too short")
            major, minor = struct.unpack_from(endian + "HH", buf, pos + 12)
            if major != 1:
                raise CaptureError(
                    f"unsupported pcapng version {major}.{minor}", packets=packets, offset=src.base + pos
                )
        pos += blen


_PCAP_MAGICS: Final[dict[bytes, tuple[str, int]]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}


def _read(file: IO[bytes], frags: Fragments) -> Iterator[Datagram]:
    src = _Source(file)
    buf = src.refill(b"", 0, 24)
    magic = buf[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        reader = _read_pcapng(src, buf, frags)
    elif magic in _PCAP_MAGICS:
        endian, ticks = _PCAP_MAGICS[magic]
        reader = _read_pcap(src, buf, endian, ticks, frags)
    elif not buf:
        raise CaptureError("not a pcap or pcapng file (it is empty)")
    elif magic in (b"\x34\xcd\xb2\xa1", b"\xa1\xb2\xcd\x34"):
        raise CaptureError("unsupported pcap variant: Kuznetzov's modified libpcap format (magic 0xa1b2cd34)")
    elif magic[:2] == b"\x1f\x8b":
        raise CaptureError(f"not a pcap or pcapng file (magic 0x{magic.hex()}: gzip-compressed, unpack it first)")
    else:
        raise CaptureError(f"not a pcap or pcapng file (magic 0x{magic.hex()})")
    try:
        yield from reader
    except (CaptureError, OSError):
        yield from frags.flush()  # what was read before the damage comes out first, as without fragments
        raise
    # The end: what still waits for fragments that did not come reads as it would without reassembly.
    yield from frags.flush()


def read_datagrams(path_or_file: str | os.PathLike[str] | IO[bytes],
                   fragments: Fragments | None = None) -> Iterator[Datagram]:
    """Yield every UDP datagram in a pcap or pcapng capture, in file order; skip all other traffic.

    A path is opened at once (so a missing file fails here) and closed when the iterator ends or
    is closed; a binary file object is read from its current position and left open. Damage
    raises :class:`CaptureError` after the datagrams before it have been yielded.

    A classic pcap of a link type without a decoder raises at once; in pcapng, packets of such an
    interface are skipped like any other non-UDP traffic. pcapng Simple Packet Blocks carry no
    timestamp and get the time of the packet before them (0.0 if there is none).

    A UDP datagram that came in IP fragments is yielded whole, with its last fragment's time, in that
    fragment's place; one whose fragments did not all come, as its first fragment cut short (its
    place kept: what follows it waits, boundedly). ``fragments``: the reassembly table to use, for
    its counts (fragments.py); a new one by default.
    """
    frags = Fragments() if fragments is None else fragments
    if isinstance(path_or_file, (str, os.PathLike)):
        return _read_and_close(open(path_or_file, "rb"), frags)  # noqa: SIM115 - closed by the generator
    return _read(path_or_file, frags)


def _read_and_close(file: IO[bytes], frags: Fragments) -> Iterator[Datagram]:
    with file:
        yield from _read(file, frags)
