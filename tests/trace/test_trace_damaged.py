"""Damaged jsonl traces: every kind of damage gives one warning line and the transfers that could be
read (exit 0), or, when nothing could be, one line and exit 2; never a traceback, never unbounded
memory. Made from simulated transfers: no network."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.simnet import run_transfer
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.trace.jsonl import MAX_LINE, JsonlWriter, dict_to_event
from tftpdiag.trace.load import TraceError, TraceLoad, load_trace
from tftpdiag.trace.summary import print_trace, trace_json

TIMEOUT = 60


def _lines() -> list[str]:
    """A header and two complete downloads (each seen by client and server), one JSON line each."""
    buf = io.StringIO()
    writer = JsonlWriter(buf)
    for n, name in enumerate(("first.bin", "second.bin")):
        data = random.Random(n).randbytes(3000)
        events = run_transfer("read", data, filename=name, options=RequestedOptions(blksize=512, tsize=True)).events
        for event in events:
            writer.write(replace(event, session=event.session + 10 * n))  # type: ignore[arg-type]
    return buf.getvalue().splitlines(keepends=True)


LINES = _lines()
GOOD = "".join(LINES).encode()


def first_line_of(kind: str) -> int:
    return next(i for i, row in enumerate(LINES) if f'"event":"{kind}"' in row)


def shown(loaded: TraceLoad) -> tuple[dict[str, Any], str]:
    """What `trace --json` and `trace --no-tui` print for it (and that neither raises)."""
    out = io.StringIO()
    print_trace(loaded, out)
    return trace_json(loaded), out.getvalue()


def test_the_undamaged_trace_has_two_transfers(tmp_path: Path) -> None:
    path = tmp_path / "good.jsonl"
    path.write_bytes(GOOD)
    summary, text = shown(load_trace(path))
    assert summary["warning"] is None and [t["file"] for t in summary["transfers"]] == ["first.bin", "second.bin"]
    assert "warning" not in text


def _field(kind: str, name: str, value: str) -> bytes:
    """The first line of ``kind`` with field ``name`` set to the JSON text ``value``."""
    i = first_line_of(kind)
    obj = json.loads(LINES[i])
    obj[name] = "@@"
    damaged = json.dumps(obj).replace('"@@"', value) + "\n"
    return "".join(LINES[:i] + [damaged] + LINES[i + 1:]).encode()


def _insert(line: bytes, at: int = 5) -> bytes:
    return "".join(LINES[:at]).encode() + line + "".join(LINES[at:]).encode()


DAMAGE = {
    "session-infinity": _insert(b'{"t": 1.0, "session": Infinity, "event": "timed-out", "waited": 1, "attempt": 1, '
                                b'"waiting_for": "x"}\n'),
    "session-nan": _insert(b'{"t": 1.0, "session": NaN, "event": "timed-out"}\n'),
    "time-infinity": _insert(b'{"t": -Infinity, "session": 1, "event": "timed-out", "waited": 1, "attempt": 1, '
                             b'"waiting_for": "x"}\n'),
    "huge-number": _insert(b'{"t": 1.0, "session": 1' + b"0" * 5000 + b', "event": "timed-out"}\n'),
    "huge-float": _insert(b'{"t": 1e400, "session": 1, "event": "timed-out"}\n'),
    "nested-brackets": _insert(b'{"t": ' + b"[" * 100_000 + b"\n"),
    "nested-objects": _insert(b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"\n"),
    "array-line": _insert(b"[1, 2, 3]\n"),
    "string-line": _insert(b'"event"\n'),
    "null-line": _insert(b"null\n"),
    "number-line": _insert(b"42\n"),
    "truncated-line": _insert(LINES[6][: len(LINES[6]) // 2].encode() + b"\n"),
    "binary-garbage": _insert(b"\xff\xfe\x00\x01garbage\x80\x81\n"),
    "nul-bytes": _insert(b"\x00" * 100 + b"\n"),
    "unknown-kind": _insert(b'{"t": 1.0, "session": 1, "event": "launch-missiles"}\n'),
    "kind-not-a-string": _insert(b'{"t": 1.0, "session": 1, "event": ["timed-out"]}\n'),
    "bad-base64": _field("packet-sent", "raw", '"not base64!!"'),
    "filename-a-number": _field("transfer-started", "filename", "5"),
    "address-not-ip": _field("transfer-started", "peer", '["\\u001b[2J", 69]'),
    "port-out-of-range": _field("transfer-started", "local", '["127.0.0.1", 70000]'),
    "address-not-a-pair": _field("packet-received", "peer", '"127.0.0.1"'),
    "role-unknown": _field("transfer-started", "role", '"admin"'),
    "options-not-pairs": _field("transfer-started", "requested", '[["blksize"]]'),
    "options-a-dict": _field("transfer-started", "requested", '{"blksize": "512"}'),
    "negotiated-wrong": _field("options-negotiated", "negotiated", '{"blksize": "big"}'),
    "stats-wrong-type": _field("completed", "stats", '{"bytes": "lots"}'),
    "stats-negative": _field("completed", "stats", json.dumps({**json.loads(LINES[first_line_of("completed")])["stats"],
                                                                "bytes": -5})),
    "count-a-float": _field("progress", "bytes", "1.5"),
    "mode-a-boolean": _field("transfer-started", "mode", "true"),
    "huge-line": _insert(b'{"t": "' + b"a" * (MAX_LINE + 10) + b'"}\n'),
    "huge-line-no-newline-at-end": GOOD + b"{" + b"a" * (3 * MAX_LINE),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_gives_one_warning_and_every_transfer_that_could_be_read(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(DAMAGE[damage])
    loaded = load_trace(path)
    summary, text = shown(loaded)
    assert summary["warning"] and summary["warning"].startswith("skipped 1 damaged line"), summary["warning"]
    assert [t["file"] for t in summary["transfers"]] == ["first.bin", "second.bin"]
    warnings = [row for row in text.splitlines() if row.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].isprintable()


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tftpdiag", *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize("damage", ["session-infinity", "nested-brackets", "binary-garbage"])
def test_cli_reads_past_the_damage(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(DAMAGE[damage])
    plain = run("trace", path, "--no-tui")
    assert plain.returncode == 0 and plain.stderr == ""
    assert plain.stdout.count("\nwarning: skipped 1 damaged line") == 1 and "2 transfers" in plain.stdout
    as_json = run("trace", path, "--json")
    assert as_json.returncode == 0 and as_json.stderr == ""
    assert len(json.loads(as_json.stdout)["transfers"]) == 2


@pytest.mark.parametrize("content", [
    b'{"t": 1.0, "session": Infinity, "event": "timed-out"}\n',
    b"{" + b"[" * 100_000 + b"\n",
    b"{\xff\xfe\n",
    b"{" + b"a" * (3 * MAX_LINE),
    b'{"format": "tftpdiag-trace"}\n{"t": 1.0, "session": -1, "event": "timed-out"}\n',
], ids=["infinity", "nesting", "not-utf8", "huge-line", "negative-session"])
def test_nothing_readable_is_exit_2_with_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "hopeless.jsonl"
    path.write_bytes(content)
    with pytest.raises(TraceError):
        load_trace(path)
    for flags in (("--no-tui",), ("--json",)):
        result = run("trace", path, *flags)
        assert result.returncode == 2 and result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
        assert "not a tftpdiag jsonl trace" in result.stderr


# -- every field of every kind of event, given a value of every JSON type ----------------------------

ODD_VALUES = [None, True, 0, -1, 1 << 70, 1.5, float("inf"), "", "\x1b[2J", [], [1], ["::1", 1], {}, {"a": 1}]


def _one_of_each_kind() -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for row in LINES[1:]:
        obj = json.loads(row)
        seen.setdefault(obj["event"], obj)
    return list(seen.values())


def test_every_field_with_a_value_of_the_wrong_kind_is_refused_or_harmless() -> None:
    from tftpdiag.findings import analyze
    from tftpdiag.trace.summary import trace_records

    for obj in _one_of_each_kind():
        for name in obj:
            for value in ODD_VALUES:
                try:
                    event = dict_to_event({**obj, name: value})
                except ValueError:
                    continue
                # Accepted: a field the event does not have, or a value of the right kind. Whatever
                # shows it must not fail.
                events = [event]
                trace_records(events)
                analyze(events)


# -- fuzzing the loader ------------------------------------------------------------------------------

def _load_and_show(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(content)
    try:
        loaded = load_trace(path)
    except TraceError as exc:
        assert str(exc).isprintable()  # one line, in our words
        return
    shown(loaded)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


# Pieces of JSON and of trouble (deep nesting, numbers JSON takes but Python cannot use, bytes that are
# not UTF-8), strung together at random.
TOKENS = [b"{", b"}", b"[", b"]", b",", b":", b"\n", b"\n", b'{"t":', b'"t":1,', b'"session":', b'"event"',
          b'"session"', b'"t"', b'"timed-out"', b'"completed"',
          b"Infinity", b"-Infinity", b"NaN", b"1e400", b"-1", b"0", b"1" * 30, b"null", b"true", b'"\\u001b[2J"',
          b'"\\ud800"', b"\xff\xfe", b"\x00", b"[" * 5000, b'{"a":' * 3000]
jsonish = st.lists(st.sampled_from(TOKENS), max_size=120).map(b"".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=2000), jsonish))
def test_fuzz_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    # After a header line, so the jsonl loader reads it all.
    _load_and_show(tmp_path, b'{"format": "tftpdiag-trace"}\n' + data)


# Values of every JSON kind, the odd ones (out of range, not finite, the wrong type) more often.
field_values = st.one_of(st.sampled_from(ODD_VALUES + [float("nan"), -(1 << 70)]), json_values)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(LINES) - 1),
                          st.sampled_from(["replace", "replace", "drop", "cut", "insert"]),
                          field_values, st.integers(0, 400)), min_size=1, max_size=8))
def test_fuzz_mutated_real_traces(tmp_path: Path, mutations: list[tuple[int, str, Any, int]]) -> None:
    """Real lines with fields replaced by arbitrary JSON values, lines dropped, cut or inserted."""
    lines = list(LINES)
    for index, how, value, cut in mutations:
        index %= len(lines) if lines else 1
        if not lines:
            break
        if how == "replace":
            try:
                obj = json.loads(lines[index])
            except ValueError:
                continue  # a line an earlier mutation cut
            if isinstance(obj, dict) and obj:
                key = sorted(obj)[cut % len(obj)]
                obj[key] = value
                lines[index] = json.dumps(obj) + "\n"
        elif how == "drop":
            del lines[index]
        elif how == "cut":
            lines[index] = lines[index][:cut] + "\n"
        else:
            lines.insert(index, json.dumps(value) + "\n")
    _load_and_show(tmp_path, "".join(lines).encode())
