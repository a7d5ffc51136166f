"""Live capture of TFTP traffic with libpcap: datagrams in batches, and the kernel's drop counts.

libpcap (through pcapy-ng, a maintained binding with manylinux wheels: nothing to compile) captures
in C into a memory-mapped kernel ring (TPACKET_V3) and ``next_batch`` hands over up to a few thousand
packets in one call, so Python costs one call a batch, not one a packet, before decoding. The BPF
filter runs in the kernel and lets through only what can be TFTP: requests to the watched server
ports, and UDP datagrams whose first two bytes are DATA, ACK, ERROR or OACK on any port (a transfer
moves to ports nobody can name in advance). The ring is large (64 MiB) so a burst at loopback speed
waits there while the reader catches up; what still does not fit the kernel counts as dropped, and
``stats()`` says how many, so a capture that lost packets says so instead of blaming the network.
"""

from __future__ import annotations

import array
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from tftpdiag.engine.poller import Poller
from tftpdiag.records import record
from tftpdiag.trace.pcap import Datagram, link_decoder

__all__ = ["CaptureError", "CaptureStats", "LiveCapture", "default_interface", "capture_filter"]

_RING = 64 << 20  # bytes of kernel ring: about 45,000 full-size packets waiting for the reader
_BATCH = 4096  # packets handed over per call at most
# The ring hands over a block of packets when it fills or when this many ms have passed since its first
# packet: the most a packet waits before the reader sees it.
_BLOCK_MS = 50
_POLL = 0.2  # seconds an idle reader sleeps before it looks at stop() again


class CaptureError(Exception):
    """The capture cannot start: one line for the user; ``permission`` says whether privilege is missing."""

    def __init__(self, message: str, *, permission: bool = False) -> None:
        super().__init__(message)
        self.permission = permission


@record
class CaptureStats:
    """libpcap's counts: what it saw, and what the kernel or interface dropped."""

    received: int  # packets that passed the filter (libpcap's ps_recv)
    dropped: int  # packets the kernel had to drop: the reader was too slow (ps_drop)
    if_dropped: int  # packets the interface dropped (ps_ifdrop), where the driver counts them


PERMISSION_HINT = (
    "capturing needs root or CAP_NET_RAW: run it with sudo, or give the interpreter the capability "
    "once with `sudo setcap cap_net_raw,cap_net_admin+ep \"$(readlink -f \"$(command -v python3)\")\"`"
)


def capture_filter(ports: Sequence[int] = (69,), hosts: Sequence[str] = ()) -> str:
    """The BPF filter: requests to ``ports``, and any UDP datagram shaped like DATA/ACK/ERROR/OACK.

    libpcap's ``udp[8:2]`` reads the payload only over IPv4, so IPv6 gets its own clause at the fixed
    offset past a plain 40-byte header (extension headers before UDP are rare on a LAN and then missed).
    """
    to_ports = " or ".join(f"dst port {int(p)}" for p in dict.fromkeys(ports))
    tftp4 = "(ip and udp[8:2] >= 3 and udp[8:2] <= 6)"
    tftp6 = "(ip6 and ip6[6] == 17 and ip6[48:2] >= 3 and ip6[48:2] <= 6)"
    expr = f"udp and (({to_ports}) or {tftp4} or {tftp6})"
    if hosts:
        expr += " and (" + " or ".join(f"host {h}" for h in dict.fromkeys(hosts)) + ")"
    return expr


def default_interface() -> str | None:
    """The interface of the IPv4 (else IPv6) default route, read from /proc; None when there is none."""
    try:
        with open("/proc/net/route") as f:
            next(f, None)
            for row in f:
                fields = row.split()
                if len(fields) > 3 and fields[1] == "00000000" and int(fields[3], 16) & 1:
                    return fields[0]
    except OSError:
        pass
    try:
        with open("/proc/net/ipv6_route") as f:
            for row in f:
                fields = row.split()
                if len(fields) == 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
                    return fields[9]
    except OSError:
        pass
    return None


# pcap_activate's negative results (pcap/pcap.h), worded so _open can tell permission from the rest.
_ACTIVATE_ERRORS = {
    -1: "pcap_activate failed",
    -5: "the interface does not support capturing (rfmon)",
    -7: "no such device",  # PCAP_ERROR_NO_SUCH_DEVICE
    -8: "permission denied",  # PCAP_ERROR_PERM_DENIED
    -9: "the interface is not up",
    -11: "promiscuous mode: permission denied",
    -12: "the time stamp precision is not supported",
}


# libpcap's pseudo-interface for every interface at once (Linux cooked frames), as `tcpdump -i any`. A
# packet that crosses two of them (a bridge and its member) is captured twice: the copies' rule
# (protocol/observer_copies.py) reads that.
ANY = "any"


def _check_interface(name: str) -> None:
    if name == ANY and sys.platform == "linux":
        return
    if not name or len(name) >= 16 or "/" in name or any(c.isspace() for c in name):
        raise CaptureError(f"no interface named {name!r}")
    try:
        socket.if_nametoindex(name)
    except OSError:
        names = ", ".join(n for _, n in socket.if_nameindex()) or "none"
        raise CaptureError(f"no interface named {name!r} (this machine has: {names}; or 'any')") from None


def _open(interface: str, snaplen: int, ring: int) -> Any:
    try:
        import pcapy  # untyped C extension: see [[tool.mypy.overrides]] in pyproject.toml
    except ImportError as exc:  # pragma: no cover - a dependency; only a broken install lacks it
        raise CaptureError(f"live capture needs pcapy-ng (pip install pcapy-ng): {exc}") from None
    try:
        handle = pcapy.create(interface)
        handle.set_snaplen(snaplen)
        handle.set_promisc(False)
        handle.set_timeout(_BLOCK_MS)
        handle.set_buffer_size(ring)
        status = handle.activate()  # pcapy-ng returns pcap_activate's code instead of raising
        if isinstance(status, int) and status < 0:
            raise pcapy.PcapError(_ACTIVATE_ERRORS.get(status, f"pcap_activate failed ({status})"))
        # A blocking read of an idle TPACKET_V3 ring never returns (the timeout only retires a started
        # block), so the reader polls the descriptor itself with its own timeout.
        handle.setnonblock(1)
    except pcapy.PcapError as exc:
        text = str(exc)
        lowered = text.lower()
        if "permission" in lowered or "not permitted" in lowered:
            raise CaptureError(f"cannot capture on {interface}: {PERMISSION_HINT}", permission=True) from None
        if "no such device" in lowered:
            raise CaptureError(f"no interface named {interface!r}") from None
        raise CaptureError(f"cannot capture on {interface}: {text}") from None
    return handle


class LiveCapture:
    """Capture on one interface until :meth:`stop`; iterate :meth:`batches` on one thread."""

    def __init__(self, interface: str, *, ports: Sequence[int] = (69,), hosts: Sequence[str] = (),
                 snaplen: int = 65535, ring: int = _RING) -> None:
        _check_interface(interface)
        self.interface = interface
        self.filter = capture_filter(ports, hosts)
        self._handle = _open(interface, snaplen, ring)
        try:
            self._handle.setfilter(self.filter)
        except Exception as exc:
            self._handle.close()
            raise CaptureError(f"cannot filter the capture ({self.filter}): {exc}") from None
        decode = link_decoder(self._handle.datalink())
        if decode is None:
            self._handle.close()
            raise CaptureError(f"{interface}: link type {self._handle.datalink()} is not one tftpdiag reads")
        self._decode = decode
        self._stop = threading.Event()
        self._closed = False
        self._lock = threading.Lock()  # pcap_stats and pcap_close must not race with a read
        # What the kernel dropped before the filter was in place (everything on the interface, while the
        # ring was new) is not ours to report: counts start from here.
        self._base = self._handle.stats()
        self._last_stats = CaptureStats(0, 0, 0)
        self.packets = 0  # packets handed over (any that passed the filter)
        self._ethernet = self._handle.datalink() == 1
        self.macs: dict[str, str] = {}  # client address -> the MAC its requests came from (Ethernet only)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stats(self) -> CaptureStats:
        with self._lock:
            if self._closed:
                return self._last_stats
            return self._since_base(self._handle.stats())

    def _since_base(self, raw: tuple[int, int, int]) -> CaptureStats:
        # libpcap's counters are 32-bit and wrap on a long capture: differences are taken modulo 2**32.
        received, dropped, if_dropped = ((now - base) & 0xFFFFFFFF for now, base in zip(raw, self._base, strict=True))
        return CaptureStats(received, dropped, if_dropped)

    def batches(self) -> Iterator[list[Datagram]]:
        """Lists of datagrams as the kernel delivers them (empty lists while idle), until stopped."""
        handle, decode, stop = self._handle, self._decode, self._stop
        poller: Poller[None] = Poller()  # the engine's one poller, here on the ring's descriptor
        poller.register(handle.getfd(), None)
        try:
            while not stop.is_set():
                batch = self._read(handle, decode)
                if batch is None:
                    yield []
                    poller.poll(_POLL)
                    continue
                yield batch
            # Stopped: what the ring already holds still counts. A block is handed over when it retires,
            # at most _BLOCK_MS after its first packet, so the ring is read until one more has passed.
            deadline = time.monotonic() + 2 * _BLOCK_MS / 1000
            while (left := deadline - time.monotonic()) > 0:
                batch = self._read(handle, decode)
                if batch is None:
                    poller.poll(max(0.001, left))
                    continue
                yield batch
        finally:
            poller.close()
            self.close()

    def _read(self, handle: Any, decode: Any) -> list[Datagram] | None:
        with self._lock:
            buf, meta = handle.next_batch(_BATCH)
        if not meta:
            return None
        self.packets += len(meta) // 16
        batch = list(_decoded(buf, meta, decode))
        if self._ethernet:
            self._note_macs(buf, meta, batch)
        return batch

    def _note_macs(self, buf: bytes, meta: Any, batch: list[Datagram]) -> None:
        """The MAC address of each client that sends a request, from its Ethernet header: devices are
        grouped by it where the capture has one. Only requests are looked at (a few per transfer)."""
        requests = [d for d in batch if d.payload[:2] in (b"\0\1", b"\0\2")]
        if not requests:
            return
        fields = array.array("I")
        fields.frombytes(bytes(meta))
        wanted = {d.src[0] for d in requests if d.src[0] not in self.macs}
        if not wanted:
            return
        for i in range(0, len(fields), 4):
            off, caplen = fields[i + 2], fields[i + 3]
            d = self._decode(buf, off, off + caplen, 0.0) if caplen >= 14 else None
            if d is not None and d.src[0] in wanted:
                if len(self.macs) >= 65536:
                    self.macs.clear()  # bounded: a scan of forged sources must not grow it for ever
                mac = buf[off + 6:off + 12]
                if any(mac):  # loopback's Ethernet header is all zeros: no MAC at all
                    self.macs[d.src[0]] = ":".join(f"{b:02x}" for b in mac)
                wanted.discard(d.src[0])
                if not wanted:
                    return

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._last_stats = self._since_base(self._handle.stats())
            except Exception:  # a handle that failed mid-read still closes, keeping the last counts
                pass
            self._closed = True
            self._handle.close()


def _decoded(buf: bytes, meta: Any, decode: Any) -> Iterable[Datagram]:
    """Datagrams out of one batch: ``meta`` is packed (sec, usec, offset, caplen) native uint32s."""
    fields = array.array("I")
    fields.frombytes(bytes(meta))
    for i in range(0, len(fields), 4):
        sec, usec, off, caplen = fields[i], fields[i + 1], fields[i + 2], fields[i + 3]
        d = decode(buf, off, off + caplen, sec + usec * 1e-6)
        if d is not None:
            yield d

