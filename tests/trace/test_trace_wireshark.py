"""Traces of real transfers open in Wireshark's TFTP dissector: every datagram decodes as TFTP with
the opcode and block number we recorded, nothing is malformed, and the counts match our own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.support import peers
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.events import PacketReceived, PacketSent
from tftpdiag.trace.jsonl import read_events

pytestmark = pytest.mark.peers


def tshark_rows(trace: Path, port: int) -> list[dict[str, str]]:
    fields = ["frame.number", "udp.srcport", "udp.dstport", "tftp.opcode", "tftp.block", "_ws.malformed",
              "_ws.expert.severity", "_ws.expert.message"]
    argv = [peers.require("tshark"), "-n", "-r", str(trace), "-d", f"udp.port=={port},tftp", "-T", "fields",
            "-E", "separator=\t", "-E", "occurrence=f"]
    for name in fields:
        argv += ["-e", name]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [dict(zip(fields, line.split("\t"), strict=False)) for line in result.stdout.splitlines() if line.strip()]


def probe(port: int, name: str, trace: Path, *extra: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "tftpdiag", "probe", "127.0.0.1", name, "--port", str(port),
                             "--json", "--trace", str(trace), *extra],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def our_packets(jsonl: Path) -> list[tuple[int, int | None]]:
    """(opcode, block) of every datagram our client recorded, in order."""
    with open(jsonl) as f:
        events = [e for e in read_events(f) if isinstance(e, (PacketSent, PacketReceived))]
    return [(int(e.packet.opcode), getattr(e.packet, "block", None)) for e in events if e.packet is not None]


@pytest.fixture
def served(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "image.bin").write_bytes(os.urandom(400_000))
    (root / "exact.bin").write_bytes(os.urandom(1468 * 20))
    return root


@pytest.mark.parametrize("name, extra", [
    ("image.bin", []),
    ("image.bin", ["--windowsize", "16"]),
    ("exact.bin", ["--no-options"]),
    ("missing.bin", []),
])
def test_trace_of_our_pair_decodes_packet_for_packet(served: Path, tmp_path: Path, name: str,
                                                      extra: list[str]) -> None:
    pcap, jsonl = tmp_path / "t.pcap", tmp_path / "t.jsonl"
    with TftpServer(ServerConfig(root=served, bind=("127.0.0.1",), port=0), EventBus()) as server:
        port = server.addresses[0][1]
        for trace in (pcap, jsonl):
            if name == "missing.bin":
                subprocess.run([sys.executable, "-m", "tftpdiag", "probe", "127.0.0.1", name, "--port", str(port),
                                "--json", "--trace", str(trace)], capture_output=True, timeout=60)
            else:
                probe(port, name, trace, *extra)
    rows = tshark_rows(pcap, port)
    ours = our_packets(jsonl)
    assert rows and all(row["tftp.opcode"] for row in rows), "a datagram did not decode as TFTP"
    assert not any(row["_ws.malformed"] for row in rows)
    flagged = [row for row in rows if row["_ws.expert.severity"]]
    assert name == "missing.bin" or not flagged, flagged[:5]  # which packets Wireshark flagged, if any
    theirs = [(int(row["tftp.opcode"]), int(row["tftp.block"]) if row["tftp.block"] else None) for row in rows]
    # Both runs made the same exchange, so Wireshark's view of the pcap run and ours of the jsonl run
    # must agree on every opcode and block number.
    assert theirs == ours
    assert Counter(op for op, _ in theirs) == Counter(op for op, _ in ours)


def test_trace_of_a_download_from_tftpd_hpa(tmp_path: Path, served: Path) -> None:
    port = peers.free_udp_port()
    pcap = tmp_path / "hpa.pcap"
    with peers.tftpd_hpa(served, port):
        summary = probe(port, "image.bin", pcap)
    rows = tshark_rows(pcap, port)
    data = [r for r in rows if r["tftp.opcode"] == "3"]
    acks = [r for r in rows if r["tftp.opcode"] == "4"]
    blocks = -(-400_000 // 1468) + (1 if 400_000 % 1468 == 0 else 0)
    assert len(data) == blocks and len(acks) == blocks + 1  # ACK 0 answers the OACK
    assert [int(r["tftp.block"]) for r in data] == list(range(1, blocks + 1))
    assert summary["packets"]["received"] == len(data) + 1 and summary["packets"]["sent"] == len(acks) + 1
    assert not any(r["_ws.malformed"] for r in rows)
