"""Requests our server would refuse, as a capture shows them: `trace` and `watch` list each one, as sent,
with the answer its server gave (tester's reproduction against in.tftpd: an over-long name, an unknown
mode, an option value that is not ASCII, one that is no number)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from tftpdiag.devices import DeviceBook
from tftpdiag.findings import analyze
from tftpdiag.fmt import NOT_CAPTURED, address, quote
from tftpdiag.protocol.datagram import Address, Datagram
from tftpdiag.protocol.events import Completed, Failed, Note, PacketReceived, PacketSent, Reason, Side
from tftpdiag.protocol.packets import Error, OAck, Opcode, Request, encode, encode_ack, encode_data
from tftpdiag.report import device_lines, mode_text, one_line
from tftpdiag.sessions import SessionRecord
from tftpdiag.trace.jsonl import JsonlWriter, read_events
from tftpdiag.trace.pcap import PcapWriter
from tftpdiag.trace.rebuild import Rebuilder, rebuild
from tftpdiag.trace.summary import trace_records
from tftpdiag.tui.model import quoted
from tftpdiag.tui.screens.devices import _files

S: Address = ("10.99.0.1", 69)
LONG = b"\x1b[2J" + b"B" * 600  # over 512 bytes, and a terminal escape a view must not pass on
CFG = b"pxelinux.cfg/default"
ASKED = {
    ("10.99.0.50", 48902): b"\x00\x01" + LONG + b"\x00octet\x00",
    ("10.99.0.50", 58713): b"\x00\x01" + CFG + b"\x00binary\x00",
    ("10.99.0.50", 42118): b"\x00\x01" + CFG + b"\x00octet\x00blksize\x00\xff\xfe\x00",
    ("10.99.0.50", 58613): b"\x00\x01" + CFG + b"\x00octet\x00blksize\x00abc\x00",
}


def dgram(time: float, src: Address, dst: Address, raw: bytes) -> Datagram:
    return Datagram(time, src, dst, raw, len(raw))


def odd_requests() -> list[Datagram]:
    """The four requests and what in.tftpd answered (each from a transfer port of its own)."""
    (long, binary, not_ascii, not_number) = ASKED
    out = [
        dgram(0.0, long, S, ASKED[long]),
        dgram(0.001, ("10.99.0.1", 59641), long, encode(Error(0, "cannot read " + LONG.decode()))),
        dgram(1.0, binary, S, ASKED[binary]),
        dgram(1.5, binary, S, ASKED[binary]),  # the client's timer: the same request again
        dgram(1.501, ("10.99.0.1", 58898), binary, encode(Error(4, "Unknown mode"))),
        dgram(2.0, not_ascii, S, ASKED[not_ascii]),
        dgram(2.001, ("10.99.0.1", 39411), not_ascii, encode(OAck((("blksize", "1"),)))),
        dgram(2.002, not_ascii, ("10.99.0.1", 39411), encode_ack(0)),
        dgram(2.003, ("10.99.0.1", 39411), not_ascii, encode_data(1, b"x")),
        dgram(2.004, not_ascii, ("10.99.0.1", 39411), encode_ack(1)),
        dgram(2.005, ("10.99.0.1", 39411), not_ascii, encode_data(2, b"")),
        dgram(2.006, not_ascii, ("10.99.0.1", 39411), encode_ack(2)),
        dgram(3.0, not_number, S, ASKED[not_number]),
        dgram(3.001, ("10.99.0.1", 60223), not_number, encode(Error(8, "Invalid blksize"))),
    ]
    return out


def records_of(datagrams: list[Datagram]) -> tuple[Rebuilder, list[SessionRecord]]:
    rebuilder = Rebuilder()
    rebuilder.feed(datagrams)
    return rebuilder, trace_records(rebuilder.finish())


def test_every_odd_request_is_a_transfer_with_the_servers_answer() -> None:
    rebuilder, records = records_of(odd_requests())
    assert rebuilder.midstream == 0  # each answer joined to the request it answers, none taken for mid-way
    assert [(r.client, r.peer) for r in records] == [(client, S) for client in ASKED]
    assert [(r.filename, r.mode) for r in records] == [
        (LONG.decode(), "octet"), (CFG.decode(), "binary"), (CFG.decode(), "octet"), (CFG.decode(), "octet")]
    assert [r.requested for r in records] == [(), (), (("blksize", "\udcff\udcfe"),), (("blksize", "abc"),)]
    long, binary, not_ascii, not_number = records
    for record, code in ((long, 0), (binary, 4), (not_number, 8)):
        assert isinstance(record.result, Failed)
        assert (record.result.reason, record.result.raised_by, record.result.code) == (Reason.PEER_ERROR, Side.PEER,
                                                                                         code)
        assert record.error_sender == "server"
    assert binary.retransmits == 1 and binary.replied_from == ("10.99.0.1", 58898)
    assert isinstance(not_ascii.result, Completed) and not_ascii.bytes == 1
    assert not_ascii.replied_from == ("10.99.0.1", 39411)
    assert not_ascii.negotiated is not None and not_ascii.negotiated.blksize == 1
    assert not_number.negotiated is not None
    assert [o.verdict.value for o in not_number.negotiated.outcomes] == ["refused"]


def test_an_odd_request_from_a_port_that_ran_a_transfer_before() -> None:
    """The observer of the port's first transfer hands the new request back: read as sent there too."""
    client = ("10.99.0.50", 48902)
    capture = [
        dgram(0.0, client, S, encode(Request(Opcode.RRQ, "first", "octet"))),
        dgram(0.001, ("10.99.0.1", 50000), client, encode_data(1, b"one")),
        dgram(0.002, client, ("10.99.0.1", 50000), encode_ack(1)),
        dgram(5.0, client, S, ASKED[client]),
        dgram(5.001, ("10.99.0.1", 50001), client, encode(Error(0, "cannot read"))),
    ]
    events = rebuild(capture)
    records = trace_records(events)
    assert [(r.filename, type(r.result)) for r in records] == [("first", Completed), (LONG.decode(), Failed)]
    (sent,) = [e for e in events if isinstance(e, PacketSent) and e.raw == ASKED[client]]
    assert sent.packet == Request(Opcode.RRQ, LONG.decode(), "octet") and sent.note is Note.NONE


def test_trace_lists_them_escaped_with_the_servers_refusal(tmp_path: Path) -> None:
    path = tmp_path / "odd.pcap"
    with open(path, "wb") as f, PcapWriter(f) as writer:
        for d in odd_requests():
            writer.write(1e9 + d.time, d.src, d.dst, d.payload)
    result = subprocess.run([sys.executable, "-m", "tftpdiag", "trace", str(path), "--no-tui"], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].endswith("4 transfers")
    heads = [line for line in lines if line.startswith("#")]
    assert len(heads) == 4 and not [h for h in heads if "not captured" in h]
    assert "RRQ '\\x1b[2JBBBB" in heads[0] and "ERROR 0" in heads[0]
    assert "'pxelinux.cfg/default' 'binary'" in heads[1] and "ERROR 4" in heads[1]  # its mode, odd: quoted
    assert heads[2].endswith("ok") and "ERROR 8" in heads[3]
    assert any(line.strip().startswith("blksize    asked \\xff\\xfe") for line in lines)
    (device,) = [line for line in lines if line.startswith("device ")]
    assert device.count("✘ refused") == 3


def test_a_transfer_without_its_request_is_named_the_same_everywhere(tmp_path: Path) -> None:
    """trace's headline, watch's line, the device line and its findings, and the TUI's views all say the
    same words (fmt.NOT_CAPTURED) for a transfer whose request the capture lacks."""
    client, tid = ("10.99.0.50", 42118), ("10.99.0.1", 39411)
    capture = [dgram(0.001 * n, *((tid, client) if n % 2 else (client, tid)),
                     encode_data(n // 2 + 1, b"x" * 512) if n % 2 else encode_ack(n // 2)) for n in range(1, 9)]
    capture.append(dgram(0.1, tid, client, encode_data(5, b"end")))  # the final block, then the capture ends
    rebuilder, (record,) = records_of(capture)
    assert rebuilder.midstream == 1 and record.filename == ""
    said = f"RRQ to {address(tid)} {NOT_CAPTURED}"
    assert said in one_line(record, server=True)  # watch
    (device,) = DeviceBook().add_all([record]).judge(100.0, quiet=3.0)
    lines = device_lines(device)
    assert f"{NOT_CAPTURED} ✔" in lines[0] and "''" not in "\n".join(lines)
    assert quoted("") == NOT_CAPTURED and quoted("boot.img") == "'boot.img'"  # the TUI's names
    assert _files(device, 200).plain.startswith(f"{NOT_CAPTURED} ✔")
    path = tmp_path / "mid.pcap"
    with open(path, "wb") as f, PcapWriter(f) as writer:
        for d in capture:
            writer.write(1e9 + d.time, d.src, d.dst, d.payload)
    result = subprocess.run([sys.executable, "-m", "tftpdiag", "trace", str(path), "--no-tui"], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    (head,) = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert f"RRQ {NOT_CAPTURED}" in head
    (device_line,) = [line for line in result.stdout.splitlines() if line.startswith("device ")]
    assert NOT_CAPTURED in device_line and "''" not in device_line


def test_a_jsonl_trace_keeps_the_requests_as_read() -> None:
    """watch --trace x.jsonl, then trace x.jsonl: each event holds again the packet it held when made (a
    request read as sent; None for what had no request's shape)."""
    capture = odd_requests()
    long = next(iter(ASKED))
    capture.insert(1, dgram(0.0005, long, S, b"\x00\x01junk"))  # no request's shape: MALFORMED, no packet
    events = rebuild(capture)
    out = io.StringIO()
    writer = JsonlWriter(out)
    for event in events:
        writer.write(event)
    back = list(read_events(io.StringIO(out.getvalue())))
    sent = [(e.raw, e.packet, e.note) for e in events if isinstance(e, PacketSent)]
    assert [(e.raw, e.packet, e.note) for e in back if isinstance(e, PacketSent)] == sent
    assert (b"\x00\x01junk", None, Note.MALFORMED) in sent
    assert sum(isinstance(packet, Request) for _, packet, _ in sent) == 5  # the four, one of them twice
    # Our server's refusal of the over-long request held no packet (decode refused it): nor does it again.
    refused = PacketReceived(9, 5.0, S, long, ASKED[long], None, Note.MALFORMED, "RRQ of 613 bytes exceeds")
    out = io.StringIO()
    JsonlWriter(out).write(refused)
    assert list(read_events(io.StringIO(out.getvalue()))) == [refused]


C: Address = ("10.0.0.5", 40000)
T: Address = ("10.0.0.1", 50000)


def _answered(request: bytes, *answer: bytes) -> list[Datagram]:
    """``request`` from C, then the server's ``answer`` and C's replies, one after the other."""
    ours = b"\x00\x03" if request[1] == 2 else b"\x00\x04"  # C sends an upload's DATA, a download's ACKs
    out = [dgram(0.0, C, S, request)]
    for n, raw in enumerate(answer, 1):
        out.append(dgram(n * 0.001, *((C, T) if raw[:2] == ours else (T, C)), raw))
    return out


ODD_VALUES = {
    "no number, granted": _answered(b"\x00\x01f\x00octet\x00blksize\x00abc\x00", encode(OAck((("blksize", "512"),))),
                                    encode_ack(0), encode_data(1, b"x"), encode_ack(1)),
    "no number, asked twice": _answered(b"\x00\x01f\x00octet\x00blksize\x00abc\x00blksize\x00512\x00",
                                        encode(OAck((("blksize", "512"),))), encode_ack(0), encode_data(1, b"x"),
                                        encode_ack(1)),
    "non-ASCII digit, granted less": _answered("\x00\x01f\x00octet\x00blksize\x00²\x00".encode(),
                                               encode(OAck((("blksize", "4"),))), encode_ack(0),
                                               encode_data(1, b"x"), encode_ack(1)),
    "non-ASCII digit with windowsize, refused": _answered(
        "\x00\x01f\x00octet\x00blksize\x00²\x00windowsize\x004\x00".encode(), encode(Error(8, "no"))),
    "no number with windowsize, refused": _answered(b"\x00\x01f\x00octet\x00blksize\x00abc\x00windowsize\x004\x00",
                                                    encode(Error(8, "no"))),
    "5000-digit upload size": _answered(b"\x00\x02f\x00octet\x00tsize\x00" + b"9" * 5000 + b"\x00", encode_ack(0),
                                        encode_data(1, b"x"), encode_ack(1)),
    "non-ASCII upload size": _answered("\x00\x02f\x00octet\x00tsize\x00²\x00".encode(), encode_ack(0),
                                       encode_data(1, b"x"), encode_ack(1)),
}


@pytest.mark.parametrize("capture", list(ODD_VALUES.values()), ids=list(ODD_VALUES))
def test_option_values_that_are_no_number_are_judged_not_crashed_on(capture: list[Datagram]) -> None:
    """What such a request asked is read wherever an option's number is (accept_oack, the observer's
    lenient reading, findings) by options.option_number: ASCII digits, at most 12, or none."""
    events = rebuild(capture)
    analyze(events)  # every rule over every session: none may raise
    (record,) = trace_records(events)
    assert record.filename == "f" and record.negotiated is not None
    completed = isinstance(record.result, Completed)
    assert completed == (capture[1].payload[:2] != b"\x00\x05")


def _downloaded(client: Address, tid: Address, mode: bytes, t: float) -> list[Datagram]:
    """A one-block download of notes.txt in ``mode``, from ``client``."""
    return [dgram(t, client, S, b"\x00\x01notes.txt\x00" + mode + b"\x00"),
            dgram(t + 0.001, tid, client, encode_data(1, b"a\r\nb\r\n")),
            dgram(t + 0.002, client, tid, encode_ack(1))]


MODES_SENT = (_downloaded(("10.99.0.60", 40001), ("10.99.0.1", 50001), b"netascii", 0.0)
              + _downloaded(("10.99.0.61", 40002), ("10.99.0.1", 50002), b"octet", 1.0)
              + [dgram(2.0, ("10.99.0.62", 40003), S, b"\x00\x01notes.txt\x00oc\x1b[2Jtet\x00"),
                 dgram(2.001, ("10.99.0.1", 50003), ("10.99.0.62", 40003), encode(Error(4, "Unknown mode")))])


@pytest.mark.parametrize("suffix", [".pcap", ".jsonl"])
def test_a_headline_names_the_mode_where_it_is_not_octet(tmp_path: Path, suffix: str) -> None:
    """netascii converts line ends (a config file that arrives changed): trace's and watch's line for a
    transfer says so, an odd mode quoted and escaped as any string from the network; octet, nearly every
    transfer's, is left unsaid as before."""
    path = tmp_path / f"modes{suffix}"
    if suffix == ".pcap":
        with open(path, "wb") as f, PcapWriter(f) as writer:
            for d in MODES_SENT:
                writer.write(1e9 + d.time, d.src, d.dst, d.payload)
    else:
        with open(path, "w") as out:
            writer = JsonlWriter(out)
            for event in rebuild(MODES_SENT):
                writer.write(event)
    result = subprocess.run([sys.executable, "-m", "tftpdiag", "trace", str(path), "--no-tui"], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    netascii, octet, odd = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert f"RRQ {quote('notes.txt') + ' netascii':<24} download" in netascii, netascii
    assert f"RRQ {quote('notes.txt'):<24} download" in octet and "octet" not in octet, octet  # as before
    assert "RRQ 'notes.txt' 'oc\\x1b[2Jtet' download" in odd, odd
    _, records = records_of(MODES_SENT)
    assert [mode_text(r.mode) for r in records] == ["netascii", "", "'oc\\x1b[2Jtet'"]
    assert f"{quote('notes.txt') + ' netascii':<24} download" in one_line(records[0], server=True)  # watch
