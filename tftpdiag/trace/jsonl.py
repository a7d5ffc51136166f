"""Events <-> JSON lines: the complete record of a run, which tftpdiag can load back as the same
events (packets are re-decoded from their raw bytes, so nothing is lost but what a snap length cut)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import fields
from enum import Enum
from typing import IO, Any, Iterator

from tftpdiag import __version__
from tftpdiag.protocol import events as ev
from tftpdiag.protocol.options import Negotiated, OptionOutcome, Verdict
from tftpdiag.protocol.packets import Ack, Data, Error, OAck, Packet, ProtocolError, Request, decode

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
    ev.CaptureGap: "capture-gap",
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
    out: dict[str, Any] = {"t": event.time, "session": event.session, "event": KIND[type(event)]}
    for f in fields(event):
        name = f.name
        if name in ("session", "time"):
            continue
        value = getattr(event, name)
        if name == "raw":
            kept = value if snaplen is None or len(value) <= snaplen else value[:snaplen]
            out["size"] = len(value)
            out["raw"] = base64.b64encode(kept).decode("ascii")
        elif name == "packet":
            out["packet"] = packet_fields(value)
        else:
            out[name] = _plain(value)
    return out


def _address(value: Any) -> ev.Address | None:
    return None if value is None else (str(value[0]), int(value[1]))


def _options(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in value)


def _negotiated(d: dict[str, Any]) -> Negotiated:
    outcomes = tuple(OptionOutcome(o["name"], o["asked"], o["granted"], Verdict(o["verdict"])) for o in d["outcomes"])
    return Negotiated(d["blksize"], d["windowsize"], d["timeout"], d["tsize"], outcomes,
                      None if d["oack"] is None else _options(d["oack"]))


_CONVERT = {
    "local": _address,
    "peer": _address,
    "role": ev.Role,
    "note": ev.Note,
    "reason": ev.Reason,
    "raised_by": ev.Side,
    "negotiated": _negotiated,
    "stats": lambda d: ev.TransferStats(**d),
}


def dict_to_event(d: dict[str, Any]) -> ev.Event:
    """Rebuild an event; raises ValueError with what is wrong for a line that does not fit."""
    try:
        cls = _BY_KIND[d["event"]]
        kwargs: dict[str, Any] = {"session": int(d["session"]), "time": float(d["t"])}
        raw = base64.b64decode(d["raw"]) if "raw" in d else b""
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
                    kwargs[name] = None
            elif name in d:
                value = d[name]
                if name == "requested" and cls is ev.PeerLocked:
                    kwargs[name] = _address(value)
                elif name == "requested":
                    kwargs[name] = _options(value)
                elif value is not None and name in _CONVERT and not (name == "reason" and cls is ev.Retransmit):
                    # Retransmit.reason is free text ("timeout", "window-gap"), not a Failed's Reason.
                    kwargs[name] = _CONVERT[name](value)
                else:
                    kwargs[name] = value
        return cls(**kwargs)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"not a tftpdiag event: {exc}") from None


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
        cls = type(event)
        if (cls is ev.PacketSent or cls is ev.PacketReceived) and not getattr(event, "detail", ""):
            packet = event.packet  # type: ignore[union-attr]
            if type(packet) is Data or type(packet) is Ack:
                self.file.write(self._fast_packet(event))  # type: ignore[arg-type]
                return
        self.file.write(json.dumps(event_to_dict(event, self.snaplen), separators=(",", ":")) + "\n")

    def _addr(self, addr: ev.Address) -> str:
        text = self._addr_cache.get(addr)
        if text is None:
            if len(self._addr_cache) > 4096:
                self._addr_cache.clear()
            text = self._addr_cache[addr] = _addr_json(addr)
        return text

    def _fast_packet(self, event: ev.PacketSent | ev.PacketReceived) -> str:
        raw = event.raw
        kept = raw if self.snaplen is None or len(raw) <= self.snaplen else raw[: self.snaplen]
        packet = event.packet
        kind = "packet-sent" if type(event) is ev.PacketSent else "packet-received"
        if type(packet) is Data:
            digest = f'{{"op":"DATA","block":{packet.block},"payload":{len(packet.payload)}}}'  # type: ignore[union-attr]
        else:
            digest = f'{{"op":"ACK","block":{packet.block}}}'  # type: ignore[union-attr]
        tail = ',"detail":""}' if kind == "packet-received" else "}"
        return (f'{{"t":{event.time!r},"session":{event.session},"event":"{kind}","local":{self._addr(event.local)},'
                f'"peer":{self._addr(event.peer)},"size":{len(raw)},"raw":"{binascii.b2a_base64(kept, newline=False).decode()}",'
                f'"packet":{digest},"note":"{event.note.value}"{tail}\n')

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_events(file: IO[str]) -> Iterator[ev.Event]:
    """Events from a tftpdiag jsonl trace. Raises ValueError naming the line that is damaged."""
    for number, line in enumerate(file, 1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"line {number} is not JSON (the file may be truncated)") from None
        if number == 1 and obj.get("format") == FORMAT:
            continue
        try:
            yield dict_to_event(obj)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
