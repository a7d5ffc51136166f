"""The pxe command's argument types; light to import, as the parser is built on every start."""

from __future__ import annotations

import argparse
import re

from tftpdiag.cli.listing import COMMAND_HELP
from tftpdiag.dhcp.arch import ARCHES, Arch, by_name

__all__ = ["parse_mac", "arch_choice", "ARCH_HELP", "add_pxe_parser"]

ARCH_HELP = "; ".join(f"{a.name} ({a.code})" for a in ARCHES)


def parse_mac(text: str) -> bytes:
    digits = re.sub(r"[:.\-]", "", text.strip())
    if not re.fullmatch(r"[0-9a-fA-F]{12}", digits):
        raise argparse.ArgumentTypeError(f"expected a MAC address like 02:00:00:12:34:56, not {text!r}")
    return bytes.fromhex(digits)


def arch_choice(text: str) -> Arch:
    arch = by_name(text)
    if arch is None:
        raise argparse.ArgumentTypeError(f"unknown architecture {text!r}; choose from "
                                         + ", ".join(a.name for a in ARCHES))
    return arch


PXE_EXAMPLES = """examples:
  sudo tftpdiag pxe --interface eth0                       # as a BIOS PXE client
  sudo tftpdiag pxe --interface eth0 --arch efi-x64 --json | jq .findings
  sudo tftpdiag pxe --server 10.1.2.3 --arch efi-arm64    # one DHCP server in another subnet, via unicast

Safe on a production network: it sends a DHCPDISCOVER (and, to a proxyDHCP's boot server, the PXE
request on port 4011), never a DHCPREQUEST to a DHCP server, so it never takes an address.
Needs root (or CAP_NET_RAW and CAP_NET_BIND_SERVICE): DHCP answers come to port 68.
exit status: 0 the device would boot, 1 it would not, 2 usage or permission error.
"""


def add_pxe_parser(sub: argparse._SubParsersAction) -> None:
    """The pxe command's arguments (called by tftpdiag.cli.parser.build_parser)."""
    from tftpdiag.cli.values import Formatter, seconds_between

    pxe = sub.add_parser("pxe", help=COMMAND_HELP["pxe"],
                         description="Broadcast a PXE DHCPDISCOVER as a device of ARCH would, show every answer "
                                     "(DHCP servers and proxyDHCP, with their options), then probe the boot "
                                     "file from the boot server it names and say whether the device would boot "
                                     "and why not. Never takes an address: safe on production networks.",
                         epilog=PXE_EXAMPLES, formatter_class=Formatter)
    g = pxe.add_argument_group("pxe")
    g.add_argument("--interface", "-i", default=None, metavar="IFACE",
                   help="interface to broadcast on (default: the one of the default route)")
    g.add_argument("--arch", type=arch_choice, default=arch_choice("bios"), metavar="ARCH",
                   help=f"client architecture sent in options 93, 60 and 94 (default bios): {ARCH_HELP}")
    g.add_argument("--mac", type=parse_mac, default=None, metavar="MAC",
                   help="hardware address to ask as (default: the interface's own); servers that match "
                        "MACs answer it as they would that device")
    g.add_argument("--timeout", type=seconds_between(0.5, 120, "5"), default=5.0, metavar="SECONDS",
                   help="how long to collect answers (default 5: dnsmasq pings an address for 3 s before "
                        "offering it)")
    g.add_argument("--no-probe", action="store_true", help="only DHCP: do not download the boot file over TFTP")
    g.add_argument("--server", default=None, metavar="ADDR",
                   help="ask this DHCP server directly by unicast, as a relay agent would (giaddr set to "
                        "this machine's address toward it; it needs a range for that subnet): for a server "
                        "in another subnet")
    g = pxe.add_argument_group("output")
    g.add_argument("--no-tui", action="store_true",
                   help="plain output for scripts (automatic when stdout is not a terminal)")
    g.add_argument("--json", action="store_true",
                   help="print {interface, arch, offers, chosen, probe, findings, ok} as JSON on stdout "
                        "(implies --no-tui)")
