"""Judge what a netbooting device would do with the answers it got: where it would boot from, and why
it would not. Sans-IO: the engine gathers the facts (answers, name look-ups, the TFTP probe's result);
this module only reasons over them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tftpdiag.dhcp.arch import NOT_UEFI, Arch, Loader, loader_from_bytes, loader_from_name
from tftpdiag.dhcp.offers import BootServer, Offer
from tftpdiag.findings.model import ERROR, INFO, WARNING, Finding, escape_name, evidence
from tftpdiag.records import record

__all__ = ["IDS", "Boot", "ProbeFacts", "PxeFacts", "choose_boot", "analyse"]

IDS = ("no-offer", "several-dhcp-servers", "no-boot-file", "boot-file-not-found", "next-server-unreachable",
       "option-66-unresolved", "proxy-without-boot-server", "arch-mismatch", "boot-file-ok")


@record
class Boot:
    """Where the device would boot from: the address it takes, and the answer giving the boot file."""

    address: Offer | None  # the first offer of an address (the device takes the first)
    boot: Offer | None  # the answer whose boot options it uses (the same one, or a proxy's)
    server: BootServer | None
    file: str | None


@record
class ProbeFacts:
    """What the TFTP probe of the chosen boot file found."""

    server: str
    file: str
    ok: bool
    replied: bool  # the server sent anything at all
    error_code: int | None = None
    error_message: str = ""
    head: bytes = b""  # the loader's first bytes, when some arrived
    nearest: tuple[str, ...] = ()  # names close to the missing one that the server does have
    unreachable: str = ""  # why nothing answered (no reply, ICMP), from the probe's findings


@dataclass
class PxeFacts:
    """Everything a PXE check learnt, for the findings to judge."""

    interface: str
    arch: Arch
    offers: list[Offer]
    seen: int = 0  # DHCP datagrams seen that were not answers to us (someone is out there)
    resolved: dict[str, list[str]] = field(default_factory=dict)  # option 66 names -> addresses ([]: no)
    followups: dict[str, str] = field(default_factory=dict)  # proxy -> its boot server: answered/silent/not asked
    probe: ProbeFacts | None = None


def _has_boot(offer: Offer) -> bool:
    return offer.bootfile is not None and offer.next_server is not None


def choose_boot(offers: list[Offer]) -> Boot:
    """Firmware takes the first offer of an address; its boot options if it has them, else those of a
    proxyDHCP (the boot server's port-4011 answer first: it is the one that names the file)."""
    dhcp = [o for o in offers if not o.proxy]
    address = dhcp[0] if dhcp else None
    candidates = ([address] if address is not None else []) + \
        [o for o in offers if o.proxy and o.port == 4011] + [o for o in offers if o.proxy and o.port != 4011]
    for offer in candidates:
        if offer is not None and _has_boot(offer):
            return Boot(address, offer, offer.next_server, offer.bootfile)
    for offer in candidates:  # a file without a server: firmware asks the DHCP server itself (siaddr 0)
        if offer is not None and offer.bootfile is not None:
            return Boot(address, offer, BootServer(offer.server, "server id"), offer.bootfile)
    return Boot(address, None, None, None)


def _says(offer: Offer) -> str:
    nxt = offer.next_server
    where = f"next-server {escape_name(nxt.value)} ({nxt.source})" if nxt else "no next-server"
    boot = offer.bootfile
    file = f"boot file {escape_name(boot)}" if boot is not None else "no boot file"
    ip = f"offers {offer.your_ip}" if offer.your_ip else "offers no address"
    return f"{offer.server} {ip}, {where}, {file} (after {offer.time:.2f} s)"


def analyse(facts: PxeFacts) -> list[Finding]:
    """The findings, errors first."""
    out: list[Finding] = []
    boot = choose_boot(facts.offers)
    if not facts.offers:
        seen = (f"{facts.seen} other DHCP message(s) were seen on it, so DHCP traffic does pass"
                if facts.seen else "no DHCP message at all was seen on it")
        out.append(Finding("no-offer", ERROR, f"No DHCP server answered {facts.arch.client} on "
                           f"{facts.interface}: {seen}", (),
                           "Check that a DHCP server (or a relay, ip helper-address) serves this segment, that "
                           "its range is not exhausted, and that it answers PXE clients (option 60 PXEClient, "
                           f"option 93 = {facts.arch.code})."))
        return out
    out += _several(facts.offers)
    out += _proxies(facts, boot)
    out += _unresolved(facts, boot)
    if boot.file is None:
        who = boot.address.server if boot.address else "the proxyDHCP"
        out.append(Finding("no-boot-file", ERROR, f"No answer names a boot file for {facts.arch.name} "
                           f"(option 93 = {facts.arch.code}): the device gets an address from {who} and "
                           "nothing to boot (PXE-E53)", evidence(_says(o) for o in facts.offers),
                           "Give this architecture a boot file (dnsmasq: dhcp-match=set:TAG,option:client-arch,"
                           f"{facts.arch.code} and dhcp-boot=tag:TAG,FILE; ISC: 'filename' in a class matching "
                           "option 93)." + (" x64 firmware sends 7, some 9: match both." if facts.arch.code in (7, 9)
                                            else "")))
    if boot.file is not None:
        out += _arch(facts.arch, boot.file, facts.probe)
    if facts.probe is not None:
        out += _probe(facts.probe, boot)
    return sorted(out, key=lambda f: -f.rank)


def _several(offers: list[Offer]) -> list[Finding]:
    servers: dict[str, Offer] = {}
    for o in offers:
        if not o.proxy:
            servers.setdefault(o.server, o)
    if len(servers) < 2:
        return []
    first = next(iter(servers.values()))
    differ = any((o.bootfile, o.next_server) != (first.bootfile, first.next_server) for o in servers.values())
    severity = ERROR if differ else WARNING
    what = "and they say different things: the device boots from whichever is first" if differ else \
        "with the same boot options"
    return [Finding("several-dhcp-servers", severity, f"{len(servers)} DHCP servers answered, {what}",
                    evidence(_says(o) for o in servers.values()),
                    "Keep one DHCP server per segment (or make them agree); a stray one is often a router or "
                    "a virtualisation host's dnsmasq.")]


def _proxies(facts: PxeFacts, boot: Boot) -> list[Finding]:
    out = []
    for o in facts.offers:
        if not o.proxy or o.port == 4011 or _has_boot(o) or o.bootfile is not None:
            continue
        answered = facts.followups.get(o.server)
        got = any(a.port == 4011 and a.bootfile for a in facts.offers)
        if got:
            continue
        why = {"silent": "its boot server on port 4011 did not answer",
               "answered": "its boot server on port 4011 answered without a boot file",
               "not asked": "its boot server on port 4011 could not be asked (this interface has no IPv4 "
                            "address to ask from)"}.get(answered or "", "it names no boot server and no boot file")
        # Fatal when the device has no other boot file; beside another server's, firmware that prefers
        # the proxy (as PXE asks) still stops on it.
        severity = WARNING if (boot.file is not None and boot.boot is not o) or answered == "not asked" else ERROR
        out.append(Finding("proxy-without-boot-server", severity, f"proxyDHCP {o.server} answers PXE clients but "
                           f"{why}: a device that follows it stops with PXE-E55", evidence([_says(o)]),
                           "Run the boot server part too (dnsmasq: pxe-service=... with enable-tftp; "
                           "WDS/SCCM: the PXE responder service) or give the proxy a boot file."))
    return out


def _unresolved(facts: PxeFacts, boot: Boot) -> list[Finding]:
    out = []
    for o in facts.offers:
        for server in o.boot_servers:
            if server.source != "option 66" or server.is_address:
                continue
            if facts.resolved.get(server.value):
                continue
            chosen = boot.server == server and boot.boot is o
            out.append(Finding("option-66-unresolved", ERROR if chosen else WARNING,
                               f"{o.server} names the TFTP server {escape_name(server.value)} in option 66, "
                               "a name that does not resolve here", evidence([_says(o)]),
                               "Put an address in option 66 (or next-server/siaddr), or make the name resolve "
                               "through the DNS servers that DHCP hands out; much firmware cannot resolve "
                               "names at all."))
    return out


def _arch(arch: Arch, file: str, probe: ProbeFacts | None) -> list[Finding]:
    loader: Loader = loader_from_bytes(probe.head) if probe is not None and probe.head else Loader(None)
    if loader.firmware is None:
        loader = loader_from_name(file)
    if loader.firmware is None:
        return []
    wrong_cpu = (loader.firmware == "uefi" and arch.firmware == "uefi" and loader.machine is not None
                 and loader.machine not in arch.machines)
    fits = loader.firmware == arch.firmware or (loader.firmware == NOT_UEFI and arch.firmware == "bios")
    if fits and not wrong_cpu:
        return []
    built = {NOT_UEFI: "not a UEFI executable", "bios": "for BIOS"}.get(loader.firmware, "for UEFI")
    if wrong_cpu:
        built = f"for {loader.cpu} UEFI"
    return [Finding("arch-mismatch", ERROR,
                    f"The boot file {escape_name(file)} is {built} but the client is {arch.title} "
                    f"(option 93 = {arch.code}): {loader.reason}", (),
                    "Match the boot file to option 93 (dnsmasq: dhcp-match=set:efi64,option:client-arch,7 "
                    "and dhcp-boot=tag:efi64,...; ISC: if option arch = 00:07 { filename ...; }); note that x64 "
                    "firmware sends 7, some 9.")]


def _probe(probe: ProbeFacts, boot: Boot) -> list[Finding]:
    name = escape_name(probe.file)
    if probe.ok:
        return [Finding("boot-file-ok", INFO, f"{probe.server} serves {name} over TFTP", ())]
    if not probe.replied:
        why = probe.unreachable or "nothing answered"
        src = f" (from {boot.server.source} of {boot.boot.server})" if boot.server and boot.boot else ""
        return [Finding("next-server-unreachable", ERROR, f"The boot server {probe.server}{src} does not answer "
                        f"TFTP: {why}", (),
                        "Check the address handed out (next-server / option 66 / 150), that a TFTP server runs "
                        "there, and that no firewall drops UDP 69 on the way.")]
    if probe.error_code == 1:
        near = ", ".join(escape_name(n) for n in probe.nearest)
        ev = [f"the server said: {probe.error_message}"] + ([f"it does have: {near}"] if near else [])
        return [Finding("boot-file-not-found", ERROR, f"{probe.server} has no {name}, the boot file DHCP hands "
                        "out" + (f"; it does have {near}" if near else ""), evidence(ev),
                        "Put the file in the TFTP root, or fix the name in DHCP (option 67 / filename): "
                        "letter case, slashes and the path relative to the TFTP root matter.")]
    return []
