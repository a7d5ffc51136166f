"""``tftpdiag pxe`` as plain lines and as one JSON object. Every string a DHCP or TFTP server chose goes
through :mod:`tftpdiag.fmt` (the option texts already are, by :mod:`tftpdiag.dhcp.options`)."""

from __future__ import annotations

from typing import Any, TextIO

from tftpdiag import fmt
from tftpdiag.dhcp.offers import Offer, json_text
from tftpdiag.pxe.run import PxeReport, boot_address
from tftpdiag.report import SCHEMA, finding_lines

__all__ = ["header_line", "cells", "offer_lines", "probe_line", "chain_line", "finding_text", "to_json"]


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def header_line(report: PxeReport) -> str:
    req = report.request
    arch = req.arch
    how = f"asking {req.server} directly as a relay agent" if req.server else f"broadcast on {report.interface.name}"
    n = len(report.collected.offers)
    return (f"DHCP: PXE DISCOVER as {arch.name} (option 93 = {arch.code}, {arch.vendor_class}), MAC "
            f"{_mac(report.identity.mac)}, {how}, {req.timeout:g} s: {n} answer{'s' if n != 1 else ''}"
            + (f", {report.collected.seen} other DHCP message(s) seen" if report.collected.seen else ""))


def cells(offer: Offer) -> list[str]:
    nxt = offer.next_server
    boot = offer.bootfile
    return [
        f"{offer.server}:{offer.port}" if offer.port != 67 else offer.server,
        offer.your_ip or "-",
        f"{fmt.quote(nxt.value) if not nxt.is_address else nxt.value} ({nxt.source})" if nxt else "-",
        f"{fmt.quote(boot)} ({offer.bootfile_source})" if boot is not None else "-",
        ("proxy " if offer.proxy else "") + offer.kind,
        f"{offer.time:.2f}s",
    ]


def offer_lines(report: PxeReport) -> list[str]:
    """A table of the answers, then each answer's options, one per line."""
    offers = report.collected.offers
    if not offers:
        return []
    rows = [["server", "offers", "next-server", "boot file", "kind", "after"]] + [cells(o) for o in offers]
    widths = [min(48, max(len(r[i]) for r in rows)) for i in range(len(rows[0]))]
    out = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for offer in offers:
        out.append(f"  options from {offer.server}" + (f" (port {offer.port})" if offer.port != 67 else "") + ":")
        out += [f"    {code:3d} {name}: {value}" for code, name, value in offer.options_readable()]
    return out


def probe_line(report: PxeReport) -> str | None:
    """What is about to be probed, and which answer said so; None when there is nothing to probe."""
    boot = report.boot
    where = boot_address(report)
    if boot is None or boot.file is None or boot.server is None or boot.boot is None or where is None:
        return None
    return (f"TFTP: probing {where} for {fmt.quote(boot.file)} (boot file from {boot.boot.bootfile_source} of "
            f"{boot.boot.server}, server from its {boot.server.source})")


def chain_line(report: PxeReport, *, pending: bool = False) -> str:
    """``pending``: the probe is still to come (the TUI's first screen), so there is no verdict yet."""
    boot = report.boot
    if boot is None or boot.address is None and boot.boot is None:
        dhcp = "DHCP: no answer"
    elif boot.address is None:
        dhcp = "DHCP: no address offered"
    else:
        dhcp = f"DHCP {boot.address.your_ip} from {boot.address.server}"
    if boot is not None and boot.file is not None and boot.server is not None:
        where = boot_address(report) or fmt.quote(boot.server.value)
        tftp = f"TFTP {where} {fmt.quote(boot.file)}"
        fatal = any(f.severity == "error" for f in report.findings)
        if pending and report.probe is None and not fatal:
            return f"chain: {dhcp} -> {tftp} -> ? (the probe tells)"
        if report.probe is not None:
            tftp += " (probed: " + ("received" if report.probe.get("ok") else "failed") + ")"
        elif report.probe_skipped:
            tftp += f" (not probed: {report.probe_skipped})"
        else:
            tftp += " (not probed)"
    else:
        tftp = "TFTP: no boot file"
    verdict = "would boot" if report.ok else "would NOT boot"
    return f"chain: {dhcp} -> {tftp} -> {verdict}"


def finding_text(report: PxeReport) -> list[str]:
    return [f"  {text}" for text in finding_lines(report.findings)]


def write_text(report: PxeReport, out: TextIO) -> None:
    """The part after the probe's own summary: the findings and the chain."""
    out.writelines(fmt.line(text) + "\n" for text in [*finding_text(report), chain_line(report)])
    out.flush()


def to_json(report: PxeReport) -> dict[str, Any]:
    boot = report.boot
    chosen = None
    if boot is not None and (boot.address is not None or boot.boot is not None):
        chosen = {
            "dhcp_server": boot.address.server if boot.address else None,
            "your_ip": boot.address.your_ip if boot.address else None,
            "boot_from": boot.boot.server if boot.boot else None,
            "next_server": json_text(boot.server.value) if boot.server else None,
            "next_server_address": boot_address(report),
            "bootfile": json_text(boot.file),
        }
    return {
        "schema": SCHEMA,
        "interface": report.interface.name,
        "arch": report.request.arch.name,
        "arch_code": report.request.arch.code,
        "mac": _mac(report.identity.mac),
        "server": report.request.server,
        "timeout_s": report.request.timeout,
        "offers": [o.to_dict() for o in report.collected.offers],
        "seen": report.collected.seen,
        "chosen": chosen,
        "probe": report.probe,
        "probe_skipped": report.probe_skipped or None,
        "findings": [f.to_dict() for f in report.findings],
        "ok": report.ok,
    }
