"""Which names close to a missing boot file a TFTP server does have: a short, bounded sweep.

A third-party server will not list its directory, but it answers a read request for a name it has
with DATA (or an OACK) and for one it lacks with ERROR 1. Asking for a handful of likely names (the
same name without a leading slash, with forward slashes, in lower case; the files other DHCP answers
named; the usual loaders for this architecture) and stopping each at its first answer costs a few
datagrams, and usually tells the operator what the name should have been.
"""

from __future__ import annotations

import socket
import time

from tftpdiag.dhcp.arch import Arch
from tftpdiag.protocol.packets import Data, Error, OAck, Opcode, ProtocolError, Request, decode, encode

__all__ = ["candidates", "existing", "MAX_NAMES"]

MAX_NAMES = 16  # names asked, at most
WAIT = 0.5  # seconds for one answer
BUDGET = 4.0  # seconds for the whole sweep

_LOADERS = {
    "bios": ("pxelinux.0", "lpxelinux.0", "undionly.kpxe", "ipxe.pxe", "undionly.kkpxe"),
    0x8664: ("ipxe.efi", "snponly.efi", "bootx64.efi", "grubx64.efi", "shimx64.efi", "syslinux.efi"),
    0x14C: ("ipxe.efi", "bootia32.efi", "grubia32.efi", "snponly.efi"),
    0xAA64: ("ipxe.efi", "snponly.efi", "bootaa64.efi", "grubaa64.efi", "shimaa64.efi"),
}


def candidates(missing: str, arch: Arch, others: list[str]) -> list[str]:
    """Names worth asking for instead of ``missing``, most likely first, without repeats."""
    slashed = missing.replace("\\", "/")
    folder, _, base = slashed.lstrip("/").rpartition("/")
    loaders = _LOADERS["bios"] if arch.firmware == "bios" else _LOADERS.get(arch.machines[0] if arch.machines else 0, ())
    names = [slashed, slashed.lstrip("/"), slashed.lower(), slashed.lstrip("/").lower(), base, base.lower(),
             *others, *(f"{folder}/{n}" if folder else n for n in loaders), *loaders]
    out: list[str] = []
    for name in names:
        if name and name != missing and name not in out and len(name) < 256:
            out.append(name)
    return out[:MAX_NAMES]


def existing(server: str, names: list[str], port: int = 69, *, wait: float = WAIT,
             budget: float = BUDGET, most: int = 3) -> list[str]:
    """The first ``most`` names in ``names`` that ``server`` serves (it answered with DATA or an OACK),
    within ``budget`` seconds; each transfer it starts is stopped with ERROR 0 at once."""
    found: list[str] = []
    deadline = time.monotonic() + budget
    for name in names[:MAX_NAMES]:
        if len(found) >= most:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(min(wait, left))
            try:
                sock.sendto(encode(Request(Opcode.RRQ, name, "octet")), (server, port))
                data, peer = sock.recvfrom(65536)
            except OSError:  # timeout, or ICMP: this server will not tell
                break
            try:
                packet = decode(data)
            except ProtocolError:  # a peer's garbage only means "no answer"
                continue
            if isinstance(packet, (Data, OAck)):
                found.append(name)
                try:
                    sock.sendto(encode(Error(0, "tftpdiag pxe: only checking that the file exists")), peer)
                except OSError:
                    pass
            elif not isinstance(packet, Error):
                continue
    return found
