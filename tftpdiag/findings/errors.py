"""ERRORs and refusals: a file that is not there (often because of its name), access refused, other
error codes, refused requests on our server (odd names, path escapes), a UEFI size probe, and
protocol breaches."""

from __future__ import annotations

import re
from typing import overload

from tftpdiag.findings.model import (
    ERROR,
    INFO,
    WARNING,
    Finding,
    describe,
    escape_name,
    evidence,
    fmt_addr,
    fmt_options,
)
from tftpdiag.findings.predicates import at_wrap, peer_error
from tftpdiag.findings.rules import FOLLOW_UP, Context, rule
from tftpdiag.findings.session_state import SessionState
from tftpdiag.fmt import clean, quote
from tftpdiag.protocol.events import Address, Failed, Reason, Side
from tftpdiag.protocol.packets import Ack, Error, error_code_name
from tftpdiag.protocol.said import READER_GONE

_CODE_HINTS = {
    0: "ERROR 0 has no meaning of its own: the message is all the server says",
    3: "the server's disk is full or the file exceeds a size limit it has",
    4: "the server does not take this request (dnsmasq is read-only: no uploads) or disliked a packet",
    5: "the server lost track of this transfer (its session timed out, or it answered a repeated request "
       "with a second session)",
    6: "the server does not overwrite files (tftpd-hpa needs the file to exist and be world-writable; "
       "tftpdiag serve --allow-overwrite)",
    7: "the server knows no such user (an obsolete 'mail' mode error)",
}


# What real servers write in an ERROR 0 ("not defined") when a code of its own would have said it:
# strerror texts (tftpd-hpa, dnsmasq's "cannot access/read NAME: ..."), the RFC's own code names
# (atftpd, tftpy, Cisco), Windows' system messages and Go's os errors. Families are tried in this
# order, so "cannot access x: No such file or directory" reads as not found before "cannot access"
# reads as access refused; keywords are lower case.
_MEANINGS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (5, ("unknown transfer id", "unknown tid", "unknown transfer")),
    (8, ("option", "blksize", "blocksize", "block size", "windowsize", "tsize")),
    (6, ("file exists", "already exists", "file already")),
    (3, ("disk full", "allocation exceeded", "no space", "not enough space", "space left", "file too large",
         "file is too large", "file too big", "quota")),
    (7, ("no such user", "unknown user")),
    (1, ("not found", "no such file", "not exist", "n't exist", "cannot find", "can't find", "could not find",
         "couldn't find", "unable to find", "unknown file")),
    (2, ("permission denied", "access violation", "access denied", "access is denied", "not permitted",
         "read-only", "read only", "forbidden", "is a directory", "not a regular file", "cannot access",
         "can't access", "not allowed", "no access")),
    (4, ("illegal",)),
)
# An access violation whose text says the name is no file (tftpd-hpa, dnsmasq: strerror(EISDIR)).
_NOT_A_FILE = re.compile(r"is a directory|not a regular file", re.IGNORECASE)
MEANING_MAX = 512  # longer texts are not read for meaning: real messages are a line, a hostile one is not


@overload
def meant_code(code: int, message: str, *, options: bool = True) -> int: ...
@overload
def meant_code(code: int | None, message: str, *, options: bool = True) -> int | None: ...
def meant_code(code: int | None, message: str, *, options: bool = True) -> int | None:
    """The RFC 1350 code an ERROR 0 means by its text ("Permission denied" means 2), else the code as
    sent. ``options``: options were asked for, so a text about them can mean 8."""
    if code != 0 or not message or len(message) > MEANING_MAX:
        return code
    text = message.lower()
    for meant, words in _MEANINGS:
        if (meant != 8 or options) and any(word in text for word in words):
            return meant
    return code


def quoted_message(message: str) -> str:
    """An ERROR's message as findings quote it: as fmt.quote shows any string from the network (odd
    characters visible, at most fmt.SHOWN of them, the rest counted: an ERROR can carry 64 KiB)."""
    return quote(message) if message else "(no message)"


def sent_as(res: Failed, meant: int | None) -> str:
    """How the ERROR was sent, in words: "ERROR 1, 'File not found'" or, for an ERROR 0 whose text says
    what happened, "ERROR 0 (not defined), 'Disk full': code 0, but the text means disk full or ..."."""
    message = quoted_message(res.message)
    if res.code == 0 and meant != 0:
        return f"ERROR 0 (not defined), {message}: code 0, but the text means {error_code_name(meant or 0)}"
    return f"ERROR {res.code}, {message}"


def _is_odd_char(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or 0xDC80 <= code <= 0xDCFF or not ch.isprintable()


_NAME_MAX = 255  # the longest name of one file or directory on Linux (and most file systems)
# The name_features a server refuses a name for (an access violation because of the name, not the file).
_REFUSED_NAMES = ("odd bytes", "a '..' part", "a part longer")
# An upload's name is chosen by whoever uploads (a script, a device saving its configuration), not handed
# out by DHCP or a boot menu: what to do about a bad one, on either side.
_UPLOAD_NAME_FIX = (f"The uploading client or script chose this name: upload under a plain name (each part at most "
                    f"{_NAME_MAX} bytes, no odd bytes, no '..').")


def name_features(name: str, nearest: str | None = None) -> list[str]:
    """What is unusual about a requested name, each in a few words."""
    out = []
    odd = [ch for ch in name if _is_odd_char(ch)]
    if odd:
        shown = ", ".join(escape_name(ch)[1:-1] for ch in dict.fromkeys(odd))
        out.append(f"odd bytes ({shown})")
    if "\\" in name:
        out.append("backslashes")
    if name.startswith("/"):
        out.append("a leading /")
    if name != name.strip():
        out.append("spaces at an end")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        out.append("a '..' part")
    if any(len(p.encode("utf-8", "surrogateescape")) > _NAME_MAX for p in parts):
        out.append(f"a part longer than {_NAME_MAX} bytes")
    if nearest is not None:
        cleaned = "/".join(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
        if nearest != cleaned and nearest.lower() == cleaned.lower():
            out.append(f"letters in another case than the existing {escape_name(nearest)}")
    return out


def _client_name_hints(name: str) -> list[str]:
    hints = []
    if any(_is_odd_char(ch) for ch in name):
        hints.append("The name holds odd bytes: buggy firmware or a DHCP file name with garbage appended "
                     "(netboot.xyz#1198); fix it where the client gets it (DHCP option 67 / filename).")
    if "\\" in name:
        hints.append("It uses backslashes: most servers take \\ as part of the name; use / (or tftpd-hpa's "
                     "remap rules, -m).")
    if name.startswith("/"):
        hints.append("It starts with /: tftpd-hpa with -s and dnsmasq take it relative to their root, atftpd and "
                     "tftpd-hpa without -s as an absolute path; try without the leading /.")
    if any(ch.isupper() for ch in name):
        hints.append(f"Names are case-sensitive on Linux servers: check the exact case (e.g. "
                     f"{escape_name(name.lower())}); dnsmasq --tftp-lowercase folds it.")
    if name != name.strip():
        hints.append("It has spaces at an end.")
    return hints


@rule("file-not-found", "access-violation", "server-error")
def client_errors(s: SessionState, ctx: Context) -> Finding | None:
    if not s.client_side:
        return None
    res = peer_error(s)
    if res is None or res.code is None:  # (an ERROR always carries a code)
        return None
    code = meant_code(res.code, res.message, options=bool(s.requested))
    if code == 8:
        return None  # option-refused says it
    server = fmt_addr(s.locked or s.peer)
    name = escape_name(s.filename)
    message = quoted_message(res.message)
    sent = sent_as(res, code)
    ev = [f"{s.t(t)}: {s.kind} {name} {clean(s.mode)} {fmt_options(s.requested)} sent to {fmt_addr(s.peer)}"
          for t in s.request_times[:1]]
    ev.append(f"{s.t(res.time)}: ERROR {res.code} ({error_code_name(res.code)}) {message} from {server}")
    if code == 1 and not s.receiver:
        summary = f"{server} refused the upload of {name} with {sent}"
        suggestion = ("tftpd-hpa answers 'File not found' to an upload of a file that does not exist yet unless it "
                      "runs with -c (create); otherwise the directory may be missing on the server.")
        return Finding("file-not-found", ERROR, summary, evidence(ev), suggestion, s.session)
    if code == 1:
        hints = _client_name_hints(s.filename)
        summary = f"{server} has no file {name}: {sent}"
        check = ("Check that the file is in the server's root directory (tftpd-hpa -s DIR, dnsmasq --tftp-root, "
                 "atftpd's directory argument) under exactly this name.")
        suggestion = " ".join([*hints, check])
        return Finding("file-not-found", ERROR, summary, evidence(ev), suggestion, s.session)
    if code == 2:
        not_a_file = bool(_NOT_A_FILE.search(res.message or ""))
        # "Is a directory" says what is wrong in its own words; calling it an access violation adds nothing.
        plain = res.code == 2 or not_a_file
        what = f"ERROR {res.code} ({error_code_name(res.code)}), {message}" if plain else sent
        if s.oacks_rx and not s.moved:
            # tftpd-hpa answers a directory's name with an OACK (its tsize the directory's size) and only
            # then the ERROR: it took the request, then ended it, which is no refusal.
            t, options, _, _ = s.oacks_rx[0]
            ev.insert(-1, f"{s.t(t)}: OACK {fmt_options(options)} from {server}")
            summary = (f"{server} accepted the {s.kind} for {name} (OACK), then ended it with {what} "
                       f"before any data")
        else:
            summary = f"{server} refused the {s.kind} for {name}: {what}"
        # Control bytes, a '..' part, an overlong part: a server refuses the name itself, whatever the
        # file's permissions (a leading / or a backslash it may well take: those are no cause here).
        odd = [f for f in name_features(s.filename) if f.startswith(_REFUSED_NAMES)]
        if odd:
            fix = ("Fix it where the client gets it (DHCP option 67 / filename)." if s.receiver
                   else _UPLOAD_NAME_FIX)
            suggestion = (f"The name has {', '.join(odd)}: a server refuses such a name for the name itself, not for "
                          f"the file's permissions. {fix}")
        elif s.receiver and not_a_file:
            suggestion = ("The name is a directory (or a device, a socket) on the server, not a file: ask for "
                          "the file inside it, or fix the name the client is given (DHCP option 67 / filename).")
        elif not_a_file:
            # The server took the upload request far enough to look at the target: uploads are on.
            suggestion = ("The target name is a directory (or a device, a socket) on the server, not a file: "
                          "upload to a file's name, e.g. one inside that directory.")
        elif s.receiver:
            suggestion = ("The file may exist but not be readable by the server (tftpd-hpa serves only "
                          "world-readable files: chmod o+r), or the path leads outside the served directory.")
        else:
            suggestion = ("Uploads may be off or the target not writable: tftpd-hpa needs -c to create files and "
                          "existing files must be world-writable; dnsmasq takes no uploads; tftpdiag serve needs "
                          "--allow-upload.")
        return Finding("access-violation", ERROR, summary, evidence(ev), suggestion, s.session)
    if code in (0, 4, 5) and s.moved and at_wrap(s, ctx):
        return None  # what a peer that cannot wrap the block number says: rollover-stall explains it
    hint = _CODE_HINTS.get(code, f"code {code} is not one of RFC 1350's")
    said = f"ERROR {res.code} ({error_code_name(res.code)}), {message}" if code == res.code else sent
    summary = f"{server} ended the transfer with {said}" + (f" after {s.moved:,} blocks" if s.moved else "")
    return Finding("server-error", ERROR, summary, evidence(ev), hint[0].upper() + hint[1:] + ".", s.session)


@rule("path-escape", "odd-filename", "file-not-found", "access-violation", "stray-packets", "protocol-breach",
       "server-error")
def refusals(s: SessionState, ctx: Context) -> Finding | None:
    r = s.refused
    if r is None:
        return None
    client = fmt_addr(r.peer)
    name = escape_name(r.filename)
    what = "RRQ" if r.is_read else "WRQ"
    ev = [f"{s.t(r.time)}: {what} {name} from {client}",
          f"{s.t(r.time)}: refused with ERROR {r.code} ({error_code_name(r.code)}) {quote(r.message)}"]
    why = r.why
    if why == "path-escape":
        summary = f"Client {client} asked for {name}, which leads outside the served directory: refused"
        return Finding("path-escape", WARNING, summary, evidence(ev),
                       "A device asking this has a wrong path configured (use one relative to the TFTP root); "
                       "otherwise someone is probing the server for path traversal (as tftpy#110). Nothing was "
                       "served.", s.session)
    if why in ("not-found", "bad-name"):
        features = name_features(r.filename, r.suggestion)
        nearest = f"; the nearest existing file is {escape_name(r.suggestion)}" if r.suggestion else ""
        if r.suggestion:
            ev.append(f"nearest existing name: {escape_name(r.suggestion)}")
        if features and not r.is_read:
            summary = (f"Client {client} asked to upload {name}, with {', '.join(features)}: refused "
                       f"({clean(r.message)})")
            suggestion = _UPLOAD_NAME_FIX
            return Finding("odd-filename", WARNING, summary, evidence(ev), suggestion, s.session)
        if features:
            summary = (f"Client {client} asked for {name}, with {', '.join(features)}: not served "
                       f"({clean(r.message)}){nearest}")
            suggestion = ("Fix the name where the client gets it (DHCP option 67 / filename, its boot menu or "
                          "firmware settings)" + (f", or add a link named like that to {escape_name(r.suggestion)}"
                                                  if r.suggestion else "") + ".")
            return Finding("odd-filename", WARNING, summary, evidence(ev), suggestion, s.session)
        summary = f"Client {client} asked for {name}, which is not in the served directory{nearest}"
        return Finding("file-not-found", WARNING, summary, evidence(ev),
                       "Put the file in the served directory, or fix the name the client is given.", s.session)
    if why in ("no-permission", "read-only", "not-a-file", "exists"):
        hint = {
            "read-only": "Uploads are off: start the server with --allow-upload to take them.",
            "exists": "The file exists and overwriting is off (--allow-overwrite).",
            "no-permission": "Make the file readable by the server's user.",
            "not-a-file": ("The name is a directory or a special file here; ask for a regular file." if r.is_read
                           else "The target name is a directory or a special file here; the client must upload "
                                "to a file's name, e.g. one inside that directory."),
        }[why]
        summary = f"Refused the {what} for {name} from {client}: {clean(r.message)}"
        return Finding("access-violation", WARNING, summary, evidence(ev), hint, s.session)
    if why == "error-acked":
        return None  # the client's ACK of the ERROR that refused it (tftp-hpa): normal
    if why == "not-a-request":
        got = getattr(r, "received", "") or (s.unexpected[0][1] if s.unexpected else "a packet")
        answer = f"answered with ERROR {r.code}" if s.err_tx is not None else "ignored"
        summary = f"{client} sent {got} to the TFTP port outside any transfer: {answer}"
        ev = [f"{s.t(r.time)}: {got} from {client} to the listening port, {answer}"]
        return Finding("stray-packets", INFO, summary, evidence(ev),
                       "Usually a late packet of a transfer that had ended; harmless unless it repeats.", s.session)
    if why == "unsupported-mode":
        mode = escape_name(r.mode)
        ev[0] = f"{s.t(r.time)}: {what} {name} {mode} from {client}"
        asked = f"asked for {name}" if r.is_read else f"asked to upload {name}"
        summary = f"Client {client} {asked} in transfer mode {mode}, which the server does not take: refused"
        return Finding("protocol-breach", WARNING, summary, evidence(ev),
                       "TFTP moves files in octet mode (binary files; a client's 'binary' command sends it) or "
                       "netascii (text): set the client to one of them.", s.session)
    if why == "malformed":
        summary = f"{client} sent a datagram to the TFTP port that is not a valid request: {clean(r.message)}"
        return Finding("protocol-breach", INFO, summary, evidence(ev),
                       "A broken client or a probe (a 1-byte datagram crashes some servers, tftpy#140); tftpdiag "
                       "answers with an ERROR and goes on.", s.session)
    summary = f"Turned away the {what} for {name} from {client}: {clean(r.message)}"
    return Finding("server-error", WARNING, summary, evidence(ev),
                   "Raise the server's session limits if this happens under normal load.", s.session)


@rule("size-probe", uses=(FOLLOW_UP,))
def size_probe(s: SessionState, ctx: Context) -> Finding | None:
    if s.client_side or s.role is None or s.receiver:
        return None
    res = peer_error(s)
    if res is None or res.code != 8 or "tsize" not in s.req or not s.oack_tx or s.moved:
        return None
    if s.followup is None:
        s.followup = ctx.follow_up()
    client = fmt_addr(s.peer)
    size = f"{s.tsize:,} B" if s.tsize is not None else "unknown"
    summary = (f"Client {client} asked for {escape_name(s.filename)} with tsize, read the size ({size}) from our "
               f"OACK and ended with ERROR 8: a size probe, as UEFI firmware makes before the real download; "
               f"normal, not a failure")
    ev = [f"{s.t(s.request_times[0])}: RRQ {escape_name(s.filename)} {fmt_options(s.requested)}"] \
        if s.request_times else []
    ev += [f"{s.t(t)}: OACK sent" for t in s.oack_tx_times[:1]]
    ev.append(f"{s.t(res.time)}: ERROR 8 {quote(res.message)} from the client")
    if s.followup is not None:
        t, sid, how = s.followup
        ev.append(f"{s.t(t)}: asked again {how} (session {sid})")
        suggestion = f"Nothing to fix; the download that follows (session {s.followup[1]}) is the one to watch."
    else:
        suggestion = ("Nothing to fix: the client asks again for the download itself. If no second request "
                      "follows, it did not like the size or the OACK.")
    return Finding("size-probe", INFO, summary, evidence(ev), suggestion, s.session)


def _client_error(s: SessionState) -> tuple[Failed, Address | None] | None:
    """The client's ERROR that ended the transfer, and the client: the peer's, seen by our server, or in
    a capture the side the events call local (it is the client's, not tftpdiag's)."""
    if s.role is None:
        return None
    if s.observed:
        res = s.result
        if isinstance(res, Failed) and res.raised_by is Side.LOCAL and res.reason is Reason.PROTOCOL:
            return res, s.local
        return None
    if s.client_side:
        return None
    error = peer_error(s)
    return None if error is None else (error, s.peer)


@rule("client-aborted")
def client_aborted(s: SessionState, ctx: Context) -> Finding | None:
    found = _client_error(s)
    if found is None:
        return None
    res, client = found
    if res.code is None or res.code == 8:  # (an ERROR always carries a code)
        return None
    if res.code == 5 and s.moved == 0 and not s.client_side:
        summary = (f"Client {fmt_addr(client)} turned this session away with ERROR 5 (unknown transfer ID): it was "
                   f"already transferring with another one, started by an earlier copy of its request")
        return Finding("client-aborted", INFO, summary, evidence([f"{s.t(res.time)}: ERROR 5 from the client"]),
                       "Harmless: a repeated request started a second session, and the client kept the first.",
                       s.session)
    if s.oack_tx and s.peer_answered is not None and s.moved == 0 and s.ack0_t is None:
        return None  # answered our OACK with an ERROR: client-ignored-oack says it
    summary = (f"Client {fmt_addr(client)} ended the transfer with ERROR {res.code} ({error_code_name(res.code)}) "
               f"{quote(res.message)} after {s.moved:,} block{'s' if s.moved != 1 else ''}")
    return Finding("client-aborted", INFO, summary, evidence([f"{s.t(res.time)}: ERROR {res.code} from the client"]),
                   "The client's message says why; ERROR 0 usually means its user or firmware cancelled.",
                   s.session)


@rule("protocol-breach")
def protocol_breach(s: SessionState, ctx: Context) -> Finding | None:
    if s.role is None:
        return None
    items: list[str] = []
    for t, what, detail in s.unexpected:
        if detail in ("OACK after the transfer began", "ACK before the OACK was accepted"):
            continue  # bad-oack and client-ignored-oack say these
        items.append(f"{s.t(t)}: {what}" + (f" ({detail})" if detail else ""))
    res = s.result
    if isinstance(res, Failed) and res.code is not None:
        for t, p in s.late_log:
            if t < res.time:
                continue
            if isinstance(p, Ack):
                items.append(f"{s.t(t)}: {describe(p)} after the ERROR (pin/tftp#99)")
            elif isinstance(p, Error) and res.raised_by is Side.LOCAL:
                items.append(f"{s.t(t)}: {describe(p)} answering {s.our} ERROR (tftpy#106)")
        if res.reason is Reason.PROTOCOL and res.raised_by is Side.LOCAL and res.code == 4:
            items.append(f"{s.t(res.time)}: {s.us} ended the transfer: {clean(res.message)}")
    if not items:
        return None
    summary = f"{s.other.capitalize()} broke the protocol: {items[0].split(': ', 1)[1]}"
    if len(items) > 1:
        summary += f" (and {len(items) - 1} more)"
    return Finding("protocol-breach", WARNING, summary, evidence(items),
                   f"{s.other.capitalize()} sent packets RFC 1350 does not allow here; if it is a device, look for a "
                   f"firmware update{s.ours_only('; tftpdiag survives them')}.", s.session)


@rule("local-error", after=("tsize-overrun", "tsize-short", "size-limit"))
def local_error(s: SessionState, ctx: Context) -> Finding | None:
    """tftpdiag itself could not or would not go on: a disk, a limit, an I/O error, or a bug of its own."""
    res = s.result
    if not isinstance(res, Failed) or res.raised_by is not Side.LOCAL or s.observed:
        return None  # (in a capture the local side is the client's: client-aborted says its ERROR)
    if not (res.reason in (Reason.LOCAL, Reason.INTERNAL)
            or (res.reason is Reason.PROTOCOL and res.code not in (None, 4, 8))):
        return None
    if any(ctx.found(said) is not None for said in ("tsize-overrun", "tsize-short", "size-limit")):
        return None  # said there, with the figures
    told = f" ({s.other} was sent ERROR {res.code}, {error_code_name(res.code)})" if res.code is not None else ""
    summary = f"tftpdiag ended the transfer: {clean(res.message)}{told}"
    if res.reason is Reason.INTERNAL:
        hint = ("A bug in tftpdiag, not in the network or the device: please report it with the command run "
                "and this message (a trace saved with --trace or s helps).")
    elif res.code == 3:
        hint = "Free space or raise the limit (tftpdiag serve --max-upload) if the file is meant to fit."
    elif res.code == 6:
        hint = ("Another upload of the same name landed first, and overwriting is off: the file there is the "
                "other one's. Upload one at a time, under another name, or serve with --allow-overwrite.")
    elif res.message.startswith(READER_GONE):
        hint = ("Whatever read the output (a pipe, a FIFO) stopped reading before the end: nothing to fix if it "
                "meant to (| head); otherwise see why that program ended.")
    else:
        hint = "Check the local disk, the target directory and its permissions."
    return Finding("local-error", ERROR if s.client_side else WARNING, summary,
                   evidence([f"{s.t(res.time)}: {clean(res.message)}"]), hint, s.session)


RULES = (client_errors, refusals, size_probe, client_aborted, protocol_breach, local_error)
