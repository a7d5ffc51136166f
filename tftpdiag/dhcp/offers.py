"""One answer a netbooting client got, reduced to what decides where it boots from.

A boot server comes from ``siaddr`` (next-server), option 66 (a name or an address) or option 150
(Cisco: a list); the file from the ``file`` field or option 67. A proxyDHCP answer offers no address
(yiaddr 0.0.0.0) and says "PXEClient" in option 60; it adds boot options to another server's offer.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tftpdiag.dhcp.options import readable
from tftpdiag.dhcp.packet import MESSAGE_TYPES, DhcpMessage, parse_suboptions
from tftpdiag.records import record

__all__ = ["Offer", "BootServer", "JSON_LIMIT", "json_text"]

JSON_LIMIT = 1000  # characters of a server's string kept in JSON (a DHCP string is at most a few hundred)


def json_text(text: str | None) -> str | None:
    """A server's string as ``--json`` keeps it: the original, bounded, not escaped for a terminal (JSON
    escapes it, and :func:`tftpdiag.fmt.json_line` writes bytes that are not UTF-8 by its rule). Escaped
    text here could not be told from a server's own backslashes, nor compared with ``probe.file``."""
    return None if text is None else text[:JSON_LIMIT]


@record
class BootServer:
    """Where an offer says the boot file is, and which field of it said so."""

    value: str  # an address, or a name for option 66
    source: str  # "siaddr", "option 66", "option 150", "sname"

    @property
    def is_address(self) -> bool:
        try:
            ipaddress.IPv4Address(self.value)
        except ValueError:
            return False
        return True


@record
class Offer:
    """A DHCP answer (OFFER, or ACK from a boot server on port 4011), with where it came from."""

    message: DhcpMessage
    source: str  # the IP address the datagram came from
    port: int  # the server's port: 67, or 4011 for a boot server
    time: float  # seconds after the DISCOVER went out

    @property
    def server(self) -> str:
        """Who the server says it is (option 54), else where the datagram came from."""
        return self.message.option_address(54) or self.source

    @property
    def your_ip(self) -> str | None:
        """The address offered; a boot server's ACK on port 4011 only echoes the client's own."""
        return None if self.message.yiaddr == "0.0.0.0" or self.port == 4011 else self.message.yiaddr

    @property
    def pxe_class(self) -> bool:
        text = self.message.option_text(60) or ""
        return text.startswith(("PXEClient", "HTTPClient"))

    @property
    def proxy(self) -> bool:
        """A proxyDHCP answer: boot options for a PXE client, no address."""
        return self.port == 4011 or (self.your_ip is None and self.pxe_class)

    @property
    def boot_servers(self) -> list[BootServer]:
        """Every boot server the answer names, in the order firmware prefers them."""
        m = self.message
        out = []
        if m.siaddr != "0.0.0.0":
            out.append(BootServer(m.siaddr, "siaddr"))
        name = m.option_text(66)
        if name:
            out.append(BootServer(name.strip(), "option 66"))
        listed = m.options.get(150, b"")
        out += [BootServer(str(ipaddress.IPv4Address(listed[i:i + 4])), "option 150")
                for i in range(0, len(listed) - len(listed) % 4, 4)][:8]
        return out

    @property
    def next_server(self) -> BootServer | None:
        servers = self.boot_servers
        return servers[0] if servers else None

    @property
    def bootfile(self) -> str | None:
        """The boot file: the ``file`` field, else option 67 (firmware reads the field first)."""
        return self.message.file_text or self.message.option_text(67) or None

    @property
    def bootfile_source(self) -> str:
        return "file field" if self.message.file_text else "option 67"

    @property
    def pxe_menu(self) -> bytes | None:
        """Option 43 when it holds PXE sub-options (a menu or boot servers): a boot server may follow."""
        raw = self.message.options.get(43)
        if not raw or not self.pxe_class:
            return None
        try:
            subs = dict(parse_suboptions(raw))
        except ValueError:
            return None
        return raw if (8 in subs or 9 in subs or 6 in subs) else None

    @property
    def kind(self) -> str:
        return MESSAGE_TYPES.get(self.message.message_type or 0, "BOOTP reply")

    def options_readable(self) -> list[tuple[int, str, str]]:
        return readable(self.message.options, self.message.order)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; every string from the server as it sent it (bounded), the option values in words."""
        nxt = self.next_server
        boot = self.bootfile
        return {
            "server": self.server,
            "source": self.source,
            "port": self.port,
            "type": self.kind,
            "time_s": round(self.time, 3),
            "your_ip": self.your_ip,
            "next_server": json_text(nxt.value) if nxt else None,
            "next_server_from": nxt.source if nxt else None,
            "bootfile": json_text(boot),
            "proxy": self.proxy,
            "options": [{"code": c, "name": n, "value": v} for c, n, v in self.options_readable()],
        }
