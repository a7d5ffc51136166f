"""The DHCP side's sockets: broadcast a PXE DISCOVER on an interface (or send it to one server as a relay
agent would), collect every answer for a while, and follow a proxyDHCP to its boot server on port 4011.

It never takes an address: it sends no DHCPREQUEST to a DHCP server (only the PXE boot-server REQUEST
to port 4011, which hands out none), so nothing is leased and nothing needs releasing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tftpdiag.dhcp.messages import ClientIdentity, boot_server_addresses, build_boot_request, build_discover
from tftpdiag.dhcp.offers import Offer
from tftpdiag.dhcp.packet import ACK, BOOTREPLY, OFFER, DhcpParseError, parse
from tftpdiag.records import record

__all__ = ["DhcpSetupError", "Interface", "interface", "default_interface", "Collected", "collect"]

CLIENT_PORT, SERVER_PORT, BOOT_SERVER_PORT = 68, 67, 4011
RESEND_AFTER = 2.0  # a second DISCOVER, as firmware repeats it, for a server that missed the first
MAX_ANSWERS = 64  # answers kept: a flood of forged offers costs bounded memory
_SIOCGIFADDR = 0x8915


class DhcpSetupError(Exception):
    """The DHCP client could not start (no such interface, no permission): one line for the user."""


@record
class Interface:
    """The network interface a DHCP check sends from."""

    name: str
    mac: bytes
    address: str | None  # its IPv4 address, if it has one


def _ipv4_of(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(raw[20:24])


def interface(name: str) -> Interface:
    """The interface ``name`` with its MAC and IPv4 address; DhcpSetupError when there is none."""
    if not name or "/" in name or name in (".", "..") or len(name) > 15:
        raise DhcpSetupError(f"{name!r} is not an interface name")
    try:
        with open(f"/sys/class/net/{name}/address") as f:
            mac = bytes.fromhex(f.read().strip().replace(":", ""))
    except (OSError, ValueError):
        names = ", ".join(sorted(os.listdir("/sys/class/net"))[:20]) if os.path.isdir("/sys/class/net") else ""
        raise DhcpSetupError(f"no network interface {name!r} here (there are: {names})") from None
    return Interface(name, mac, _ipv4_of(name))


def default_interface() -> str:
    """The interface of the IPv4 default route, else the first one that is not loopback."""
    try:
        with open("/proc/net/route") as f:
            for row in f.read().splitlines()[1:]:
                parts = row.split()
                if len(parts) > 2 and parts[1] == "00000000":
                    return parts[0]
    except OSError:
        pass
    names = sorted(n for n in os.listdir("/sys/class/net") if n != "lo") if os.path.isdir("/sys/class/net") else []
    if not names:
        raise DhcpSetupError("no network interface to send a DISCOVER on; give one with --interface")
    return names[0]


@dataclass
class Collected:
    """What came back to one DISCOVER: the offers, and what else was heard."""

    offers: list[Offer] = field(default_factory=list)
    seen: int = 0  # other DHCP datagrams that arrived (not answers to this DISCOVER)
    # proxy -> its boot server on 4011: "answered", "silent", or "not asked" (we have no address to ask from)
    followups: dict[str, str] = field(default_factory=dict)
    local: str | None = None  # the address the DISCOVER went out from


def _socket(port: int, device: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if device is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        sock.bind(("0.0.0.0", port))
    except PermissionError:
        sock.close()
        raise DhcpSetupError(f"needs root (or CAP_NET_RAW and CAP_NET_BIND_SERVICE) to use DHCP port {port}"
                             + (f" on {device}" if device else "")) from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DhcpSetupError(f"UDP port {port} is in use here (a DHCP client or server runs on this "
                                 "machine); stop it or run from another machine") from None
        raise DhcpSetupError(f"cannot open DHCP port {port}: {exc.strerror}") from None
    return sock


def _source_toward(server: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((server, SERVER_PORT))
        except OSError as exc:
            raise DhcpSetupError(f"no route to {server}: {exc.strerror}") from None
        return s.getsockname()[0]


def collect(me: ClientIdentity, *, device: str | None, address: str | None, timeout: float,
            server: str | None = None, on_answer: Callable[[Offer], None] | None = None,
            on_ready: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic) -> Collected:
    """Send the DISCOVER and gather answers until ``timeout`` seconds have passed.

    ``server``: ask that one server directly, as a relay agent (giaddr = our address toward it; the
    answer comes to port 67). Otherwise broadcast on ``device`` and listen on port 68. ``on_ready`` is
    called once the socket is set up, just before the DISCOVER leaves: what announces the wait is not
    said before a set-up error (no such interface, no permission).
    """
    xid = random.getrandbits(32)
    result = Collected()
    if server is not None:
        try:
            socket.inet_aton(server)
        except OSError:
            raise DhcpSetupError(f"--server wants an IPv4 address, not {server!r}") from None
        result.local = _source_toward(server)
        sock = _socket(SERVER_PORT, device)
        dest = (server, SERVER_PORT)
        discover = build_discover(me, xid, giaddr=result.local)
    else:
        result.local = address
        sock = _socket(CLIENT_PORT, device)
        dest = ("255.255.255.255", SERVER_PORT)
        discover = build_discover(me, xid)
    asked: dict[str, list[str]] = {}  # proxy -> the boot servers asked on its behalf
    try:
        if on_ready is not None:
            on_ready()
        start = clock()
        _send(sock, discover, dest)
        resent = False
        while (left := timeout - (clock() - start)) > 0:
            if not resent and clock() - start >= RESEND_AFTER:
                _send(sock, discover, dest)
                resent = True
            ready, _, _ = select.select([sock], [], [], min(left, 0.1 if not resent else left))
            if not ready:
                continue
            try:
                data, (ip, port) = sock.recvfrom(65535)
            except OSError:
                continue  # an ICMP error for what we sent; the answers that matter are still to come
            offer = _answer(data, ip, port, xid, me, clock() - start)
            if offer is None:
                result.seen += 1
                continue
            if len(result.offers) >= MAX_ANSWERS or any(
                    (o.server, o.port, o.source) == (offer.server, offer.port, offer.source) for o in result.offers):
                continue  # the answer to the repeated DISCOVER, or a flood
            result.offers.append(offer)
            if on_answer is not None:
                on_answer(offer)
            if offer.port == BOOT_SERVER_PORT:
                for proxy, targets in asked.items():
                    if offer.source in targets or offer.server in targets:
                        result.followups[proxy] = "answered"
            elif _needs_boot_server(offer) and offer.server not in asked:
                if not result.local:
                    result.followups[offer.server] = "not asked"
                    continue
                # PXE 2.1: the proxy gave a menu, not a file: ask its boot server on 4011 for the file.
                result.followups[offer.server] = "silent"
                menu = offer.message.options.get(43)
                request = build_boot_request(me, xid, result.local, menu)
                asked[offer.server] = boot_server_addresses(menu) or [offer.server]
                for target in asked[offer.server]:
                    _send(sock, request, (target, BOOT_SERVER_PORT))
    finally:
        sock.close()
    return result


def _send(sock: socket.socket, data: bytes, dest: tuple[str, int]) -> None:
    try:
        sock.sendto(data, dest)
    except OSError as exc:
        raise DhcpSetupError(f"cannot send to {dest[0]} port {dest[1]}: {exc.strerror}") from None


def _needs_boot_server(offer: Offer) -> bool:
    return offer.proxy and offer.port != BOOT_SERVER_PORT and offer.bootfile is None


def _answer(data: bytes, ip: str, port: int, xid: int, me: ClientIdentity, t: float) -> Offer | None:
    """An answer to us (BOOTREPLY, our xid and MAC, an OFFER or a boot server's ACK), else None."""
    try:
        msg = parse(data)
    except DhcpParseError:
        return None
    if msg.op != BOOTREPLY or msg.xid != xid or msg.chaddr != me.mac:
        return None
    kind = msg.message_type
    if kind == OFFER or (kind == ACK and port == BOOT_SERVER_PORT):
        return Offer(msg, ip, port, t)
    return None
