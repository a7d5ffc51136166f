"""netascii (RFC 764 as used by RFC 1350): LF travels as CR LF and a bare CR as CR NUL.

Both directions stream: a CR LF pair may straddle two blocks, so the decoder holds a trailing CR
until it sees the next byte.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["encode", "NetasciiDecoder", "NetasciiReader", "netascii_size"]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def encode(data: bytes) -> bytes:
    """Local text (LF line ends) to netascii. Each byte maps on its own, so chunks encode independently."""
    # CR first, so the CR of each new CR LF is not doubled.
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def netascii_size(data: bytes) -> int:
    """Bytes ``data`` takes on the wire in netascii."""
    return len(data) + data.count(b"\r") + data.count(b"\n")


class NetasciiDecoder:
    """netascii to local text. Feed chunks with :meth:`feed`; call :meth:`finish` after the last one."""

    __slots__ = ("_pending_cr",)

    def __init__(self) -> None:
        self._pending_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._pending_cr = True
        if b"\r" not in chunk:
            return chunk
        # A CR followed by anything but LF or NUL is not valid netascii; it is kept as it came.
        return chunk.replace(b"\r\n", b"\n").replace(b"\r\0", b"\r")

    def finish(self) -> bytes:
        """A CR at the very end of the transfer stands alone."""
        if self._pending_cr:
            self._pending_cr = False
            return b"\r"
        return b""


class NetasciiReader:
    """Wraps a binary source so ``read(n)`` returns netascii, exactly ``n`` bytes until the end."""

    __slots__ = ("_source", "_buffer", "_eof")

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._buffer = bytearray()
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            chunk = self._source.read(65536 if size < 0 else max(size, 4096))
            if not chunk:
                self._eof = True
                break
            self._buffer += encode(chunk)
        if size < 0:
            size = len(self._buffer)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out
