"""Events <-> JSON lines: the complete record of a run, which tftpdiag can load back as the same
events (packets are re-decoded from their raw bytes, so nothing is lost but what a snap length cut).

Lines are written by :func:`tftpdiag.fmt.json_line`, as every JSON tftpdiag writes: valid UTF-8 that jq
reads, a name or message with bytes that were not UTF-8 rewritten by its rule and listed in the line, and
read back exactly by :func:`tftpdiag.fmt.json_restored`. Traces written before that hold such strings as
lone surrogates (``\\udcff``), which Python's JSON reader gives back as they were: they load as ever."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import fields
from enum import Enum
from typing import IO, Any

from tftpdiag import __version__
from tftpdiag.fmt import json_line, json_restored
from tftpdiag.protocol import events as ev
from tftpdiag.protocol.options import Negotiated, OptionOutcome, Verdict
from tftpdiag.protocol.packets import Ack, Data, Error, OAck, Packet, ProtocolError, Request, decode, seen_request
from tftpdiag.trace import snapped

__all__ = ["KIND", "event_to_dict", "dict_to_event", "JsonlWriter", "read_events", "FORMAT"]

FORMAT = "tftpdiag-trace"
FORMAT_VERSION = 1

KIND: dict[type, str] = {
    ev.TransferStarted: "transfer-started",
    ev.PacketSent: "packet-sent",
    ev.PacketReceived: "packet-received",
    ev.PeerLocked: "peer-locked",
    ev.OptionsNegotiated: "options-negotiated",
    ev.Retransmit: "retransmit",
    ev.TimedOut: "timed-out",
    ev.Progress: "progress",
    ev.Completed: "completed",
    ev.Failed: "failed",
    ev.RequestRefused: "request-refused",
    ev.SocketError: "socket-error",
    ev.Impaired: "impaired",
    ev.RequestRetried: "request-retried",
    ev.CaptureGap: "capture-gap",
    ev.ContentDigest: "content-digest",
}
_BY_KIND = {name: cls for cls, name in KIND.items()}


def packet_fields(packet: Packet | None) -> dict[str, Any]:
    """A readable digest of a packet; the raw bytes stay the authority."""
    if packet is None:
        return {"op": None}
    if isinstance(packet, Data):
        return {"op": "DATA", "block": packet.block, "payload": len(packet.payload)}
    if isinstance(packet, Ack):
        return {"op": "ACK", "block": packet.block}
    if isinstance(packet, Request):
        return {"op": packet.opcode.name, "filename": packet.filename, "mode": packet.mode,
                "options": dict(packet.options)}
    if isinstance(packet, Error):
        return {"op": "ERROR", "code": packet.code, "message": packet.message}
    if isinstance(packet, OAck):
        return {"op": "OACK", "options": dict(packet.options)}
    return {"op": type(packet).__name__}


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, (Negotiated, OptionOutcome, ev.TransferStats)):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value


def event_to_dict(event: ev.Event, snaplen: int | None = None) -> dict[str, Any]:
    if isinstance(event, ev.PacketRun):  # the form a view keeps; a file holds its events (apart_wire.expand)
        raise TypeError("a PacketRun is written as its events")
    out: dict[str, Any] = {"t": event.time, "session": event.session, "event": KIND[type(event)]}
    for f in fields(event):
        name = f.name
        if name in ("session", "time"):
            continue
        value = getattr(event, name)
        if name == "raw":
            cut = snaplen is not None and len(value) > snaplen and snapped(getattr(event, "packet", None))
            kept = value[:snaplen] if cut else value
            out["size"] = len(value)
            out["raw"] = base64.b64encode(kept).decode("ascii")
        elif name == "packet":
            out["packet"] = packet_fields(value)
        else:
            out[name] = _plain(value)
    return out


# -- reading back: a trace file is untrusted input ---------------------------------------------------
#
# Each field is checked against the type its event class declares, so that a damaged or forged line is
# refused here, with a line saying why, instead of failing in whatever later reads the value (an
# infinite session id, a file name that is a number, an address that is not one).

_INT_MAX = 1 << 63


class _Bad(ValueError):
    pass


def _int(value: Any, high: int = _INT_MAX) -> int:
    if type(value) is not int or not 0 <= value < high:
        raise _Bad(f"expected a whole number from 0 to {high - 1}, not {_shown(value)}")
    return value


def _float(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _Bad(f"expected a finite number, not {_shown(value)}")
    return float(value)


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _Bad(f"expected a string, not {_shown(value)}")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _Bad(f"expected true or false, not {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A value from the file, for a message: its type only, never its text (it is shown later)."""
    return "null" if value is None else f"a {type(value).__name__}"


def _pair(value: Any) -> list[Any]:
    if type(value) is not list or len(value) != 2:
        raise _Bad(f"expected a pair, not {_shown(value)}")
    return value


def _address(value: Any) -> ev.Address:
    host, port = _pair(value)
    try:
        ipaddress.ip_address(_str(host))
    except ValueError:
        raise _Bad("an address that is not an IP address") from None
    return (host, _int(port, 1 << 16))


def _options(value: Any) -> tuple[tuple[str, str], ...]:
    if type(value) is not list:
        raise _Bad(f"expected a list of options, not {_shown(value)}")
    return tuple((_str(k), _str(v)) for k, v in map(_pair, value))


def _dict(value: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if type(value) is not dict or set(value) != set(keys):
        raise _Bad(f"expected an object with {', '.join(keys)}")
    return value


def _maybe(check: Any) -> Any:
    return lambda value: None if value is None else check(value)


def _enum(cls: Any) -> Any:
    return lambda value: cls(_str(value))


_OUTCOME_KEYS = ("name", "asked", "granted", "verdict")
_NEGOTIATED_KEYS = ("blksize", "windowsize", "timeout", "tsize", "outcomes", "oack")


def _outcome(value: Any) -> OptionOutcome:
    # "named" came later: traces written before it have none (the outcome then claims a name, as they did)
    d = _dict(value, _OUTCOME_KEYS + ("named",) if type(value) is dict and "named" in value else _OUTCOME_KEYS)
    return OptionOutcome(_str(d["name"]), _maybe(_str)(d["asked"]), _maybe(_str)(d["granted"]),
                         Verdict(_str(d["verdict"])), _bool(d.get("named", True)))


def _negotiated(value: Any) -> Negotiated:
    d = _dict(value, _NEGOTIATED_KEYS)
    if type(d["outcomes"]) is not list:
        raise _Bad("expected a list of option outcomes")
    return Negotiated(_int(d["blksize"], 1 << 16), _int(d["windowsize"], 1 << 16), _maybe(_u16)(d["timeout"]),
                      _maybe(_int)(d["tsize"]), tuple(map(_outcome, d["outcomes"])), _maybe(_options)(d["oack"]))


def _u16(value: Any) -> int:
    return _int(value, 1 << 16)


_STATS_FLOATS = {"duration"}
_STATS_KEYS = tuple(f.name for f in fields(ev.TransferStats))


def _stats(value: Any) -> ev.TransferStats:
    d = _dict(value, _STATS_KEYS)
    checked: dict[str, Any] = {k: _float(v) if k in _STATS_FLOATS else _int(v) for k, v in d.items()}
    return ev.TransferStats(**checked)


# Each declared field type (the annotation's text: events.py has `from __future__ import annotations`, so
# a dataclass field's type is a string) and the check that turns a JSON value into it.
_CHECK: dict[str | type, Callable[[Any], Any]] = {
    "int": _int,
    "int | None": _maybe(_int),
    "float": _float,
    "str": _str,
    "str | None": _maybe(_str),
    "bool": _bool,
    "Address": _address,
    "Address | None": _maybe(_address),
    "Options": _options,
    "Role": _enum(ev.Role),
    "Note": _enum(ev.Note),
    "Side": _enum(ev.Side),
    "Reason": _enum(ev.Reason),
    "Negotiated": _negotiated,
    "TransferStats": _stats,
}


def dict_to_event(d: Any) -> ev.Event:
    """Rebuild an event; raises ValueError with what is wrong (in words of ours, not the file's) for a
    line that does not fit."""
    if type(d) is not dict:
        raise ValueError(f"not a tftpdiag event: {_shown(d)}, not an object")
    kind = d.get("event")
    cls = _BY_KIND.get(kind) if type(kind) is str else None
    if cls is None:
        raise ValueError("not a tftpdiag event: no known \"event\" kind")
    name = "session"
    try:
        kwargs: dict[str, Any] = {"session": _int(d["session"]), "time": _float(d["t"])}
        raw = base64.b64decode(_str(d["raw"]), validate=True) if "raw" in d else b""
        for f in fields(cls):
            name = f.name
            if name in kwargs:
                continue
            if name == "raw":
                kwargs[name] = raw
            elif name == "packet":
                try:
                    kwargs[name] = decode(raw)
                except ProtocolError:
                    # An event that held a packet decode() refuses held a request a capture saw, read as
                    # its client sent it (the observer's reading); the others held none.
                    held = d.get("packet")
                    kwargs[name] = seen_request(raw) if type(held) is dict and held.get("op") is not None else None
            elif name in d:
                kwargs[name] = _CHECK[f.type](d[name])
        return cls(**kwargs)
    except KeyError as exc:
        raise ValueError(f"not a tftpdiag event: {kind} without {_key(exc)}") from None
    except (_Bad, binascii.Error) as exc:
        raise ValueError(f"not a tftpdiag event: {kind} field {name!r}: {exc}") from None
    except (TypeError, ValueError, IndexError, OverflowError, AttributeError) as exc:
        raise ValueError(f"not a tftpdiag event: {kind} field {name!r}: {type(exc).__name__}") from None


def _key(exc: KeyError) -> str:
    key = exc.args[0] if exc.args else ""
    return repr(key) if key in ("session", "t", "raw") else "a field it needs"


def _addr_json(addr: ev.Address) -> str:
    return f'[{json.dumps(addr[0])},{addr[1]}]'


class JsonlWriter:
    """One JSON object per line: a header line, then every event.

    DATA and ACK packet events are most of a trace; they are formatted directly (the same fields
    :func:`event_to_dict` gives) because the generic path costs several times more per event.
    """

    def __init__(self, file: IO[str], snaplen: int | None = None) -> None:
        self.file = file
        self.snaplen = snaplen
        self._addr_cache: dict[ev.Address, str] = {}
        file.write(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "tool": f"tftpdiag {__version__}"}) + "\n")

    def write(self, event: ev.Event) -> None:
        # type(x) is written out (not kept in a local) so that mypy narrows by it; CPython makes it as cheap.
        if (type(event) is ev.PacketSent or type(event) is ev.PacketReceived) and not getattr(event, "detail", ""):
            packet = event.packet
            if type(packet) is Data or type(packet) is Ack:
                self.file.write(self._fast_packet(event, packet))
                return
        self.file.write(json_line(event_to_dict(event, self.snaplen), separators=(",", ":")) + "\n")

    def _addr(self, addr: ev.Address) -> str:
        text = self._addr_cache.get(addr)
        if text is None:
            if len(self._addr_cache) > 4096:
                self._addr_cache.clear()
            text = self._addr_cache[addr] = _addr_json(addr)
        return text

    def _fast_packet(self, event: ev.PacketSent | ev.PacketReceived, packet: Data | Ack) -> str:
        raw = event.raw
        kept = raw if self.snaplen is None or len(raw) <= self.snaplen else raw[: self.snaplen]
        kind = "packet-sent" if type(event) is ev.PacketSent else "packet-received"
        if type(packet) is Data:
            digest = f'{{"op":"DATA","block":{packet.block},"payload":{len(packet.payload)}}}'
        else:
            digest = f'{{"op":"ACK","block":{packet.block}}}'
        tail = ',"detail":""}' if kind == "packet-received" else "}"
        return (f'{{"t":{event.time!r},"session":{event.session},"event":"{kind}","local":{self._addr(event.local)},'
                f'"peer":{self._addr(event.peer)},"size":{len(raw)},'
                f'"raw":"{binascii.b2a_base64(kept, newline=False).decode()}",'
                f'"packet":{digest},"note":"{event.note.value}"{tail}\n')

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


MAX_LINE = 1 << 18  # bytes: the longest event we write is a 64 KiB datagram in base64, about 90 KB


def parse_line(line: bytes | str, number: int) -> ev.Event | None:
    """One line of a jsonl trace: its event, or None for a blank line or the header. Raises ValueError
    naming the line when it is damaged; the message never quotes the line itself."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"line {number} holds bytes that are not UTF-8 text") from None
    line = line.strip()
    if not line:
        return None
    if len(line) > MAX_LINE:
        raise ValueError(f"line {number} is longer than any event ({len(line):,} characters)")
    try:
        obj = json.loads(line)
    except RecursionError:
        raise ValueError(f"line {number} nests brackets too deeply to be an event") from None
    except ValueError:  # JSONDecodeError, and numbers with more digits than int() takes
        raise ValueError(f"line {number} is not JSON (the file may be truncated)") from None
    if number == 1 and type(obj) is dict and obj.get("format") == FORMAT:
        return None
    try:
        return dict_to_event(json_restored(obj))
    except ValueError as exc:
        raise ValueError(f"line {number}: {exc}") from None


def read_events(file: IO[str]) -> Iterator[ev.Event]:
    """Events from a tftpdiag jsonl trace. Raises ValueError naming the line that is damaged."""
    for number, line in enumerate(file, 1):
        event = parse_line(line, number)
        if event is not None:
            yield event
