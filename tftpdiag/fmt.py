"""Untrusted text made safe to show: the one place that knows how.

File names, modes, option names and values, ERROR messages and anything else decoded from a datagram
or read from a trace file is chosen by whoever sent it. Printed as it is, it can clear the terminal of
the person reading, set its title, ring its bell, reorder what is shown (bidi overrides) or forge log
lines (CR/LF). Every character Python does not call printable (C0 and C1 controls, DEL, ESC, line and
paragraph separators, format characters such as the bidi overrides and isolates, surrogates, private
use, unassigned) is shown as an escape instead, and a huge string is cut to a bounded length.

Where it is applied: plain output writes every line through :func:`line` (headless, trace, the CLI's
one-line errors); a :class:`~tftpdiag.findings.Finding` cleans its own text when it is made; the TUI
builds its text from :func:`clean` and :func:`quote` and never lets such a string be read as markup.
Data written to trace files keeps the raw bytes: only what is shown is escaped.

JSON (``--json``, ``serve --log``) and the history are not a terminal: they keep the original text, but
must hold valid UTF-8, which a byte that was not UTF-8 (a lone surrogate, as the decoders keep it) is
not. One rule, :func:`storable`, writes such text: each such byte as ``\\xNN`` and every backslash
doubled, so that :func:`unstored` gives the original back exactly. :func:`json_line` applies it to the
strings of a JSON object that need it (every other string is written as it is, so that a clean name such
as ``boot\\x86\\wdsnbp.com`` reads as it is) and lists the ones it rewrote in the object itself
(:data:`ESCAPED`, :data:`ESCAPED_NAMES`): without that list a reader could not tell a rewritten name from
a clean one that holds the same characters. :func:`json_restored` reads them back. The history applies
the rule to every string it stores, so that it reads them all back exactly.

It is also the one place that writes sizes, rates and addresses, so that every view says the same
thing the same way: binary units (KiB, MiB, GiB: powers of 1024, as ``--max-size 10M`` reads them) in
plain output, the TUI and the progress bar alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["SHOWN", "LINE", "NOT_CAPTURED", "clean", "quote", "file_name", "line", "options", "size", "rate",
           "address", "iso_time", "storable", "unstored", "json_line", "json_restored", "ESCAPED", "ESCAPED_NAMES",
           "own_end"]

SHOWN = 200  # characters of one untrusted string shown; the rest are counted, not printed
LINE = 2000  # a whole output line, as a last bound for text that was not cut field by field


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as the surrogateescape codec keeps it
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escaped(text: str, specials: str) -> str:
    return "".join(_escape_char(ch) if not ch.isprintable() else
                   ("\\" + ch if ch in specials else ch) for ch in text)


def _cut(text: str, limit: int) -> tuple[str, str]:
    if len(text) <= limit:
        return text, ""
    return text[:limit], f"…(+{len(text) - limit:,} chars)"


def clean(text: str, limit: int = SHOWN) -> str:
    """``text`` with every character that is not printable shown as ``\\xNN``, ``\\uNNNN`` or
    ``\\UNNNNNNNN``, and at most ``limit`` characters of it. Backslashes are left alone, so cleaning
    text twice changes nothing: it is safe to clean a line that holds already cleaned parts."""
    text, more = _cut(text, limit)
    if text.isprintable():  # nearly always: no copy
        return text + more
    return _escaped(text, "") + more


def quote(name: str, limit: int = SHOWN) -> str:
    """A name from the network in quotes, every odd character visible: what :func:`clean` escapes,
    plus backslashes and quotes doubled, so that the name shown cannot be mistaken for another."""
    name, more = _cut(name, limit)
    return "'" + _escaped(name, "\\'") + "'" + more


# What every view says in place of the file name of a transfer a capture joined mid-way.
NOT_CAPTURED = "(request not captured)"


def file_name(name: str, shown: Callable[[str], str] = quote) -> str:
    """A transfer's file name as every view shows it: ``shown(name)`` (by default :func:`quote`; a view
    whose names are escaped already passes its own), or :data:`NOT_CAPTURED` for none. Every request
    holds a name (the codec, and a watcher's reading of a request, take none without), so a transfer
    without one is one rebuilt from a capture that began after its request: '' would say nothing."""
    return shown(name) if name else NOT_CAPTURED


def line(text: str) -> str:
    """One line of plain output, whatever went into it: no control character survives (a CR or LF in a
    message cannot start a forged line), and its length is bounded."""
    return clean(text, LINE)


def _is_text(text: str) -> bool:
    """Whether ``text`` is valid Unicode text that UTF-8 (and so JSON and a database) can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: a byte that was not UTF-8, or a broken pair
        return False
    return True


def _stored_char(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch == "\0" or 0xD800 <= ord(ch) <= 0xDFFF:
        return _escape_char(ch)
    return ch


def storable(text: str) -> str:
    """``text`` as valid UTF-8 without NUL, the original recoverable by :func:`unstored`: each byte that
    was not UTF-8 as ``\\xNN`` (any other lone surrogate ``\\uNNNN``), a NUL ``\\x00``, and every
    backslash doubled, so that an escape cannot be told from a backslash the text had."""
    if "\\" not in text and "\0" not in text and _is_text(text):  # nearly always: no copy
        return text
    return "".join(_stored_char(ch) for ch in text)


_STORED_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def _unstored_char(m: re.Match[str]) -> str:
    escape = m.group(1)
    if escape == "\\":
        return "\\"
    code = int(escape[1:], 16)
    return chr(0xDC00 + code) if escape[0] == "x" and code >= 0x80 else chr(code)


def unstored(text: str) -> str:
    """The text :func:`storable` was given."""
    return _STORED_ESCAPE.sub(_unstored_char, text) if "\\" in text else text


# The members of a JSON object json_line writes that say which of its strings it rewrote by storable: JSON
# Pointers (RFC 6901, relative to that object) of the string values, and of the members whose name was
# rewritten. Pointers, not dotted paths: an option's name from the network may hold "." or "[" itself.
# Names apart from values: a member's name and its value may each have been rewritten, or only one.
ESCAPED = "escaped"
ESCAPED_NAMES = "escaped_names"


def _token(key: object) -> str:
    """A member name as a JSON Pointer's reference token: as JSON writes it, ``~`` and ``/`` escaped."""
    if not isinstance(key, str):  # json.dumps's own spelling of a key that is not a string (ours: numbers)
        key = "null" if key is None else str(key).lower() if isinstance(key, bool) else str(key)
    return key.replace("~", "~0").replace("/", "~1")


def _json_safe(value: object, at: str, values: list[str], names: list[str]) -> object:
    """``value`` with each string that is not valid text written by :func:`storable`, the JSON Pointer
    of each (``at`` is the pointer of ``value``) added to ``values``, or to ``names`` for a member name."""
    if isinstance(value, str):
        if _is_text(value):
            return value
        values.append(at)
        return storable(value)
    if isinstance(value, dict):
        safe = {}
        for key, item in value.items():
            if isinstance(key, str) and not _is_text(key):
                key = storable(key)
                names.append(f"{at}/{_token(key)}")
            safe[key] = _json_safe(item, f"{at}/{_token(key)}", values, names)
        return safe
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, f"{at}/{i}", values, names) for i, item in enumerate(value)]
    return value


def _marked(obj: object) -> object:
    """``obj`` made valid text, each object saying which of its strings were rewritten: the object given,
    or each object of an array given (a line of history --json holds many sessions)."""
    if isinstance(obj, (list, tuple)):
        return [_marked(item) for item in obj]
    values: list[str] = []
    names: list[str] = []
    safe = _json_safe(obj, "", values, names)
    if isinstance(safe, dict):  # anything else is no JSON tftpdiag writes: it could not say which
        if values:
            safe[ESCAPED] = values
        if names:
            safe[ESCAPED_NAMES] = names
    return safe


def json_line(obj: object, **dumps: Any) -> str:
    """``obj`` as JSON text (no newline), valid UTF-8 whatever it holds: the strings as they are, but
    one that is not valid text (a name with bytes that were not UTF-8) written by :func:`storable` and
    named by its JSON Pointer in the object's :data:`ESCAPED` list (:data:`ESCAPED_NAMES` for a member
    name), which :func:`json_restored` reads; an object with nothing rewritten has neither."""
    import json  # here: only JSON output needs it, and a plain run's start would load it

    text = json.dumps(obj, **dumps)
    if dumps.get("ensure_ascii", True):
        if "\\ud" not in text:  # ASCII output: a lone surrogate would show as its \udXXX escape
            return text
    elif _is_text(text):  # (not ASCII: a lone surrogate would be in the text itself)
        return text
    return json.dumps(_marked(obj), **dumps)


def _pointed(root: object, pointer: object) -> tuple[Any, Any]:
    """The container and the key or index a JSON Pointer of :data:`ESCAPED` names, in ``root``. The
    pointer may come from an untrusted file: anything that does not name a member raises ValueError."""
    if type(pointer) is not str or not pointer.startswith("/"):
        raise ValueError("a pointer of the escaped strings that is not a JSON Pointer")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
    here: Any = root
    for n, token in enumerate(tokens):
        if type(here) is list and token.isascii() and token.isdecimal() and len(token) < 19 and int(token) < len(here):
            key: Any = int(token)
        elif type(here) is dict and token in here:
            key = token
        else:
            raise ValueError("a pointer of the escaped strings that names nothing there")
        if n == len(tokens) - 1:
            return here, key
        here = here[key]
    raise AssertionError("unreachable")  # the loop returns at its last token


def json_restored(obj: Any) -> Any:
    """What :func:`json_line` was given, from what it wrote (``json.loads`` of it): each string its
    :data:`ESCAPED` and :data:`ESCAPED_NAMES` lists name read back by :func:`unstored`, every other
    string as it is, the lists themselves gone. JSON without the lists (clean, or written before them)
    comes back as it is. Changes ``obj`` in place; raises ValueError for lists that do not fit it."""
    if type(obj) is list:
        return [json_restored(item) for item in obj]
    if type(obj) is not dict:
        return obj
    values, names = obj.pop(ESCAPED, []), obj.pop(ESCAPED_NAMES, [])
    if type(values) is not list or type(names) is not list:
        raise ValueError("a list of the escaped strings that is not a list")
    for pointer in values:  # values first: their pointers spell every name as it was written
        holder, key = _pointed(obj, pointer)
        if type(holder[key]) is not str:
            raise ValueError("a pointer of the escaped strings that names no string")
        holder[key] = unstored(holder[key])
    # Every name found before any is renamed (a deeper pointer spells the names above it as written),
    # then each object renamed once, in place: its order kept (an options object's). Once per object,
    # not per name: a hostile trace line of 6,000 such names took 8 s renamed one by one.
    renamed: dict[int, tuple[dict[Any, Any], set[Any]]] = {}
    for pointer in names:
        holder, key = _pointed(obj, pointer)
        if type(holder) is not dict:
            raise ValueError("a pointer of the escaped names that names no member")
        renamed.setdefault(id(holder), (holder, set()))[1].add(key)
    for holder, keys in renamed.values():
        members = list(holder.items())
        holder.clear()
        holder.update((unstored(k) if k in keys else k, v) for k, v in members)
    return obj


def options(pairs: Iterable[tuple[str, str]] | None, limit: int = SHOWN) -> str:
    """Option pairs as ``name=value`` words, each part cleaned; "no options" for none."""
    shown = " ".join(f"{clean(str(k), limit)}={clean(str(v), limit)}" for k, v in pairs or ())
    return shown or "no options"


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(n: float) -> str:
    """A number of bytes in binary units: ``512 B``, ``1.5 KiB``, ``8.0 MiB``."""
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # the loop returns at its last unit


def rate(bytes_per_s: float) -> str:
    """A throughput in bytes per second, binary units: ``1.2 MiB/s``."""
    return f"{size(bytes_per_s)}/s"


def duration(seconds: float, places: int = 3) -> str:
    """A transfer's duration: ``0.736 s``, or in milliseconds below 10 ms (``0.35 ms``), where three
    decimals of a second would read ``0.000 s`` beside a rate computed from the real figure. ``places``
    for a figure that ticks on screen (the header's, in hundredths) and must still not read ``0.00 s``."""
    return f"{seconds:.{places}f} s" if seconds >= 0.01 else f"{seconds * 1000:.2f} ms"


def address(addr: tuple[str, int] | None) -> str:
    """``host:port``, an IPv6 host in brackets; ``-`` for none."""
    if addr is None:
        return "-"
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def own_end(observed: bool, client: tuple[str, int] | None) -> str:
    """The end of a transfer whose side a record plays (its LOCAL side), in words: "tftpdiag" live; in a
    capture, where neither end is tftpdiag and the record plays the client's side, "the client ADDRESS".
    Every finding and failure line that says who did something takes this end's name from here."""
    return f"the client {address(client)}" if observed else "tftpdiag"


def iso_time(t: float) -> str:
    """A Unix time as ISO 8601 in UTC to the millisecond, e.g. ``2026-12-02T14:10:49.123Z``: logs of
    servers in different time zones line up, and the text sorts as the time does."""
    from datetime import datetime, timezone  # here: a run that shows no time need not load it (start-up)

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
