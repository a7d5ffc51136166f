"""The option sweep (tftpdiag.sweep) against our server set up in various ways, and against tftpd-hpa,
atftpd and dnsmasq."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.findings_kit import our_server, udp
from tftpdiag.engine.bus import EventBus
from tftpdiag.protocol.events import TransferStarted
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy
from tftpdiag.protocol.timer import Timing
from tftpdiag.sweep import (
    DEFAULT_PROBES,
    ProbeResult,
    ProbeSpec,
    SweepReport,
    render_table,
    render_text,
    run_sweep,
)

pytestmark = pytest.mark.timeout(60)

FILE = random.Random(31).randbytes(300_000)
BIG = random.Random(32).randbytes(3 << 20)
SHORT = Timing(initial_timeout=0.1, retries=2, dally=0.05)
CALM = Timing(initial_timeout=1.0, min_timeout=0.5, retries=3, dally=0.05)  # no resend on a busy machine


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    root.chmod(0o755)
    (root / "image.bin").write_bytes(FILE)
    (root / "big.bin").write_bytes(BIG)
    for path in root.iterdir():
        path.chmod(0o644)
    return root


def names(report: SweepReport, outcome: str) -> list[str]:
    return [r.name for r in report.results if r.outcome == outcome]


def test_sweep_of_our_server(root: Path) -> None:
    seen: list[ProbeResult] = []
    started: list[tuple[str, int]] = []
    bus = EventBus()
    sub = bus.subscribe()
    with our_server(root, timing=CALM) as (_, _, port):
        report = run_sweep("127.0.0.1", port, "image.bin", bus=bus, on_result=seen.append, timing=CALM,
                           on_start=lambda spec, sid: started.append((spec.name, sid)))
    assert report.stopped is None
    assert [r.name for r in report.results] == [p.name for p in DEFAULT_PROBES]
    assert [r.name for r in seen] == [p.name for p in DEFAULT_PROBES]
    assert [name for name, _ in started] == [p.name for p in DEFAULT_PROBES]
    # The probes' events went to the bus the caller gave, one session per probe.
    assert {e.session for e in sub.drain() if isinstance(e, TransferStarted)} == {sid for _, sid in started}
    assert names(report, "completed") == [p.name for p in DEFAULT_PROBES]
    for r in report.results:
        if r.spec.mode == "octet":
            assert r.bytes == len(FILE) and r.rate_bps > 0, r.name
    assert report.supports == {"options": True, "blksize": 65464, "windowsize": 64, "tsize": True, "timeout": True,
                               "netascii": True}
    assert report.recommended == {"blksize": 65464, "windowsize": 64, "windowsize_blksize": 1468}
    assert report.fastest is not None and report.fastest.safe
    assert report.file_size == len(FILE)
    # A binary file in netascii: said, and nothing else found anywhere.
    assert [f.id for r in report.results for f in r.findings] == ["netascii-binary"]
    assert report.result("netascii").findings[0].id == "netascii-binary"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["supports"]["windowsize"] == 64 and len(data["probes"]) == len(DEFAULT_PROBES)
    assert data["probes"][2]["granted"] == {"blksize": "1468"} and data["probes"][2]["outcome"] == "completed"
    text = render_text(report)
    assert "Option sweep of image.bin" in text and "windowsize 64" in text
    assert "Supports: blksize up to 65464, windowsize up to 64, tsize yes, timeout yes, netascii yes" in text
    assert "Recommended: blksize 65464; windowsize 64 (with blksize 1468) (blocks over 1468 bytes" in text
    assert render_table(report).row_count == len(DEFAULT_PROBES)


def test_sweep_stops_each_probe_after_enough_bytes(root: Path) -> None:
    """Each probe stops at the limit, within one window of blocks: the machine checks as each block
    arrives (a check between polls let a fast probe run on for a whole poll: 2.9 MiB for 2 MiB)."""
    wanted = ["no options", "blksize 1468", "blksize 8192", "windowsize 16"]
    probes = [p for p in DEFAULT_PROBES if p.name in wanted]
    limit = 256 << 10
    with our_server(root, timing=CALM) as (_, _, port):
        report = run_sweep("127.0.0.1", port, "big.bin", probes=probes, max_bytes=limit, timing=CALM)
    assert names(report, "capped") == wanted
    for r in report.results:
        assert limit < r.bytes <= limit + r.blksize * r.windowsize, (r.name, r.bytes)
        assert "enough to measure" in r.message and r.safe
        assert r.findings == []
    assert report.fastest is not None


def test_sweep_stops_when_the_file_is_missing(root: Path) -> None:
    with our_server(root) as (_, _, port):
        report = run_sweep("127.0.0.1", port, "missing.bin")
    assert report.stopped is not None and report.stopped.startswith("file-not-found")
    assert names(report, "failed") == ["no options"]
    assert len(names(report, "skipped")) == len(DEFAULT_PROBES) - 1
    assert report.recommended is None and "Stopped early: file-not-found" in render_text(report)


def test_sweep_stops_when_nobody_answers() -> None:
    hole = udp()
    try:
        report = run_sweep("127.0.0.1", hole.getsockname()[1], "image.bin", timing=SHORT)
    finally:
        hole.close()
    assert report.stopped is not None and report.stopped.startswith("no-reply")
    assert names(report, "failed") == ["no options"]


def test_sweep_stops_when_nothing_listens() -> None:
    sock = udp()
    port = sock.getsockname()[1]
    sock.close()
    report = run_sweep("127.0.0.1", port, "image.bin", timing=SHORT)
    assert report.stopped is not None and report.stopped.startswith("port-unreachable")


def test_sweep_skips_windowsize_the_server_does_not_grant(root: Path) -> None:
    with our_server(root, policy=ServerPolicy(refuse=frozenset({"windowsize"})), timing=CALM) as (_, _, port):
        report = run_sweep("127.0.0.1", port, "image.bin", timing=CALM)
    ws = [report.result(f"windowsize {n}") for n in (4, 16, 64)]
    assert ws[0].outcome == "completed" and ws[0].granted == {"blksize": "1468"}
    assert [r.outcome for r in ws[1:]] == ["skipped", "skipped"]
    assert ws[1].message == "the server does not grant windowsize (windowsize 4)"
    assert report.supports["windowsize"] is False
    assert report.recommended == {"blksize": 65464, "windowsize": 1}


def test_sweep_on_a_path_that_drops_large_blocks(root: Path) -> None:
    with our_server(root, impair=_impair("mtu=1400")) as (_, _, port):
        report = run_sweep("127.0.0.1", port, "image.bin", timing=SHORT)
    assert report.stopped is None
    assert report.result("blksize 512").outcome == "completed"
    lost = report.result("blksize 1468")
    assert lost.outcome == "failed" and [f.id for f in lost.findings] == ["large-block-loss"]
    assert [report.result(n).outcome for n in ("blksize 8192", "blksize 65464")] == ["skipped", "skipped"]
    assert report.result("windowsize 4").outcome == "failed"
    assert [report.result(n).outcome for n in ("windowsize 16", "windowsize 64")] == ["skipped", "skipped"]
    assert report.recommended == {"blksize": 512, "windowsize": 1}
    assert report.supports["blksize"] == 1468  # granted, though the path cannot carry it


def test_sweep_can_be_cancelled(root: Path) -> None:
    cancel = threading.Event()

    def on_start(spec: ProbeSpec, session: int) -> None:
        if spec.name == "blksize 512":
            cancel.set()

    with our_server(root) as (_, _, port):
        report = run_sweep("127.0.0.1", port, "image.bin", on_start=on_start, cancel=cancel)
    assert report.stopped == "cancelled"
    assert report.results[0].outcome == "completed"
    assert report.results[1].outcome in ("failed", "completed", "capped")
    assert all(r.outcome == "skipped" for r in report.results[2:])


def _impair(spec: str):
    from tftpdiag.engine.impair import parse_impair

    return parse_impair(spec)


@pytest.mark.peers
@pytest.mark.parametrize("name", ["tftpd-hpa", "atftpd", "dnsmasq"])
def test_sweep_of_peer_servers(root: Path, name: str) -> None:
    if name == "dnsmasq":
        host = peers.free_loopback_address(69)
        server, port = peers.dnsmasq_tftp(root, host), 69
    else:
        host, port = "127.0.0.1", peers.free_udp_port()
        server = peers.tftpd_hpa(root, port) if name == "tftpd-hpa" else peers.atftpd(root, port)
    with server:
        report = run_sweep(host, port, "image.bin", timing=CALM)
    text = render_text(report)
    assert report.stopped is None, text
    assert not report.results or all(r.ok or r.outcome == "skipped" for r in report.results), text
    sup = report.supports
    assert sup["options"] is True and sup["tsize"] is True and sup["netascii"] is True, text
    # dnsmasq caps blksize (2263 here); the others grant 65464 on loopback.
    assert sup["blksize"] == (2263 if name == "dnsmasq" else 65464), text
    if name == "atftpd":
        assert sup["windowsize"] == 64 and report.recommended["windowsize"] == 64, text
    else:  # tftpd-hpa 5.2 and dnsmasq 2.90 have no windowsize: tried once, then skipped
        assert sup["windowsize"] is False and names(report, "skipped") == ["windowsize 16", "windowsize 64"], text
    assert sup["timeout"] is (name != "dnsmasq"), text  # dnsmasq ignores timeout
    assert report.recommended["blksize"] == sup["blksize"]
    octet_findings = {f.id for r in report.results if r.spec.mode == "octet" for f in r.findings}
    assert octet_findings <= {"options-ignored", "option-reduced"}, text


@pytest.mark.peers
def test_sweep_asks_again_when_an_option_is_refused(root: Path) -> None:
    """tftpd-hpa refuses tsize in netascii: the probe runs without it, and the sweep still learns that
    the server does not take tsize there."""
    port = peers.free_udp_port()
    probe = ProbeSpec("netascii tsize", RequestedOptions(tsize=True), mode="netascii", group="tsize")
    with peers.tftpd_hpa(root, port):
        report = run_sweep("127.0.0.1", port, "image.bin", timing=CALM, probes=(probe,))
    (result,) = report.results
    text = render_text(report)
    assert result.outcome == "completed" and result.requested == {"tsize": "0"}, text
    assert result.verdicts == {"tsize": "dropped"} and "refused tsize with ERROR 8" in result.message, text
    assert report.supports["tsize"] is False, text
    assert "option-refused" in {f.id for f in result.findings}
    assert "refused tsize" in text
