"""The whole chain a netbooting device walks: DHCP answers -> the boot server and file it would use ->
a TFTP probe of that file with tftpdiag's own client (so every probe finding applies) -> a verdict.
"""

from __future__ import annotations

import io
import ipaddress
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TextIO

from tftpdiag.dhcp.analysis import Boot, ProbeFacts, PxeFacts, analyse, choose_boot
from tftpdiag.dhcp.arch import HEAD_BYTES, Arch
from tftpdiag.dhcp.engine import Collected, DhcpSetupError, Interface, collect, default_interface, interface
from tftpdiag.dhcp.messages import ClientIdentity
from tftpdiag.dhcp.offers import Offer
from tftpdiag.findings import ERROR, Finding
from tftpdiag.pxe.names import candidates, existing
from tftpdiag.records import record

__all__ = ["PxeRequest", "PxeReport", "HeadGrabber", "discover", "probe_request", "boot_transfer", "probe_boot_file",
           "record_probe", "resolve_names", "boot_address", "finish"]

RESOLVE_BUDGET = 3.0  # seconds for all option-66 name look-ups together
_UNREACHABLE = ("no-reply", "host-unreachable", "port-unreachable")


@record
class PxeRequest:
    """What a pxe check asks: as which architecture, from which interface, and whether to probe."""

    arch: Arch
    interface: str | None = None
    mac: bytes | None = None
    timeout: float = 5.0
    probe: bool = True
    server: str | None = None  # ask this DHCP server directly, as a relay agent


@dataclass
class PxeReport:
    """What a pxe check found, from DHCP to the boot file's probe."""

    request: PxeRequest
    interface: Interface
    identity: ClientIdentity
    collected: Collected
    resolved: dict[str, list[str]] = field(default_factory=dict)
    boot: Boot | None = None
    probe: dict[str, Any] | None = None  # the probe's own JSON summary
    probe_facts: ProbeFacts | None = None
    probe_skipped: str = ""  # why there was no probe
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The device would boot: a boot file and server, nothing fatal, and (if probed) the file came."""
        boot = self.boot
        if boot is None or boot.file is None or boot.server is None:
            return False
        if any(f.severity == ERROR for f in self.findings):
            return False
        return self.probe is None and not self.request.probe or bool(self.probe and self.probe.get("ok"))


def discover(req: PxeRequest, on_answer: Callable[[Offer], None] | None = None,
             on_ready: Callable[[], None] | None = None) -> PxeReport:
    """Send the DISCOVER and collect the answers (DhcpSetupError for set-up problems, before ``on_ready``)."""
    # Relayed (--server), the DISCOVER goes wherever the route to the server leads: bound to an
    # interface only when one was named; the MAC is still a real interface's unless --mac says.
    name = req.interface or default_interface()
    iface = interface(name)
    mac = req.mac or iface.mac
    if len(mac) != 6:
        raise DhcpSetupError(f"{iface.name} has no Ethernet MAC address; give one with --mac")
    me = ClientIdentity.make(mac, req.arch)
    collected = collect(me, device=req.interface if req.server else name, address=iface.address,
                        timeout=req.timeout, server=req.server, on_answer=on_answer, on_ready=on_ready)
    report = PxeReport(req, iface, me, collected)
    report.resolved = resolve_names(sorted({s.value for o in collected.offers for s in o.boot_servers
                                            if s.source == "option 66" and not s.is_address}))
    report.boot = choose_boot(collected.offers)
    return report


def resolve_names(names: list[str], budget: float = RESOLVE_BUDGET) -> dict[str, list[str]]:
    """Each name's IPv4 addresses ([] when it does not resolve within ``budget`` seconds in all)."""
    def look(name: str) -> list[str]:
        try:
            infos = socket.getaddrinfo(name, 69, socket.AF_INET, socket.SOCK_DGRAM)
        except (OSError, UnicodeError):
            return []
        return sorted({str(info[4][0]) for info in infos})  # AF_INET: (host, port), the host a str

    names = names[:8]
    if not names:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="pxe-resolve")
    futures = {name: pool.submit(look, name) for name in names}
    wait(futures.values(), timeout=budget)
    pool.shutdown(wait=False, cancel_futures=True)  # a stuck resolver thread is left to finish alone
    return {name: f.result() if f.done() else [] for name, f in futures.items()}


def boot_address(report: PxeReport) -> str | None:
    """The boot server's address: as given, or what its option-66 name resolves to."""
    boot = report.boot
    if boot is None or boot.server is None:
        return None
    try:
        ipaddress.IPv4Address(boot.server.value)
        return boot.server.value
    except ValueError:
        found = report.resolved.get(boot.server.value)
        return found[0] if found else None


def probe_request(report: PxeReport) -> Any:
    """The probe's ClientRequest for the boot file the device would use, or None (and why, in
    ``report.probe_skipped``) when there is nothing to probe."""
    from tftpdiag.engine.client import ClientRequest
    from tftpdiag.protocol.options import RequestedOptions
    from tftpdiag.protocol.timer import Timing

    boot = report.boot
    server = boot_address(report)
    if boot is None or boot.file is None or server is None:
        report.probe_skipped = "no boot file or no boot server address to probe"
        return None
    # As firmware asks: tsize and a block that fits a frame; retries like a PXE ROM's (about 4 tries).
    return ClientRequest(host=server, filename=boot.file, options=RequestedOptions(blksize=1468, tsize=True),
                         timing=Timing(initial_timeout=1.0, retries=3, dally=0.0))


def boot_transfer(report: PxeReport) -> tuple[Any, Any] | None:
    """The probe's transfer of the boot file and its bus, not started; None (and why, in
    ``report.probe_skipped``) when there is nothing to probe or the probe cannot start."""
    from tftpdiag.engine.bus import EventBus
    from tftpdiag.engine.client import ClientTransfer, TransferSetupError

    request = probe_request(report)
    if request is None:
        return None
    bus = EventBus()
    try:
        return ClientTransfer(request, bus), bus
    except TransferSetupError as exc:
        report.probe_skipped = str(exc)
        return None


def probe_boot_file(report: PxeReport, *, json_out: bool, stdout: TextIO) -> None:
    """Download the boot file with the probe's own code path; it prints its summary (unless JSON)."""
    from tftpdiag.headless import run_client_headless

    made = boot_transfer(report)
    if made is None:
        return
    transfer, bus = made
    head = HeadGrabber(bus)
    sub = bus.subscribe()
    try:
        _, summary = run_client_headless(transfer, sub, json_out=json_out, extra=lambda outcome: {},
                                         stdout=io.StringIO() if json_out else stdout)
    finally:
        head.close()
    report.probe = summary
    error = summary.get("error") or {}
    unreachable = next((f["summary"] for f in summary.get("findings", []) if f["id"] in _UNREACHABLE), "")
    record_probe(report, ok=bool(summary.get("ok")), replied=summary["packets"]["received"] > 0,
                 code=error.get("code") if error.get("raised_by") == "peer" else None,
                 message=str(error.get("message") or ""), unreachable=unreachable, head=head.head)


def record_probe(report: PxeReport, *, ok: bool, replied: bool, code: int | None, message: str, unreachable: str,
                 head: bytes) -> None:
    """What the probe found, as the analysis reads it; a missing file starts the sweep for near names."""
    boot = report.boot
    server = boot_address(report)
    assert boot is not None and boot.file is not None and server is not None
    nearest: tuple[str, ...] = ()
    if code == 1:
        others = [o.bootfile for o in report.collected.offers if o.bootfile and o.bootfile != boot.file]
        nearest = tuple(existing(server, candidates(boot.file, report.request.arch, others)))
    report.probe_facts = ProbeFacts(server=server, file=boot.file, ok=ok, replied=replied, error_code=code,
                                    error_message=message, head=head, nearest=nearest, unreachable=unreachable)


class HeadGrabber:
    """Keeps the first DATA block's bytes (a loader's header says what it is built for), read in the
    engine's waits from a subscription that holds only the newest few packets."""

    def __init__(self, bus: Any) -> None:
        from tftpdiag.protocol.events import PacketReceived, PacketRun
        from tftpdiag.protocol.packets import Data

        self._kinds = (PacketReceived, Data, PacketRun)  # a transfer run apart sends its packets in runs
        self.head = b""
        self._bus = bus
        self._sub = bus.subscribe(packet_window=16)
        self._task = self._look
        bus.on_idle(self._task)

    def _look(self) -> None:
        received, data, run = self._kinds
        events = []
        for item in self._sub.drain(16):
            if isinstance(item, run):
                if 1 in item.blocks:  # only a run with block 1 in it is worth its events
                    events += item.events()
            else:
                events.append(item)
        for event in events:
            packet = getattr(event, "packet", None)
            if isinstance(event, received) and isinstance(packet, data) and packet.block == 1 and not self.head:
                self.head = bytes(packet.payload[:HEAD_BYTES])
        if self.head:
            self._bus.remove_idle(self._task)

    def close(self) -> None:
        self._bus.remove_idle(self._task)
        if not self.head:
            self._look()
        self._sub.close()


def finish(report: PxeReport) -> None:
    """The findings, from everything gathered."""
    c = report.collected
    facts = PxeFacts(interface=report.interface.name, arch=report.request.arch, offers=c.offers, seen=c.seen,
                     resolved=report.resolved, followups=c.followups, probe=report.probe_facts)
    report.findings = analyse(facts)
