"""Option ranges and negotiation (RFC 2347, 2348, 2349, 7440), for both ends of a transfer.

The outcome of each option is data (asked, granted, verdict) so the option panel, the findings and
the JSON summary all explain the same negotiation.
"""

from __future__ import annotations

from dataclasses import field

from tftpdiag.compat import StrEnum
from tftpdiag.protocol.limits import (
    BLKSIZE_MAX,
    BLKSIZE_MIN,
    DEFAULT_BLKSIZE,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    WINDOWSIZE_MAX,
    WINDOWSIZE_MIN,
)
from tftpdiag.protocol.packets import OPTION_NAMES, ErrorCode, Options, ProtocolError, brief
from tftpdiag.records import record

__all__ = [
    "BLKSIZE_MIN",
    "BLKSIZE_MAX",
    "DEFAULT_BLKSIZE",
    "Verdict",
    "OptionOutcome",
    "RequestedOptions",
    "Negotiated",
    "ServerPolicy",
    "negotiate_server",
    "accept_oack",
    "option_number",
    "options_ignored",
    "options_refused",
]

RANGES = {
    "blksize": (BLKSIZE_MIN, BLKSIZE_MAX),
    "timeout": (TIMEOUT_MIN, TIMEOUT_MAX),
    "windowsize": (WINDOWSIZE_MIN, WINDOWSIZE_MAX),
}


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # granted as asked
    REDUCED = "reduced"  # granted lower than asked
    IGNORED = "ignored"  # the answering side left it out (or sent no OACK at all)
    REFUSED = "refused"  # negotiation ended with ERROR 8, or the value was invalid
    DROPPED = "dropped"  # the server refused it with an ERROR; the client asked again without it


@record
class OptionOutcome:
    """What became of one option the client asked for."""

    name: str
    asked: str | None
    granted: str | None
    verdict: Verdict
    # DROPPED: the server's ERROR named this option. False: it named none (tftpd-hpa's "Unsupported
    # option(s) requested"), so every option was dropped and which one it minded is not known.
    named: bool = True

    @property
    def meaning(self) -> str:
        """One short line of what this outcome means for the transfer."""
        name, granted = self.name, self.granted
        if self.verdict is Verdict.REFUSED:
            return f"{name} refused: the transfer ended with ERROR 8"
        if self.verdict is Verdict.DROPPED:
            if not self.named:
                return "the server refused the options without saying which, so asked again without any"
            return f"{name} refused by the server, so asked again without it"
        if self.verdict is Verdict.IGNORED:
            if not name.isascii():
                return f"{name} ignored: a name that is not ASCII is no option a server knows"
            meant = {
                "blksize": f"{name} ignored, so {DEFAULT_BLKSIZE}-byte blocks",
                "windowsize": "no windowsize, so lock-step (one ACK per block)",
                "timeout": "timeout ignored, so each side uses its own retransmit timer",
                "tsize": "no size announced, so no percentage or ETA",
            }.get(name, f"{name} ignored")
            # Why, where the value says it: a known option asked with no number cannot be granted, and no
            # option's value holds bytes that are not ASCII (RFC 2347).
            if name in OPTION_NAMES and self.asked is not None and option_number(self.asked) is None:
                meant += " (the value asked is no number)"
            elif self.asked is not None and not self.asked.isascii():
                meant += " (the value asked is not ASCII)"
            return meant
        if name == "blksize":
            base = f"{granted}-byte blocks"
            return base + (f" (asked {self.asked})" if self.verdict is Verdict.REDUCED else "")
        if name == "windowsize":
            if granted == "1":
                return "window of 1: lock-step as in RFC 1350"
            text = f"{granted} blocks per ACK"
            return text + (f" (asked {self.asked})" if self.verdict is Verdict.REDUCED else "")
        if name == "timeout":
            return f"retransmit after {granted} s without an answer"
        if name == "tsize":
            return f"size {granted} bytes announced" if granted not in (None, "0") else "size 0"
        return f"{name} = {granted}"


@record
class RequestedOptions:
    """What a client asks for. ``tsize`` True asks for it (0 on read, the file size on write)."""

    blksize: int | None = None
    windowsize: int | None = None
    timeout: int | None = None
    tsize: bool = False

    def __post_init__(self) -> None:
        for name in ("blksize", "windowsize", "timeout"):
            value = getattr(self, name)
            if value is not None:
                low, high = RANGES[name]
                if not low <= value <= high:
                    raise ValueError(f"{name} must be between {low} and {high}, not {value}")

    def to_wire(self, upload_size: int | None = None) -> Options:
        opts: list[tuple[str, str]] = []
        if self.blksize is not None:
            opts.append(("blksize", str(self.blksize)))
        if self.tsize:
            opts.append(("tsize", str(upload_size if upload_size is not None else 0)))
        if self.timeout is not None:
            opts.append(("timeout", str(self.timeout)))
        if self.windowsize is not None:
            opts.append(("windowsize", str(self.windowsize)))
        return tuple(opts)


@record
class Negotiated:
    """The values a transfer runs with, and how each requested option fared."""

    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: int | None = None
    tsize: int | None = None
    outcomes: tuple[OptionOutcome, ...] = ()
    oack: Options | None = None  # what the answering side put in its OACK (None: no OACK)


@record
class ServerPolicy:
    """A server's limits. Options in ``refuse`` are left out of the OACK, as by a server without them."""

    max_blksize: int = BLKSIZE_MAX
    max_windowsize: int = 64
    refuse: frozenset[str] = field(default_factory=frozenset)
    max_upload: int | None = None


def option_number(value: str | None) -> int | None:
    """An option's value as a number, or None when it is none: ASCII digits, at most 12 of them. The
    one reading of every option value, asked or granted (a request a capture saw may hold anything)."""
    # isdigit() alone accepts digits int() refuses (e.g. '²') and other scripts' digits: ASCII only; and
    # int() refuses strings of more than 4300 digits.
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 12:
        return None
    return int(value)


def _verdict(asked: int, granted: int) -> Verdict:
    return Verdict.ACCEPTED if granted == asked else Verdict.REDUCED


def negotiate_server(
    requested: Options,
    *,
    is_read: bool,
    mode: str,
    policy: ServerPolicy,
    file_size: int | None,
) -> Negotiated:
    """Decide the OACK for a request. Raises ProtocolError(3) for an upload over the size limit.

    Unknown, refused and invalid options are left out, as RFC 2347 lets a server do; an empty result
    means no OACK and plain RFC 1350.
    """
    granted: list[tuple[str, str]] = []
    outcomes: list[OptionOutcome] = []
    values: dict[str, int | None] = {"blksize": DEFAULT_BLKSIZE, "windowsize": 1, "timeout": None, "tsize": None}
    for name, raw in requested:
        if name not in OPTION_NAMES:
            # Unknown options are not ours to judge (no outcome either); but one we cannot read (a name or a
            # value that is not ASCII: a garbled request, no extension) gets one, saying it was ignored.
            if not (name.isascii() and raw.isascii()):
                outcomes.append(OptionOutcome(name, raw, None, Verdict.IGNORED))
            continue
        asked = option_number(raw)
        if name in policy.refuse or asked is None:
            outcomes.append(OptionOutcome(name, raw, None, Verdict.IGNORED))
            continue
        value: int | None = None
        if name == "blksize":
            # RFC 2348 says a larger request is answered with at most 65464; a smaller one is invalid.
            if asked >= BLKSIZE_MIN:
                value = min(asked, BLKSIZE_MAX, policy.max_blksize)
        elif name == "windowsize":
            if WINDOWSIZE_MIN <= asked <= WINDOWSIZE_MAX:
                value = min(asked, policy.max_windowsize)
        elif name == "timeout":
            if TIMEOUT_MIN <= asked <= TIMEOUT_MAX:
                value = asked
        elif name == "tsize":
            if is_read:
                # A netascii size on the wire is not the file size, so it is not offered (as tftpd-hpa).
                if file_size is not None and mode == "octet":
                    value = file_size
            else:
                if policy.max_upload is not None and asked > policy.max_upload:
                    raise ProtocolError(
                        ErrorCode.DISK_FULL,
                        f"upload of {asked} bytes exceeds the server's limit of {policy.max_upload}",
                    )
                value = asked
        if value is None:
            outcomes.append(OptionOutcome(name, raw, None, Verdict.IGNORED))
            continue
        granted.append((name, str(value)))
        values[name] = value
        verdict = Verdict.ACCEPTED if name == "tsize" else _verdict(asked, value)
        outcomes.append(OptionOutcome(name, raw, str(value), verdict))
    return Negotiated(
        blksize=values["blksize"] or DEFAULT_BLKSIZE,
        windowsize=values["windowsize"] or 1,
        timeout=values["timeout"],
        tsize=values["tsize"],
        outcomes=tuple(outcomes),
        oack=tuple(granted) if granted else None,
    )


def _refuse(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.OPTION_REFUSED, message)


def accept_oack(requested: Options, oack: Options, *, is_read: bool) -> Negotiated:
    """Check a server's OACK against what we asked. Raises ProtocolError(8) to refuse it."""
    asked = dict(requested)
    got = dict(oack)
    for name, value in oack:
        if name not in asked:
            raise _refuse(f"OACK holds option {brief(name)}={brief(value)} that was not requested")
        number = option_number(value)
        if number is None:
            raise _refuse(f"OACK gives {name} the invalid value {brief(value)}")
        if name in RANGES:
            low, high = RANGES[name]
            if not low <= number <= high:
                raise _refuse(f"OACK gives {name}={number}, outside {low}..{high}")
        if name in ("blksize", "windowsize", "timeout"):
            limit = option_number(asked[name])
            if limit is None:  # (only a request a capture saw asks so: ours never does)
                raise _refuse(f"OACK gives {name}={number} where the {brief(asked[name])} asked is no number")
            if name != "timeout" and number > limit:
                raise _refuse(f"OACK grants {name}={number}, more than the {limit} asked")
            if name == "timeout" and number != limit:
                raise _refuse(f"OACK changes timeout to {number}; RFC 2349 requires the asked {limit}")
    outcomes = []
    for name, value in requested:
        asked_number = option_number(value)
        if name not in got:
            outcomes.append(OptionOutcome(name, value, None, Verdict.IGNORED))
        elif name in ("blksize", "windowsize") and asked_number is not None:
            outcomes.append(OptionOutcome(name, value, got[name], _verdict(asked_number, int(got[name]))))
        else:
            outcomes.append(OptionOutcome(name, value, got[name], Verdict.ACCEPTED))
    tsize = option_number(got.get("tsize"))
    return Negotiated(
        blksize=int(got.get("blksize", DEFAULT_BLKSIZE)),
        windowsize=int(got.get("windowsize", 1)),
        timeout=option_number(got.get("timeout")),
        tsize=tsize,
        outcomes=tuple(outcomes),
        oack=oack,
    )


def options_ignored(requested: Options) -> Negotiated:
    """The peer answered without an OACK: every requested option fell back to its default."""
    return Negotiated(outcomes=tuple(OptionOutcome(n, v, None, Verdict.IGNORED) for n, v in requested))


def options_refused(requested: Options, oack: Options | None) -> Negotiated:
    """Negotiation ended in ERROR 8 (sent or received)."""
    got = dict(oack or ())
    return Negotiated(
        # The size the OACK announced stays known (a UEFI size probe reads it, then refuses).
        tsize=option_number(got.get("tsize")),
        outcomes=tuple(OptionOutcome(n, v, got.get(n), Verdict.REFUSED) for n, v in requested),
        oack=oack,
    )
