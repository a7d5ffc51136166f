"""Names and messages with bytes that are not UTF-8 in a jsonl trace: written as every JSON tftpdiag
writes (fmt.json_line: valid UTF-8, the rewritten strings listed), read back by `trace` exactly; and a
trace written before that rule (lone surrogates as ``\\udcXX`` escapes) still loads."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from tests.support.json_text import assert_valid_text
from tftpdiag.fmt import json_restored
from tftpdiag.protocol import events as ev
from tftpdiag.protocol.datagram import Address
from tftpdiag.protocol.packets import decode
from tftpdiag.trace.jsonl import FORMAT, JsonlWriter, event_to_dict, read_events

FW = b"fw\xff.bin"  # a name with a byte that is not UTF-8
WDS_CLEAN = "boot\\x86\\wdsnbp.com"  # a Windows Deployment Services name: backslash, x, 8, 6 as typed
WDS_BYTE = b"boot\x86\\wdsnbp.com"  # the same characters, but the byte 0x86 where WDS has "\x86"
L: Address = ("10.0.0.5", 40000)
S: Address = ("10.0.0.1", 69)
T: Address = ("10.0.0.1", 50000)
STATS = ev.TransferStats(0, 0.01, 0, 1, 1, 0, 0, 0, 0, 0)


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")  # as the codec keeps a name


def events() -> list[ev.Event]:
    """A probe of FW that the server refuses with a message naming it, then a server's refusals of the
    two WDS names: each string that is not re-derived from a packet's raw bytes holds odd bytes."""
    rrq = b"\x00\x01" + FW + b"\x00octet\x00blksize\x001468\x00"
    error = b"\x00\x05\x00\x01no " + FW + b" here\x00"
    odd_options = ((text(b"blk\xfesize"), text(b"14\xfd68")),)
    return [
        ev.TransferStarted(1, 1.0, ev.Role.CLIENT_READ, text(FW), "octet", L, S, (("blksize", "1468"),)),
        ev.PacketSent(1, 1.0, L, S, rrq, decode(rrq)),
        ev.RequestRetried(1, 1.005, 8, text(b"bad \xfe option"), odd_options, (("blksize", "1468"),)),
        ev.PacketReceived(1, 1.01, L, T, error, decode(error)),
        ev.Failed(1, 1.01, ev.Reason.PEER_ERROR, ev.Side.PEER, 1, text(b"no " + FW + b" here"), STATS),
        ev.RequestRefused(2, 2.0, L, text(WDS_BYTE), True, 1, "file not found", "not-found",
                          suggestion=WDS_CLEAN, mode="octet", requested=odd_options),
        ev.RequestRefused(3, 3.0, L, WDS_CLEAN, True, 1, "file not found", "not-found", mode="octet"),
    ]


def written(evs: list[ev.Event]) -> str:
    out = io.StringIO()
    writer = JsonlWriter(out)
    for event in evs:
        writer.write(event)
    return out.getvalue()


def test_a_jsonl_trace_is_valid_utf8_and_reads_back_exactly() -> None:
    evs = events()
    content = written(evs)
    content.encode("utf-8")  # strict: a lone surrogate could not be written to the file at all
    assert "\\ud" not in content  # no \udcXX escape, which jq turns into U+FFFD
    for line in content.splitlines():
        assert_valid_text(json.loads(line))  # as jq reads it
    lines = [json.loads(line) for line in content.splitlines()[1:]]
    assert lines[0]["filename"] == "fw\\xff.bin" and lines[0]["escaped"] == ["/filename"]
    # The clean WDS name is written as it is and not listed: a reader tells it from the byte 0x86.
    assert lines[6]["filename"] == WDS_CLEAN and "escaped" not in lines[6]
    assert lines[5]["filename"] == "boot\\x86\\\\wdsnbp.com" and "/filename" in lines[5]["escaped"]
    assert lines[5]["suggestion"] == WDS_CLEAN and "/suggestion" not in lines[5]["escaped"]
    assert list(read_events(io.StringIO(content))) == evs


def test_trace_reads_such_a_jsonl_trace_with_the_exact_names(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text(written(events()), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "tftpdiag", "trace", str(path), "--json"], capture_output=True,
                            timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.decode("utf-8"))  # strict UTF-8
    assert_valid_text(loaded)
    files = {t["session"]: t["file"] for t in json_restored(loaded)["transfers"]}
    assert files[1].encode("utf-8", "surrogateescape") == FW
    assert files[2].encode("utf-8", "surrogateescape") == WDS_BYTE
    assert files[3] == WDS_CLEAN
    # And without restoring: the JSON itself says which name was rewritten.
    loaded = json.loads(result.stdout.decode("utf-8"))
    index = {t["session"]: n for n, t in enumerate(loaded["transfers"])}
    assert f"/transfers/{index[2]}/file" in loaded["escaped"]
    assert f"/transfers/{index[3]}/file" not in loaded["escaped"]
    assert loaded["transfers"][index[2]]["file"] != loaded["transfers"][index[3]]["file"]


def test_a_trace_written_before_the_rule_still_loads() -> None:
    """The writer of old: json.dumps as it is, a byte that was not UTF-8 as a ``\\udcXX`` escape."""
    evs = events()
    header = json.dumps({"format": FORMAT, "version": 1, "tool": "tftpdiag 0.9"})
    old = "\n".join([header] + [json.dumps(event_to_dict(e), separators=(",", ":")) for e in evs]) + "\n"
    assert "\\udcff" in old and "escaped" not in old
    assert list(read_events(io.StringIO(old))) == evs


def test_a_forged_list_of_escaped_strings_is_a_damaged_line_not_a_crash() -> None:
    """A trace file can say anything: lists that name nothing, or no string, refuse the line in words."""
    good = json.loads(written(events()[:1]).splitlines()[1])
    del good["escaped"]
    forged = [{"escaped": 5}, {"escaped": [5]}, {"escaped": ["filename"]}, {"escaped": ["/nope"]},
              {"escaped": ["/t"]}, {"escaped": ["/requested/0/9"]}, {"escaped": ["/requested/x/0"]},
              {"escaped": ["/filename/0"]}, {"escaped": ["/requested/" + "9" * 5000 + "/0"]},
              {"escaped_names": ["/requested/0"]}, {"escaped_names": "/filename"}, {"escaped_names": [None]}]
    for extra in forged:
        line = json.dumps({**good, **extra})
        try:
            list(read_events(io.StringIO(line)))
        except ValueError as exc:
            assert str(exc).startswith("line 1: ") and str(exc).isprintable()
        else:
            raise AssertionError(f"read as an event: {extra}")
