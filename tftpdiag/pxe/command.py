"""``tftpdiag pxe``: act as a netbooting client, show every DHCP answer, probe the boot file, judge."""

from __future__ import annotations

import argparse
import json
import sys

from tftpdiag import fmt
from tftpdiag.cli import EXIT_FAILED, EXIT_OK, UsageError
from tftpdiag.dhcp.engine import DhcpSetupError
from tftpdiag.pxe.render import header_line, offer_lines, probe_line, to_json, write_text
from tftpdiag.pxe.run import PxeRequest, discover, finish, probe_boot_file

__all__ = ["run_pxe"]


def run_pxe(args: argparse.Namespace) -> int:
    """Exit 0 when the device would boot, 1 when not, 2 (UsageError) for set-up or permission errors."""
    req = PxeRequest(arch=args.arch, interface=args.interface, mac=args.mac, timeout=args.timeout,
                     probe=not args.no_probe, server=args.server)
    out = sys.stdout
    if not args.json:
        where = f"DHCP server {req.server}" if req.server else (req.interface or "the default interface")
        print(fmt.line(f"tftpdiag pxe: asking {where} as a {req.arch.name} PXE client for {req.timeout:g} s "
                       "(no address is taken)"), file=sys.stderr, flush=True)
    try:
        report = discover(req)
    except DhcpSetupError as exc:
        raise UsageError(str(exc)) from None
    if not args.json:
        probing = [probe_line(report)] if req.probe and probe_line(report) else []
        out.writelines(fmt.line(text) + "\n" for text in [header_line(report), *offer_lines(report), *probing])
        out.flush()
    if req.probe:
        probe_boot_file(report, json_out=args.json, stdout=out)
    finish(report)
    if args.json:
        out.write(json.dumps(to_json(report)) + "\n")
    else:
        write_text(report, out)
    return EXIT_OK if report.ok else EXIT_FAILED
