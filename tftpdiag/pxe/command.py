"""``tftpdiag pxe``: act as a netbooting client, show every DHCP answer, probe the boot file, judge."""

from __future__ import annotations

import argparse
import sys

from tftpdiag import fmt
from tftpdiag.cli.requests import interactive
from tftpdiag.cli.values import EXIT_FAILED, EXIT_OK, UsageError
from tftpdiag.dhcp.engine import DhcpSetupError
from tftpdiag.pxe.render import header_line, offer_lines, probe_line, to_json, write_text
from tftpdiag.pxe.run import PxeReport, PxeRequest, discover, finish, probe_boot_file

__all__ = ["run_pxe"]


def run_pxe(args: argparse.Namespace) -> int:
    """Exit 0 when the device would boot, 1 when not, 2 (UsageError) for set-up or permission errors."""
    req = PxeRequest(arch=args.arch, interface=args.interface, mac=args.mac, timeout=args.timeout,
                     probe=not args.no_probe, server=args.server)
    out = sys.stdout
    tui = interactive(args)

    def announce() -> None:  # once set up: a wrong interface or a missing permission is said alone
        if not args.json:
            where = f"DHCP server {req.server}" if req.server else (req.interface or "the default interface")
            print(fmt.line(f"tftpdiag pxe: asking {where} as {req.arch.client} for {req.timeout:g} s "
                           "(no address is taken)"), file=sys.stderr, flush=True)
    try:
        report = discover(req, on_ready=announce)
    except DhcpSetupError as exc:
        raise UsageError(str(exc)) from None
    if tui:
        return _run_tui(report)
    if not args.json:
        probe = probe_line(report) if req.probe else None
        probing = [probe] if probe else []
        out.writelines(fmt.line(text) + "\n" for text in [header_line(report), *offer_lines(report), *probing])
        out.flush()
    if req.probe:
        probe_boot_file(report, json_out=args.json, stdout=out)
    finish(report)
    if args.json:
        out.write(fmt.json_line(to_json(report)) + "\n")
    else:
        write_text(report, out)
    return EXIT_OK if report.ok else EXIT_FAILED


def _run_tui(report: PxeReport) -> int:
    """The answers in the TUI; then, if asked, the boot file in the probe view; then the verdict printed."""
    import dataclasses

    from tftpdiag.tui.pxe_app import PROBE, PxeApp

    finish(report)
    if PxeApp(report).run() == PROBE and report.request.probe:
        _probe_in_tui(report)
    else:
        report.request = dataclasses.replace(report.request, probe=False)
    finish(report)
    write_text(report, sys.stdout)
    return EXIT_OK if report.ok else EXIT_FAILED


def _probe_in_tui(report: PxeReport) -> None:
    """The boot file in the probe view (its findings there); what it found then goes into the verdict."""
    from tftpdiag.protocol.events import Failed, Side
    from tftpdiag.pxe.run import HeadGrabber, boot_transfer, record_probe
    from tftpdiag.tui.launch import client_app

    made = boot_transfer(report)
    if made is None:
        return
    transfer, bus = made
    head = HeadGrabber(bus)
    app, probe, spool = client_app(transfer, bus, extra=lambda outcome: {})
    try:
        app.run()
    finally:
        probe.cancel()
        spool.close()
        head.close()
    outcome = probe.outcome()
    if outcome is None:
        report.probe_skipped = "the probe was stopped before it ended"
        return
    result = outcome.result
    failure = result if isinstance(result, Failed) else None
    report.probe = {"ok": outcome.ok, "session": outcome.session, "sha256": outcome.sha256 if outcome.ok else None}
    record_probe(report, ok=outcome.ok, replied=outcome.peer is not None,
                 code=failure.code if failure is not None and failure.raised_by == Side.PEER else None,
                 message=failure.message if failure is not None else "",
                 unreachable=f"{failure.reason.value}: {failure.message}" if failure is not None else "",
                 head=head.head)
