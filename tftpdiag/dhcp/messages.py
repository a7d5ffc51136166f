"""The two messages a PXE client sends that tftpdiag needs: the DISCOVER and, to a proxyDHCP's boot
server on port 4011, the REQUEST that asks for the boot file (PXE 2.1 §2.2). Neither takes an address:
a DISCOVER only asks, and a REQUEST to port 4011 is answered by a boot server that hands out none.
"""

from __future__ import annotations

import uuid

from tftpdiag.dhcp.arch import Arch
from tftpdiag.dhcp.packet import BOOTREQUEST, DISCOVER, REQUEST, DhcpMessage, encode, parse_suboptions
from tftpdiag.records import record

__all__ = ["ClientIdentity", "build_discover", "build_boot_request", "boot_server_addresses", "PARAMETERS",
           "BROADCAST_FLAG"]

BROADCAST_FLAG = 0x8000  # answer by broadcast: we may have no address, or use a MAC that is not ours
# What PXE firmware asks for (option 55), and the boot options a diagnosis needs: 66/67 (TFTP server
# and file), 150 (Cisco's TFTP servers), 43 (PXE menu and discovery control), 60, 54 (server id),
# 128-135 (PXE vendor use), 175 and 209-211 (iPXE, pxelinux).
PARAMETERS = bytes((1, 3, 6, 12, 15, 17, 28, 43, 54, 60, 66, 67, 97, 119, 128, 129, 130, 131, 132, 133, 134,
                    135, 150, 175, 209, 210, 211))
MAX_MESSAGE_SIZE = 1472  # option 57: an Ethernet frame's worth


@record
class ClientIdentity:
    """Who tftpdiag pretends to be: a MAC (the interface's own or --mac), an architecture, a UUID."""

    mac: bytes
    arch: Arch
    guid: bytes = b"\0" * 16

    @staticmethod
    def make(mac: bytes, arch: Arch) -> ClientIdentity:
        # A stable UUID per MAC, so two runs look like the same machine to a server that logs it.
        return ClientIdentity(mac, arch, uuid.uuid5(uuid.NAMESPACE_OID, mac.hex()).bytes)


def _pxe_options(me: ClientIdentity) -> list[tuple[int, bytes]]:
    return [
        (57, MAX_MESSAGE_SIZE.to_bytes(2, "big")),
        (93, me.arch.code.to_bytes(2, "big")),
        (94, me.arch.undi),
        (97, b"\0" + me.guid),
        (61, b"\x01" + me.mac),
        (60, me.arch.vendor_class.encode()),
        (55, PARAMETERS),
    ]


def build_discover(me: ClientIdentity, xid: int, *, giaddr: str = "0.0.0.0") -> bytes:
    """A DHCPDISCOVER as PXE firmware sends it. With ``giaddr`` (asking a server directly, as a relay
    agent would) the answer goes to the relay's port 67 and the broadcast flag is left off."""
    relayed = giaddr != "0.0.0.0"
    msg = DhcpMessage(op=BOOTREQUEST, xid=xid, chaddr=me.mac, giaddr=giaddr, hops=1 if relayed else 0,
                      flags=0 if relayed else BROADCAST_FLAG, options={53: bytes((DISCOVER,))}, order=(53,))
    return encode(msg, _pxe_options(me))


def build_boot_request(me: ClientIdentity, xid: int, ciaddr: str, menu: bytes | None) -> bytes:
    """A DHCPREQUEST to a boot server's port 4011 for the boot file (PXE 2.1 §2.2.6). ``menu`` is the
    proxy offer's option 43: its first boot menu item (sub-option 9) is asked for (sub-option 71,
    layer 0), as firmware does when the menu times out on its default."""
    extra = _pxe_options(me)
    item = _first_boot_item(menu) if menu else None
    if item is not None:
        extra.append((43, bytes((71, 4)) + item.to_bytes(2, "big") + b"\0\0" + b"\xff"))
    msg = DhcpMessage(op=BOOTREQUEST, xid=xid, chaddr=me.mac, ciaddr=ciaddr,
                      options={53: bytes((REQUEST,))}, order=(53,))
    return encode(msg, extra)


def _subs(menu: bytes) -> dict[int, bytes]:
    try:
        return dict(parse_suboptions(menu))
    except ValueError:
        return {}


def _first_boot_item(menu: bytes) -> int | None:
    """The type of the first item of a PXE boot menu (option 43, sub-option 9: type(2) len(1) text)."""
    items = _subs(menu).get(9, b"")
    return int.from_bytes(items[:2], "big") if len(items) >= 3 else None


def boot_server_addresses(menu: bytes | None) -> list[str]:
    """The boot servers option 43 lists (sub-option 8: type(2) count(1) addresses) for the menu's
    first item, where firmware sends its port-4011 REQUEST; [] when it lists none."""
    if not menu:
        return []
    item, raw = _first_boot_item(menu), _subs(menu).get(8, b"")
    out: list[str] = []
    i = 0
    while i + 3 <= len(raw) and len(out) < 8:
        kind, count = int.from_bytes(raw[i:i + 2], "big"), raw[i + 2]
        addrs = raw[i + 3:i + 3 + 4 * count]
        if item is None or kind == item:
            out += [".".join(str(b) for b in addrs[j:j + 4]) for j in range(0, len(addrs) - len(addrs) % 4, 4)]
        i += 3 + 4 * count
    return [a for a in out if a != "0.0.0.0"][:8]
