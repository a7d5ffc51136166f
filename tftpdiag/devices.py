"""Devices: a client's sessions as one boot sequence, judged as a whole.

A device that boots asks for several files in turn: a size probe, optional per-serial or per-MAC files
that may not exist, a configuration, an image. One session at a time, a missing file or an abort looks
like a failure; in its sequence it is often what the firmware does on purpose. This module groups
finished sessions by the client's address, names what each attempt was (from either side's record:
`serve` sees server sessions, `watch` and `trace` client sessions), recognises the normal patterns and
judges the device: ``booted``, ``uploaded`` (it only sent files: a device that backs up its
configuration, or a user's put), ``stuck`` or ``in-progress``, with findings across its sessions. A
failure the device went on from (it got another file after it) is not where it stopped: it did without
that file, which a finding names; only a failure it never got past leaves it stuck.

It reads SessionRecords only; the serve, watch and trace views and their JSON all build devices here.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tftpdiag.findings.model import ERROR, INFO, MAX_EVIDENCE, WARNING, Finding
from tftpdiag.fmt import clean, file_name
from tftpdiag.protocol.events import Completed, Failed, Reason
from tftpdiag.protocol.observer import CUT_WITHIN
from tftpdiag.report import SCHEMA
from tftpdiag.sessions import SessionRecord, fmt_bytes

__all__ = ["Attempt", "Device", "DeviceBook", "attempt_of"]

# Outcomes of one attempt (one request and what followed).
DONE, MISSING, REFUSED, ABORTED, ENDED_BY_CLIENT, NO_REPLY, FAILED, ACTIVE = (
    "done", "missing", "refused", "aborted-after-oack", "ended-by-client", "no-reply", "failed", "in-progress")
# How a failed attempt reads after "stopped after" or "went on to other files after", by its outcome:
# "stopped after 'nope' was not found".
_STOPPED_AFTER = {
    MISSING: "{} was not found", REFUSED: "{} was refused", ABORTED: "it aborted {} after the server's OACK",
    ENDED_BY_CLIENT: "it ended the transfer of {} itself", NO_REPLY: "{} got no answer", FAILED: "{} failed",
}
BOOTED, UPLOADED, STUCK, IN_PROGRESS = "booted", "uploaded", "stuck", "in-progress"

SIZE_PROBE_WITHIN = 30.0  # s: UEFI asks again for the file right after its size probe
AGAIN_STUCK = 3  # a missing file asked for this many times (never found) means the device is stuck
ABORTS_STUCK = 2  # aborts after the OACK of one file, never followed by its download
MAX_ATTEMPTS = 256  # kept per device: a device that loops for days must not grow without bound
MAX_DEVICES = 65536
CONFIG_SUFFIXES = (".cfg", ".cnf", ".conf", ".xml", ".ini", ".txt", ".json", ".boot", ".ipxe", ".scr")


@dataclass(slots=True)
class Attempt:
    """One request of a device and how it ended."""

    session: int
    name: str
    time: float
    outcome: str
    bytes: int = 0
    download: bool = True
    tsize_asked: bool = False
    error: str = ""
    normal: str = ""  # why a failure is what the firmware meant to do ("size probe", "optional", ...)
    gave_up_at: float | None = None  # a transfer that ended by a timeout: when (a capture's end may have cut it)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "outcome": self.outcome, "time": round(self.time, 6), "bytes": self.bytes,
                "direction": "download" if self.download else "upload", "session": self.session,
                "normal": self.normal or None, "error": self.error or None}


# Refusals of datagrams that asked for nothing (RequestRefused.received says what came: a stray ACK, DATA
# or ERROR at the listening port, a client's ACK of the ERROR that refused it, undecodable bytes) are no
# step of a boot; these whys say so in a trace written before ``received``.
_NOT_ATTEMPTS = frozenset(("not-a-request", "error-acked", "malformed"))


def attempt_of(record: SessionRecord) -> Attempt | None:
    """What one finished (or still running) session was, seen from the client's side."""
    refused = record.refused
    if refused is not None:  # a server of ours turned the request away
        if refused.received or refused.why in _NOT_ATTEMPTS:
            return None
        # Its why says what the code may not: our server answers a name the file system cannot hold
        # with ERROR 1 too (why: bad-name), a file no device can ever get, not an optional one missing.
        # The code decides only where no why was recorded.
        outcome = MISSING if refused.why == "not-found" or (not refused.why and refused.code == 1) else REFUSED
        return Attempt(record.session, refused.filename, refused.time, outcome, 0, refused.is_read,
                       error=refused.message)
    if record.role is None or record.started is None:
        return None
    asked_tsize = any(name.lower() == "tsize" for name, _ in record.requested)
    a = Attempt(record.session, record.filename, record.started, ACTIVE, record.bytes,
                record.role.is_download, asked_tsize)
    result = record.result
    if isinstance(result, Completed):
        a.outcome = DONE
    elif isinstance(result, Failed):
        a.error = result.message
        by_client = record.error_sender == "client"
        if result.code is not None and not by_client:
            a.outcome = MISSING if result.code == 1 else REFUSED
        elif result.code is not None and by_client and not record.data_seen and record.negotiated is not None:
            a.outcome = ABORTED
        elif result.code is not None and by_client:
            # The client's own ERROR (its user or firmware cancelled, or it disliked what came): not a
            # file the server failed to give it.
            a.outcome = ENDED_BY_CLIENT
        elif result.reason is Reason.TIMEOUT and record.replied_from is None and not record.data_seen \
                and record.role.is_client:
            a.outcome = NO_REPLY
        else:
            a.outcome = FAILED
        if result.reason is Reason.TIMEOUT:
            a.gave_up_at = result.time
    return a


def _cut(a: Attempt, end: float) -> bool:
    """A transfer of a finished capture that the capture's end cut (its last packet came just before it):
    still in progress, as far as anyone can tell, not failed."""
    return a.gave_up_at is not None and a.outcome == FAILED and end - a.gave_up_at < CUT_WITHIN


@dataclass
class Device:
    """One device (a client address) and its boot sequence: the attempts it made, in order, and a verdict."""

    address: str
    mac: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    dropped: int = 0  # attempts let go past MAX_ATTEMPTS (oldest first)
    verdict: str = IN_PROGRESS
    findings: list[Finding] = field(default_factory=list)

    @property
    def last(self) -> float:
        return max((a.time for a in self.attempts), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "event": "device", "address": self.address, "mac": self.mac, "verdict": self.verdict,
                "files": [a.to_dict() for a in self.attempts], "earlier_attempts_dropped": self.dropped,
                "findings": [f.to_dict() for f in self.findings]}


class DeviceBook:
    """Devices built from sessions as they finish (``add``) and judged on demand (``judge``)."""

    def __init__(self) -> None:
        # Least recently heard from first, so the one to let go (past MAX_DEVICES) costs one step.
        self._devices: OrderedDict[str, Device] = OrderedDict()
        self._seen: dict[int, str] = {}  # session -> address, so a session updated later is replaced

    def add(self, record: SessionRecord) -> None:
        attempt = attempt_of(record)
        client = record.client if record.refused is None else record.refused.peer
        if attempt is None or client is None:
            return
        address = client[0]
        device = self._devices.get(address)
        if device is None:
            if len(self._devices) >= MAX_DEVICES:
                # The device heard from least recently goes: the dict is kept in that order (below).
                self._devices.popitem(last=False)
            device = self._devices[address] = Device(address)
        else:
            self._devices.move_to_end(address)  # now the most recently heard from
        if self._seen.get(record.session) == address:
            device.attempts = [a for a in device.attempts if a.session != record.session]
        self._seen[record.session] = address
        if len(self._seen) > 4 * MAX_ATTEMPTS * 64:
            self._seen.clear()  # only matters for sessions updated while running; they finish soon
        device.attempts.append(attempt)
        if len(device.attempts) > MAX_ATTEMPTS:
            device.dropped += len(device.attempts) - MAX_ATTEMPTS
            del device.attempts[:len(device.attempts) - MAX_ATTEMPTS]

    def add_all(self, records: Iterable[SessionRecord]) -> DeviceBook:
        for record in records:
            self.add(record)
        return self

    def __len__(self) -> int:
        return len(self._devices)

    def judge(self, now: float, quiet: float = 30.0, macs: dict[str, str] | None = None, *,
              ended: bool = False) -> list[Device]:
        """Every device judged at ``now``: one quiet for ``quiet`` seconds has finished what it was doing.
        ``macs`` names the MAC address of a client address, where a capture saw it. ``ended``: a record
        read to its end (a trace file, ``now`` its end): nothing more will come, so every device has
        finished, and only a transfer that never ended or that the capture cut is in progress."""
        out = []
        for device in self._devices.values():
            if macs and device.mac is None:
                device.mac = macs.get(device.address)
            _judge(device, now, quiet, ended)
            out.append(device)
        out.sort(key=lambda d: (d.verdict != STUCK, -d.last))
        return out


def _went_on(attempts: list[Attempt]) -> list[bool]:
    """For each attempt, whether the device got another file after it (so it went on without this one,
    had it failed). One pass from the end, keeping up to two names of later successes: with two, one
    differs from any name, so a device of hundreds of attempts is not walked again for each."""
    flags = [False] * len(attempts)
    later: list[str] = []
    for i in range(len(attempts) - 1, -1, -1):
        a = attempts[i]
        flags[i] = any(name != a.name for name in later)
        if a.outcome == DONE and a.name not in later and len(later) < 2:
            later.append(a.name)
    return flags


def _said(a: Attempt) -> str:
    """What the ERROR of a failed attempt said, bounded and escaped as every untrusted string shown."""
    return f" ({clean(a.error)})" if a.error else ""


def _judge(device: Device, now: float, quiet: float, ended: bool = False) -> None:
    attempts = sorted(device.attempts, key=lambda a: a.time)
    device.attempts = attempts
    for a in attempts:
        a.normal = ""
    got = {}  # file -> time of its last successful download/upload
    for a in attempts:
        if a.outcome == DONE:
            got[a.name] = a.time
    any_done = bool(got)
    went_on_from = _went_on(attempts)
    # What firmware does on purpose.
    for i, a in enumerate(attempts):
        later = attempts[i + 1:]
        if a.outcome == ABORTED and a.tsize_asked and any(
                b.name == a.name and b.time - a.time <= SIZE_PROBE_WITHIN and b.outcome != ABORTED for b in later):
            a.normal = "size probe: the client asked the size, then the file"
        elif a.outcome == NO_REPLY and any(b.name == a.name for b in later):
            a.normal = "asked again after no answer"
        elif a.outcome == MISSING and went_on_from[i] and a.name not in got:
            a.normal = "optional: the device went on to another file"
    findings: list[Finding] = []
    sessions = [a.session for a in attempts]
    first_session = sessions[0] if sessions else 0
    # Stuck: the same missing file again and again, never found.
    missing = Counter(a.name for a in attempts if a.outcome == MISSING and a.name not in got)
    stuck = False
    for name, count in missing.items():
        times = [a.time for a in attempts if a.name == name and a.outcome == MISSING]
        if count >= AGAIN_STUCK:
            stuck = True
            findings.append(Finding(
                "device-missing-file", ERROR,
                f"{device.address} asked for {file_name(name)} {count} times in {times[-1] - times[0]:.0f} s and the "
                f"server does not have it; it will not boot without it",
                tuple(f"t={t - attempts[0].time:.1f}s RRQ {file_name(name)}: file not found" for t in times[:8]),
                "Put the file in the server's folder under exactly this name (case matters), or fix the name the "
                "device is given (DHCP option 67, its configuration file).", first_session))
    aborts = Counter(a.name for a in attempts if a.outcome == ABORTED and not a.normal and a.name not in got)
    stuck_on = {name for name, count in missing.items() if count >= AGAIN_STUCK}  # named by a finding above
    for name, count in aborts.items():
        if count >= ABORTS_STUCK:
            stuck = True
            stuck_on.add(name)
            findings.append(Finding(
                "device-aborts-after-oack", ERROR,
                f"{device.address} aborted {file_name(name)} right after the server's OACK {count} times and never "
                f"downloaded it",
                (), "The device refuses an option the server grants (often blksize or windowsize): limit the "
                    "server's options (e.g. serve --max-blksize 1468 --max-windowsize 1) and watch again.",
                first_session))
    cut = [a for a in attempts if ended and _cut(a, now)]
    # A failure the device went on from (it got another file after it) is not where it stopped: only the
    # failures after its last success can leave it stuck. The others are named below, not dropped.
    unresolved: list[Attempt] = []
    went_on: list[Attempt] = []
    for i, a in enumerate(attempts):
        if a.outcome not in (DONE, ACTIVE) and not a.normal and a.name not in got and a not in cut:
            (went_on if went_on_from[i] else unresolved).append(a)
    active = bool(cut) or any(a.outcome == ACTIVE for a in attempts)
    quiet_now = ended or now - device.last >= quiet
    if not stuck and unresolved and quiet_now and not active:
        stuck = True
        # What it stopped after is its last request, when that failed (one for a file it had before is
        # no reason to be stuck, but it is what the device did last); else its last unresolved one.
        final = attempts[-1]
        last = final if final.outcome not in (DONE, ACTIVE) and not final.normal else unresolved[-1]
        if last.outcome == ENDED_BY_CLIENT:
            hint = ("The device stopped that transfer itself, not for want of the file: its ERROR says why (a user "
                    "or its firmware cancelled, or it disliked what it got); look at that session's findings.")
        else:
            hint = "Look at that session's findings for the cause; the device will not go on without the file."
        findings.append(Finding(
            "device-stuck", ERROR,
            f"{device.address} stopped after {_STOPPED_AFTER[last.outcome].format(file_name(last.name))}"
            + _said(last)
            + (" and asked for nothing more before the record ended" if ended
               else f" and has asked for nothing in {now - device.last:.0f} s"),
            (), hint, last.session))
    # Failures the device did without. A missing optional file is what firmware does on purpose (normal,
    # below); a refusal or a broken transfer is not, so it gets its own line, a warning: the device may
    # lack a configuration or an update it meant to have, and plain output (device_lines) shows warnings
    # and errors only, where an info line would hide it. Files a finding above names already are left out.
    stuck_on.update(a.name for a in unresolved)  # asked for again after, and failed: not done without
    skipped = [a for a in went_on if a.name not in stuck_on]
    if skipped:
        first = skipped[0]
        others = len(skipped) - 1
        findings.append(Finding(
            "device-went-on-without", WARNING,
            f"{device.address} went on to other files after "
            f"{_STOPPED_AFTER[first.outcome].format(file_name(first.name))}{_said(first)}"
            + (f", and after {others} other failed request{'s' if others != 1 else ''}" if others else ""),
            tuple(f"t={a.time - attempts[0].time:.1f}s {'RRQ' if a.download else 'WRQ'} {file_name(a.name)}: "
                  f"{a.outcome}{_said(a)}" for a in skipped[:MAX_EVIDENCE]),
            "The device did without the file this time. If it needs it (a configuration, a firmware update), "
            "look at that session's findings for why it failed; if not, stop the device asking for it.",
            first.session))
    normal = [a for a in attempts if a.normal]
    if normal:
        kinds = Counter(a.normal.split(":")[0] for a in normal)
        findings.append(Finding(
            "device-normal-failures", INFO,
            f"{device.address}: {len(normal)} failed request{'s' if len(normal) != 1 else ''} "
            f"that firmware makes on purpose (" + ", ".join(f"{k} ×{n}" for k, n in kinds.items()) + "): no action",
            tuple(f"{file_name(a.name)}: {a.normal}" for a in normal[:8]), "", first_session))
    done_names = [a.name for a in attempts if a.outcome == DONE and a.download]
    if stuck:
        device.verdict = STUCK
    elif active or not any_done or unresolved or not (quiet_now or attempts[-1].outcome == DONE):
        device.verdict = IN_PROGRESS
    elif not done_names:
        device.verdict = UPLOADED  # all it finished were uploads: it fetched nothing to boot from
    else:
        device.verdict = BOOTED
        if all(n.lower().endswith(CONFIG_SUFFIXES) for n in done_names):
            total = sum(a.bytes for a in attempts if a.outcome == DONE)
            findings.append(Finding(
                "device-config-only", WARNING,
                f"{device.address} fetched only configuration ({', '.join(file_name(n) for n in done_names[:4])}, "
                f"{fmt_bytes(total)}) and asked for no image",
                (), "Normal when its firmware is up to date; otherwise the configuration names an image the device "
                    "does not ask this server for: check the image name and server in it.", first_session))
    device.findings = findings
