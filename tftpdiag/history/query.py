"""``tftpdiag history``: the recorded sessions, filtered, as lines, JSON, or one row per device.

What was stored raw (names and messages from the network) is shown through :mod:`tftpdiag.fmt`."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any, TextIO

from tftpdiag.fmt import clean, duration, iso_time, json_line, line, quote
from tftpdiag.report import SCHEMA, stray_kind
from tftpdiag.sessions import fmt_addr, fmt_bytes

__all__ = ["parse_since", "session_json", "session_line", "device_line", "device_json"]

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``30m``, ``1h``, ``2d``, ``1w`` ago, or a date or time in ISO 8601 (``2026-12-01``,
    ``2026-12-01T22:00``, ``2026-12-01T22:00Z``; without an offset, local time) -> Unix time."""
    match = _AGO.match(text)
    if match:
        return (time.time() if now is None else now) - float(match[1]) * _UNIT[match[2].lower()]
    try:
        return datetime.fromisoformat(text.strip().replace("z", "Z")).timestamp()
    except ValueError:
        raise ValueError(f"expected a time ago like 1h or 2d, or a date like 2026-12-01 or 2026-12-01T22:00, "
                         f"not {text!r}") from None


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _addr(address: str | None, port: int | None) -> dict[str, Any] | None:
    return None if address is None else {"address": address, "port": port}


def session_json(row: dict[str, Any]) -> dict[str, Any]:
    """A recorded session as JSON: the fields ``serve --json`` has that the history keeps."""
    error = None
    if row["result"] != "ok" and (row["error"] is not None or row["error_code"] is not None):
        error = {"code": row["error_code"], "message": row["error"], "reason": row["reason"]}
    return {
        "schema": SCHEMA, "event": row["kind"], "started": iso_time(row["started"]), "ended": iso_time(row["ended"]),
        "ok": row["result"] == "ok", "result": row["result"], "server_name": row["server"],
        "client": _addr(row["client_address"], row["client_port"]),
        "local": _addr(row["server_address"], row["server_port"]),
        "file": row["file"], "direction": row["direction"], "mode": row["mode"],
        "options": {"requested": _loads(row["options_asked"]) or {}, "granted": _loads(row["options_granted"])},
        "bytes": row["bytes"], "duration_s": row["duration_s"], "retransmits": row["retransmits"],
        "error": error, "findings": _loads(row["findings"]) or [], "received": row["received"],
    }


def _client(row: dict[str, Any]) -> str:
    address = row["client_address"]
    return "-" if address is None else fmt_addr((clean(address), row["client_port"] or 0))


def _outcome(row: dict[str, Any]) -> str:
    if row["result"] == "ok":
        return "ok"
    code = f"ERROR {row['error_code']}: " if row["error_code"] is not None else ""
    return f"{row['result']}: {code}{clean(row['error'] or row['reason'] or '')}"


def _asked(row: dict[str, Any], width: int = 0, kind: bool = True) -> str:
    """What the client sent: its request's file (after its kind), or what came when it was no request."""
    if row["received"]:  # (a row written before the column, NULL, shows as the request it was taken for)
        return f"{clean(stray_kind(row['received'])):<{width + 4 * kind}}"
    asked = ("RRQ " if row["direction"] == "download" else "WRQ ") if kind else ""
    return f"{asked}{quote(row['file'] or ''):<{width}}"


def session_line(row: dict[str, Any]) -> str:
    findings = _loads(row["findings"]) or []
    seen = f"  [{', '.join(clean(str(f)) for f in findings)}]" if findings else ""
    return line(f"{iso_time(row['started'])} {_client(row):<22} {_asked(row, 24)} "
                f"{fmt_bytes(row['bytes'] or 0):>12} {duration(row['duration_s'] or 0):>10}  {_outcome(row)}{seen}")


def device_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "client": row["client_address"], "sessions": row["sessions"], "failures": row["failures"],
            "last": session_json(row)}


def device_line(row: dict[str, Any]) -> str:
    return line(f"{clean(row['client_address'] or '-'):<40} last {iso_time(row['started'])} "
                f"{_asked(row, kind=False)} {_outcome(row)}; {row['sessions']} sessions, {row['failures']} failed")


def write(rows: list[dict[str, Any]], *, devices: bool, json_out: bool, out: TextIO) -> None:
    if json_out:
        out.write(json_line([device_json(r) if devices else session_json(r) for r in rows]) + "\n")
        return
    render = device_line if devices else session_line
    out.writelines(render(r) + "\n" for r in rows)
