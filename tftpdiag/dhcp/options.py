"""DHCP options in words: names, and values shown as addresses, numbers, text or hex by type.

Every value was chosen by the server that sent it: text passes through :func:`tftpdiag.fmt.clean`
here, so what this module returns is safe to print, and bounded.
"""

from __future__ import annotations

import ipaddress

from tftpdiag import fmt
from tftpdiag.dhcp.packet import MESSAGE_TYPES, DhcpParseError, parse_suboptions

__all__ = ["option_name", "option_value", "readable", "pxe_suboptions"]

_ADDR, _ADDRS, _U8, _U16, _U32, _TEXT, _HEX, _TYPE, _CODES, _PXE = range(10)

_OPTIONS: dict[int, tuple[str, int]] = {
    1: ("subnet mask", _ADDR), 3: ("router", _ADDRS), 6: ("DNS servers", _ADDRS), 12: ("host name", _TEXT),
    15: ("domain name", _TEXT), 17: ("root path", _TEXT), 26: ("MTU", _U16), 28: ("broadcast address", _ADDR),
    42: ("NTP servers", _ADDRS), 43: ("vendor options", _PXE), 50: ("requested address", _ADDR),
    51: ("lease time", _U32), 52: ("overload", _U8), 53: ("message type", _TYPE), 54: ("server id", _ADDR),
    55: ("parameters asked", _CODES), 56: ("message", _TEXT), 57: ("max message size", _U16),
    58: ("renewal time", _U32), 59: ("rebinding time", _U32), 60: ("vendor class", _TEXT),
    61: ("client id", _HEX), 66: ("TFTP server name", _TEXT), 67: ("boot file name", _TEXT),
    93: ("client architecture", _U16), 94: ("client NDI", _HEX), 97: ("client UUID", _HEX),
    119: ("domain search", _HEX), 121: ("classless routes", _HEX), 150: ("TFTP servers", _ADDRS),
    175: ("iPXE options", _HEX), 209: ("pxelinux config file", _TEXT), 210: ("pxelinux path prefix", _TEXT),
    211: ("pxelinux reboot time", _U32),
}

# Option 43 sub-options of PXE 2.1 (when option 60 is "PXEClient").
_PXE_SUBS = {1: "MTFTP address", 2: "MTFTP client port", 3: "MTFTP server port", 4: "MTFTP timeout",
             5: "MTFTP delay", 6: "discovery control", 7: "multicast discovery address", 8: "boot servers",
             9: "boot menu", 10: "menu prompt", 71: "boot item"}


def option_name(code: int) -> str:
    return _OPTIONS.get(code, (f"option {code}", _HEX))[0]


def _text(value: bytes) -> str:
    return fmt.quote(value.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"))


def _hex(value: bytes, limit: int = 64) -> str:
    shown = value[:limit].hex(" ")
    return shown + (f" …(+{len(value) - limit} bytes)" if len(value) > limit else "")


def _addrs(value: bytes) -> str:
    if len(value) % 4 or not value:
        return _hex(value) + " (not a list of IPv4 addresses)"
    return ", ".join(str(ipaddress.IPv4Address(value[i:i + 4])) for i in range(0, min(len(value), 64), 4)) + \
        (f" …(+{len(value) // 4 - 16} more)" if len(value) > 64 else "")


def _number(value: bytes, size: int) -> str:
    if len(value) != size:
        return _hex(value) + f" (expected {size} bytes)"
    return str(int.from_bytes(value, "big"))


def option_value(code: int, value: bytes) -> str:
    """One option's value, readable and safe to show."""
    kind = _OPTIONS.get(code, ("", _HEX))[1]
    if kind == _ADDR:
        return _addrs(value) if len(value) == 4 else _hex(value) + " (not an IPv4 address)"
    if kind == _ADDRS:
        return _addrs(value)
    if kind in (_U8, _U16, _U32):
        return _number(value, {_U8: 1, _U16: 2, _U32: 4}[kind])
    if kind == _TEXT:
        return _text(value)
    if kind == _TYPE:
        return MESSAGE_TYPES.get(value[0], f"type {value[0]}") if len(value) == 1 else _hex(value)
    if kind == _CODES:
        return " ".join(str(b) for b in value[:64])
    if kind == _PXE:
        subs = pxe_suboptions(value)
        return "; ".join(f"{k}={v}" for k, v in subs) if subs else _hex(value)
    return _hex(value)


def pxe_suboptions(value: bytes) -> list[tuple[str, str]]:
    """Option 43 read as PXE sub-options, each (name, readable value); [] when it is not TLVs."""
    try:
        subs = parse_suboptions(value)
    except DhcpParseError:
        return []
    out: list[tuple[str, str]] = []
    for code, raw in subs[:32]:
        name = _PXE_SUBS.get(code, f"sub-option {code}")
        if code == 9:
            shown = _menu(raw)
        elif code == 10 and raw:
            shown = f"wait {raw[0]} s: " + _text(raw[1:])
        elif code == 6 and len(raw) == 1:
            shown = _discovery_control(raw[0])
        else:
            shown = _hex(raw)
        out.append((name, shown))
    return out


def _menu(raw: bytes) -> str:
    items, i = [], 0
    while i + 3 <= len(raw) and len(items) < 16:
        kind, length = int.from_bytes(raw[i:i + 2], "big"), raw[i + 2]
        items.append(f"{kind}:{_text(raw[i + 3:i + 3 + length])}")
        i += 3 + length
    return ", ".join(items) or _hex(raw)


def _discovery_control(bits: int) -> str:
    words = [w for bit, w in ((1, "no broadcast discovery"), (2, "no multicast discovery"),
                              (4, "only listed boot servers"), (8, "boot file in this offer, no menu"))
             if bits & bit]
    return f"{bits} ({', '.join(words) or 'discover boot servers'})"


def readable(options: dict[int, bytes], order: tuple[int, ...]) -> list[tuple[int, str, str]]:
    """(code, name, value) for each option in the order the server sent them, bounded."""
    return [(code, option_name(code), option_value(code, options[code])) for code in order[:64]]
