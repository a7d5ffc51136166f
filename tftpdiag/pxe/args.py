"""The pxe command's argument types; light to import, as the parser is built on every start."""

from __future__ import annotations

import argparse
import re

from tftpdiag.dhcp.arch import ARCHES, Arch, by_name

__all__ = ["parse_mac", "arch_choice", "ARCH_HELP"]

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
