"""The devices of a trace that has ended: nothing more will come, so a device is judged by what it did
(booted, stuck), and is in progress only if the capture cut one of its transfers."""

from __future__ import annotations

import io
from pathlib import Path

from tftpdiag.fmt import SHOWN, clean, file_name
from tftpdiag.protocol.events import Address
from tftpdiag.protocol.packets import Error, Opcode, Request, encode, encode_ack, encode_data
from tftpdiag.trace.load import load_trace
from tftpdiag.trace.pcap import PcapWriter
from tftpdiag.trace.summary import print_trace, trace_json

C: Address = ("192.0.2.10", 40123)
S: Address = ("192.0.2.1", 69)
T0 = 1.7e9


def rrq(name: str) -> bytes:
    return encode(Request(Opcode.RRQ, name, "octet", ()))


def download(t: float, name: str, port: int, blocks: int, last: int) -> list[tuple[float, Address, Address, bytes]]:
    """A download of ``blocks`` full blocks and a final one of ``last`` bytes (None: cut before it)."""
    client, tid = (C[0], port), (S[0], port + 10000)
    out = [(t, client, S, rrq(name))]
    for n in range(1, blocks + 2):
        size = 512 if n <= blocks else last
        if size < 0:
            break
        t += 0.001
        out += [(t, tid, client, encode_data(n, b"x" * size)), (t + 0.0005, client, tid, encode_ack(n))]
    return out


def missing(t: float, name: str, port: int) -> list[tuple[float, Address, Address, bytes]]:
    client, tid = (C[0], port), (S[0], port + 10000)
    return [(t, client, S, rrq(name)), (t + 0.001, tid, client, encode(Error(1, "file not found")))]


def refused(t: float, name: str, port: int, code: int, message: str) -> list[tuple[float, Address, Address, bytes]]:
    client, tid = (C[0], port), (S[0], port + 10000)
    return [(t, client, S, rrq(name)), (t + 0.001, tid, client, encode(Error(code, message)))]


def write_pcap(tmp_path: Path, datagrams: list[tuple[float, Address, Address, bytes]]) -> Path:
    path = tmp_path / "boot.pcap"
    with PcapWriter(path) as writer:
        for t, src, dst, raw in datagrams:
            writer.write(T0 + t, src, dst, raw)
    return path


def devices(tmp_path: Path, datagrams: list[tuple[float, Address, Address, bytes]]) -> list[dict]:
    return trace_json(load_trace(write_pcap(tmp_path, datagrams)))["devices"]


def test_a_device_whose_last_request_failed_is_not_in_progress(tmp_path: Path) -> None:
    (device,) = devices(tmp_path, download(0.0, "boot.cfg", 40001, 1, 100) + missing(0.5, "image.bin", 40002))
    assert device["verdict"] == "stuck", device
    (stuck,) = [f for f in device["findings"] if f["id"] == "device-stuck"]
    assert "stopped after 'image.bin' was not found" in stuck["summary"], stuck["summary"]
    assert "before the record ended" in stuck["summary"], stuck["summary"]


def test_a_device_whose_last_transfer_the_capture_cut_is_in_progress(tmp_path: Path) -> None:
    cut = download(0.5, "image.bin", 40002, 3, -1)  # three full blocks, then the capture ends
    (device,) = devices(tmp_path, download(0.0, "boot.cfg", 40001, 1, 100) + cut)
    assert device["verdict"] == "in-progress", device
    assert not [f for f in device["findings"] if f["severity"] != "info"], device["findings"]


def test_a_device_that_got_its_files_booted(tmp_path: Path) -> None:
    (device,) = devices(tmp_path, missing(0.0, "per-mac.cfg", 40001) + download(0.5, "boot.cfg", 40002, 1, 100)
                        + download(1.0, "image.bin", 40003, 4, 7))
    assert device["verdict"] == "booted", device


def test_a_device_that_ended_its_own_transfer_is_not_said_to_want_the_file(tmp_path: Path) -> None:
    """The client's ERROR 0 after two blocks (its user cancelled): it stopped the transfer itself."""
    client, tid = (C[0], 40002), (S[0], 50002)
    cancelled = [(0.5, client, S, rrq("image.bin")),
                 (0.501, tid, client, encode_data(1, b"x" * 512)), (0.5015, client, tid, encode_ack(1)),
                 (0.502, tid, client, encode_data(2, b"x" * 512)),
                 (0.5025, client, tid, encode(Error(0, "user abort")))]
    (device,) = devices(tmp_path, download(0.0, "boot.cfg", 40001, 1, 100) + cancelled)
    assert [f["outcome"] for f in device["files"]] == ["done", "ended-by-client"], device["files"]
    (stuck,) = [f for f in device["findings"] if f["id"] == "device-stuck"]
    assert "stopped after it ended the transfer of 'image.bin' itself (user abort)" in stuck["summary"], stuck
    assert "without the file" not in stuck["suggestion"] and "itself" in stuck["suggestion"], stuck["suggestion"]


def findings_of(device: dict, finding_id: str) -> list[dict]:
    return [f for f in device["findings"] if f["id"] == finding_id]


def test_a_device_that_went_on_after_a_refusal_booted_and_the_refusal_is_named(tmp_path: Path) -> None:
    """Its first request refused (a name longer than the server takes), then two files fetched, then
    nothing: it did without that file, so it booted, and a warning (shown in plain output too) names
    the file, what the server said and that the device went on."""
    name = "pxelinux.cfg/" + "a" * 240
    datagrams = (refused(0.0, name, 40001, 0, "File name too long") + download(0.5, "boot.cfg", 40002, 1, 100)
                 + download(1.0, "image.bin", 40003, 4, 7))
    (device,) = devices(tmp_path, datagrams)
    assert [f["outcome"] for f in device["files"]] == ["refused", "done", "done"], device["files"]
    assert device["verdict"] == "booted", device
    assert not findings_of(device, "device-stuck"), device["findings"]
    (went_on,) = findings_of(device, "device-went-on-without")
    assert went_on["severity"] == "warning", went_on
    assert (f"went on to other files after {file_name(name)} was refused (File name too long)"
            in went_on["summary"]), went_on["summary"]
    assert not any(file_name(name) in e for f in findings_of(device, "device-normal-failures")
                   for e in f["evidence"]), device["findings"]
    out = io.StringIO()
    print_trace(load_trace(tmp_path / "boot.pcap"), out)
    (line,) = [text for text in out.getvalue().splitlines() if text.startswith("device ")]
    assert " booted " in line and "✘ refused" in line, line
    assert "went on to other files after" in out.getvalue(), out.getvalue()


def test_a_device_refused_again_at_its_last_request_is_still_stuck(tmp_path: Path) -> None:
    """Refused, a file fetched, then refused again and nothing more: its last activity is a failure it
    never got past."""
    name = "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"
    datagrams = (refused(0.0, name, 40001, 2, "Access violation") + download(0.5, "boot.cfg", 40002, 1, 100)
                 + refused(1.0, name, 40003, 2, "Access violation"))
    (device,) = devices(tmp_path, datagrams)
    assert device["verdict"] == "stuck", device
    (stuck,) = findings_of(device, "device-stuck")
    assert f"stopped after {file_name(name)} was refused (Access violation)" in stuck["summary"], stuck["summary"]
    assert not findings_of(device, "device-went-on-without"), device["findings"]


def test_a_device_that_went_on_after_a_failed_transfer_booted(tmp_path: Path) -> None:
    """A download that stopped after two blocks (the capture goes on for seconds without it), then
    another file fetched whole: the device did without the first."""
    datagrams = download(0.0, "image.bin", 40001, 2, -1) + download(5.0, "recovery.bin", 40002, 4, 7)
    (device,) = devices(tmp_path, datagrams)
    assert [f["outcome"] for f in device["files"]] == ["failed", "done"], device["files"]
    assert device["verdict"] == "booted", device
    assert not findings_of(device, "device-stuck"), device["findings"]
    (went_on,) = findings_of(device, "device-went-on-without")
    assert "went on to other files after 'image.bin' failed (the transfer stopped after" in went_on["summary"], \
        went_on["summary"]


def test_a_device_that_went_on_after_ending_a_transfer_itself_booted(tmp_path: Path) -> None:
    client, tid = (C[0], 40001), (S[0], 50001)
    cancelled = [(0.0, client, S, rrq("update.bin")),
                 (0.001, tid, client, encode_data(1, b"x" * 512)),
                 (0.0015, client, tid, encode(Error(0, "user abort")))]
    (device,) = devices(tmp_path, cancelled + download(0.5, "image.bin", 40002, 4, 7))
    assert [f["outcome"] for f in device["files"]] == ["ended-by-client", "done"], device["files"]
    assert device["verdict"] == "booted", device
    (went_on,) = findings_of(device, "device-went-on-without")
    assert "after it ended the transfer of 'update.bin' itself (user abort)" in went_on["summary"], went_on


def test_a_devices_error_message_is_shown_bounded(tmp_path: Path) -> None:
    """The client's ERROR message (its to choose, up to ~64 KiB) as the rest of the tool shows it: cut at
    fmt.SHOWN with the rest counted, odd characters escaped."""
    client, tid = (C[0], 40002), (S[0], 50002)
    message = "abort \x1b[2J" + "y" * 60_000
    cancelled = [(0.5, client, S, rrq("image.bin")),
                 (0.501, tid, client, encode_data(1, b"x" * 512)),
                 (0.5025, client, tid, encode(Error(0, message)))]
    (device,) = devices(tmp_path, download(0.0, "boot.cfg", 40001, 1, 100) + cancelled)
    (stuck,) = [f for f in device["findings"] if f["id"] == "device-stuck"]
    assert f"itself ({clean(message)})" in stuck["summary"], stuck["summary"]
    assert len(stuck["summary"]) < SHOWN + 200


def test_a_malformed_oack_the_client_refused_is_the_servers_answer(tmp_path: Path) -> None:
    """The server answered the RRQ from its transfer port with an OACK no client can decode (an option name
    that is not ASCII); the client refused it with ERROR 8. As the live probe says it: the server answered,
    the transfer failed by the client's ERROR (not for want of a reply), the server broke the protocol (in a
    capture's words), and the device ended that transfer itself."""
    client, tid = (C[0], 40001), (S[0], 50001)
    message = "OACK: option name is not ASCII: b'x\\xffy' \x1b[2J" + "z" * 5_000
    request = encode(Request(Opcode.RRQ, "badoptname", "octet", (("blksize", "1468"), ("tsize", "0"))))
    datagrams = [(0.0, client, S, request),
                 (0.001, tid, client, b"\x00\x06tsize\x003\x00x\xffy\x001\x00"),
                 (0.0015, client, tid, encode(Error(8, message)))]
    report = trace_json(load_trace(write_pcap(tmp_path, datagrams)))
    (transfer,) = report["transfers"]
    assert transfer["replied_from"] == {"address": tid[0], "port": tid[1]}, transfer
    assert transfer["error"] == {"code": 8, "message": message, "raised_by": "local", "sent_by": "client",
                                 "reason": "protocol"}, transfer["error"]
    assert [f["id"] for f in transfer["findings"]] == ["protocol-breach"], transfer["findings"]
    (breach,) = transfer["findings"]
    assert "OACK: option name is not ASCII" in breach["summary"], breach
    assert "tftpdiag" not in breach["summary"] + breach["suggestion"], breach
    (device,) = report["devices"]
    assert [f["outcome"] for f in device["files"]] == ["ended-by-client"], device["files"]
    (stuck,) = findings_of(device, "device-stuck")
    assert "stopped after it ended the transfer of 'badoptname' itself" in stuck["summary"], stuck["summary"]
    out = io.StringIO()
    print_trace(load_trace(tmp_path / "boot.pcap"), out)
    text = out.getvalue()
    assert "no reply" not in text and "no-reply" not in text, text
    (line,) = [t for t in text.splitlines() if t.startswith("#1 ")]
    assert f"failed: the client {client[0]}:{client[1]} sent ERROR 8 (option negotiation refused): " in line, line
    assert "\x1b" not in text and "(+" in line and len(line) < SHOWN + 300, line  # escaped, bounded
