"""netascii (RFC 764 as used by RFC 1350): LF travels as CR LF and a bare CR as CR NUL.

Both directions stream: a CR LF pair may straddle two blocks, so the decoder holds a trailing CR
until it sees the next byte.
"""

from __future__ import annotations

__all__ = ["encode", "NetasciiDecoder", "netascii_size"]


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
