"""Our client (tftpdiag.engine.client) against real TFTP servers on loopback.

Servers: tftpd-hpa, atftpd, dnsmasq (port 69 on its own 127.0.0.x) and tftpy's server, each started
once for this module, serving the same folder. Every transfer is checked byte for byte (SHA-256 and
the file written) and for what our side reports: the options negotiated, each option's verdict, the
block count, the address that answered. Peer quirks (tests/PEERS.md) are expected, not excused:

- tftpy OACKs ``blksize=512`` whenever a request carries options but no blksize; RFC 2347 forbids an
  OACK option the client did not ask for, and our client refuses it with ERROR 8.
- tftpy answers a WRQ's ``tsize=N`` with ``tsize=0``; it stores netascii uploads as they travel.
- dnsmasq's netascii sends a lone CR as is (no CR NUL) and LF as CR LF even after a CR.
- atftpd needs the OACK to fit in one block: blksize 8 with windowsize draws ERROR 8.
- tftpd-hpa refuses ``tsize`` in netascii with ERROR 8; it ignores windowsize.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.interop import (
    EventLog,
    files_named,
    netascii_decode,
    netascii_dnsmasq,
    netascii_rfc,
    netascii_text,
    random_bytes,
    sha256,
    wire_data,
)
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientOutcome, ClientRequest, ClientTransfer
from tftpdiag.protocol.events import Completed, Failed, PacketReceived, PeerLocked, Reason, RequestRetried, Side
from tftpdiag.protocol.options import RequestedOptions, Verdict
from tftpdiag.protocol.packets import Data
from tftpdiag.protocol.timer import Timing

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

OK_TIMING = Timing(initial_timeout=0.5, retries=4, dally=0.05)
FAIL_TIMING = Timing(initial_timeout=0.3, retries=2, dally=0.1)
DEADLINE = 30.0

FILES: dict[str, bytes] = {
    "small.bin": random_bytes(100_000, 1),  # neither a multiple of 512 nor of 1468
    "empty.bin": b"",
    "exact512.bin": random_bytes(512 * 64, 2),
    "exact1468.bin": random_bytes(1468 * 16, 3),
    "text.txt": netascii_text(),
    "roll.bin": random_bytes(8 * 65_600 + 3, 4),  # 65,601 blocks of 8 bytes
}
NO_OPTIONS = RequestedOptions()
BIG_NAME, BIG_SIZE = (
    "big.bin",
    512 * 65_600 + 100,
)  # ~33.6 MB: 65,601 blocks of 512 (atftpd, windowed)
UPLOAD = random_bytes(70_000 + 511, 5)


def identity(data: bytes) -> bytes:
    return data


@dataclass(frozen=True)
class Peer:
    name: str
    host: str
    port: int
    root: Path
    proc: peers.ServerProc
    windowsize: bool  # does it grant RFC 7440 windowsize?
    uploads: bool
    netascii: Callable[[bytes], bytes]  # what it sends for a file's bytes in netascii mode
    adds_blksize: bool  # OACKs blksize=512 for any request with options but no blksize (tftpy)


SERVERS = ["tftpd-hpa", "atftpd", "dnsmasq", "tftpy"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("served")
    root.chmod(0o755)
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    with (root / BIG_NAME).open("wb") as f:
        chunk = random_bytes(1 << 20, 6)
        left = BIG_SIZE
        while left:
            left -= f.write(chunk[: min(left, len(chunk))])
    for path in root.iterdir():
        path.chmod(0o644)  # tftpd-hpa serves only world-readable files
    yield root
    (root / BIG_NAME).unlink()  # pytest keeps the last runs' tmp dirs: do not keep 33 MB in each


@contextmanager
def _start(name: str, root: Path, host: str) -> Iterator[Peer]:
    if name == "tftpd-hpa":
        port = peers.free_udp_port(host)
        with peers.tftpd_hpa(root, port, "-c", host=host) as proc:
            yield Peer(name, host, port, root, proc, False, True, netascii_rfc, False)
    elif name == "atftpd":
        port = peers.free_udp_port(host)
        with peers.atftpd(root, port, host=host) as proc:
            yield Peer(name, host, port, root, proc, True, True, netascii_rfc, False)
    elif name == "dnsmasq":
        if host == "127.0.0.1":
            host = peers.free_loopback_address(69)
        elif not peers.port_free(host, 69):
            pytest.skip(f"UDP port 69 on {host} is taken: dnsmasq cannot serve there")
        with peers.dnsmasq_tftp(root, host) as proc:
            yield Peer(name, host, 69, root, proc, False, False, netascii_dnsmasq, False)
    elif name == "tftpy":
        port = peers.free_udp_port(host)
        with peers.tftpy_server(root, port, host=host) as proc:
            yield Peer(name, host, port, root, proc, False, True, identity, True)
    else:  # pragma: no cover
        raise ValueError(name)


@pytest.fixture(scope="module", params=SERVERS)
def peer(request: pytest.FixtureRequest, served: Path) -> Iterator[Peer]:
    with _start(request.param, served, "127.0.0.1") as peer:
        yield peer


needs_ipv6 = pytest.mark.skipif(not peers.has_ipv6_loopback(), reason="no IPv6 loopback here")


@pytest.fixture(scope="module", params=["tftpd-hpa", "dnsmasq"])
def peer6(request: pytest.FixtureRequest, served: Path) -> Iterator[Peer]:
    """The servers that serve IPv6 (atftpd and tftpy are IPv4 only)."""
    if not peers.has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    with _start(request.param, served, "::1") as peer:
        yield peer


# ----------------------------------------------------------------------- helpers


def fetch(
    peer: Peer, name: str, out_dir: Path | None, options: RequestedOptions = NO_OPTIONS,
    mode: str = "octet", timing: Timing = OK_TIMING, bus: EventBus | None = None,
) -> ClientOutcome:  # fmt: skip
    output = out_dir / name if out_dir is not None else None
    request = ClientRequest(peer.host, name, port=peer.port, mode=mode, options=options, timing=timing,
                            output=output, deadline=DEADLINE)  # fmt: skip
    return ClientTransfer(request, bus).run()


def send(
    peer: Peer, source: Path, remote: str, options: RequestedOptions = NO_OPTIONS,
    mode: str = "octet", timing: Timing = OK_TIMING,
) -> ClientOutcome:  # fmt: skip
    request = ClientRequest(peer.host, remote, port=peer.port, upload=True, source=source, mode=mode,
                            options=options, timing=timing, deadline=DEADLINE)  # fmt: skip
    return ClientTransfer(request).run()


def describe(outcome: ClientOutcome) -> str:
    return f"{outcome.result!r}\nnegotiated: {outcome.negotiated!r}"


def expect_completed(outcome: ClientOutcome, data: bytes, blksize: int, peer: Peer) -> Completed:
    assert outcome.ok, describe(outcome)
    result = outcome.result
    assert isinstance(result, Completed)
    assert outcome.sha256 == sha256(data)
    assert result.stats.bytes == len(data)
    assert result.stats.blocks == len(data) // blksize + 1, "a file that fills its last block ends with an empty one"
    assert outcome.negotiated.blksize == blksize
    # RFC 1350: the server answers from a new port (its transfer ID), on the address we asked.
    assert outcome.server == (peer.host, peer.port)
    assert outcome.peer is not None and outcome.peer[0] == peer.host and outcome.peer[1] != peer.port
    return result


def expect_verdicts(outcome: ClientOutcome, **verdicts: Verdict) -> None:
    got = {o.name: o.verdict for o in outcome.negotiated.outcomes}
    assert got == verdicts, describe(outcome)


def expect_unasked_blksize_refused(outcome: ClientOutcome) -> None:
    """tftpy's OACK held blksize=512 though we did not ask: we end it with ERROR 8 (RFC 2347)."""
    result = outcome.result
    assert isinstance(result, Failed), describe(outcome)
    assert (result.reason, result.raised_by, result.code) == (
        Reason.PROTOCOL,
        Side.LOCAL,
        8,
    )
    assert "blksize" in result.message
    assert outcome.negotiated.oack is not None and ("blksize", "512") in outcome.negotiated.oack
    assert all(o.verdict is Verdict.REFUSED for o in outcome.negotiated.outcomes)
    assert outcome.output is None


def no_leftovers(directory: Path) -> None:
    assert files_named(directory, ".part") == [], "a temporary download file was left behind"


# ----------------------------------------------------------------------- downloads

DOWNLOADS: dict[str, tuple[str, RequestedOptions]] = {
    "default": ("small.bin", RequestedOptions()),
    "blksize1468": ("small.bin", RequestedOptions(blksize=1468)),
    "tsize": ("small.bin", RequestedOptions(tsize=True)),
    "blksize1468-tsize": ("small.bin", RequestedOptions(blksize=1468, tsize=True)),
    "empty": ("empty.bin", RequestedOptions()),
    "empty-blksize1468-tsize": (
        "empty.bin",
        RequestedOptions(blksize=1468, tsize=True),
    ),
    "exact512": ("exact512.bin", RequestedOptions()),
    "exact512-tsize": ("exact512.bin", RequestedOptions(tsize=True)),
    "exact1468": ("exact1468.bin", RequestedOptions(blksize=1468)),
}


@pytest.mark.parametrize("case", DOWNLOADS)
def test_download(peer: Peer, case: str, tmp_path: Path) -> None:
    name, options = DOWNLOADS[case]
    data = FILES[name]
    outcome = fetch(peer, name, tmp_path, options)
    no_leftovers(tmp_path)
    if peer.adds_blksize and options.blksize is None and options.to_wire():
        expect_unasked_blksize_refused(outcome)
        assert not (tmp_path / name).exists()
        return
    blksize = options.blksize or 512
    expect_completed(outcome, data, blksize, peer)
    assert outcome.output == tmp_path / name and (tmp_path / name).read_bytes() == data
    if not options.to_wire():
        assert outcome.negotiated.oack is None and outcome.negotiated.outcomes == ()
        return
    expected = {}
    if options.blksize:
        expected["blksize"] = Verdict.ACCEPTED
    if options.tsize:
        expected["tsize"] = Verdict.ACCEPTED
        assert outcome.negotiated.tsize == len(data)
    expect_verdicts(outcome, **expected)


WINDOWED: dict[str, RequestedOptions] = {
    "windowsize16-blksize1468": RequestedOptions(blksize=1468, windowsize=16),
    "windowsize16": RequestedOptions(windowsize=16),
}


@pytest.mark.parametrize("case", WINDOWED)
def test_download_windowsize(peer: Peer, case: str, tmp_path: Path) -> None:
    """RFC 7440 where the server grants it (atftpd); elsewhere the verdict is 'ignored' and the
    transfer runs lock-step: one ACK per block."""
    options = WINDOWED[case]
    data = FILES["small.bin"]
    outcome = fetch(peer, "small.bin", tmp_path, options)
    if peer.adds_blksize and options.blksize is None:
        expect_unasked_blksize_refused(outcome)
        return
    blksize = options.blksize or 512
    result = expect_completed(outcome, data, blksize, peer)
    blocks = result.stats.blocks
    expected = {"windowsize": Verdict.ACCEPTED if peer.windowsize else Verdict.IGNORED}
    if options.blksize:
        expected["blksize"] = Verdict.ACCEPTED
    expect_verdicts(outcome, **expected)
    if peer.windowsize:
        assert outcome.negotiated.windowsize == 16
        # one ACK per window of 16 blocks (+ ACK 0 for the OACK, + slack for a window gap)
        assert result.stats.packets_sent <= -(-blocks // 16) + 3, result.stats
    else:
        assert outcome.negotiated.windowsize == 1
        if options.blksize is None:
            assert outcome.negotiated.oack is None, "windowsize was the only option: no OACK at all"
        assert result.stats.packets_sent >= blocks, f"lock-step sends an ACK per block: {result.stats}"


ROLLOVER: dict[str, tuple[str, RequestedOptions]] = {
    "tftpd-hpa": ("roll.bin", RequestedOptions(blksize=8)),
    "dnsmasq": ("roll.bin", RequestedOptions(blksize=8)),
    "tftpy": ("roll.bin", RequestedOptions(blksize=8)),
    # atftpd refuses blksize 8 with windowsize (its OACK must fit in a block); its windowed
    # transfer is fast enough for the 33.6 MB file at blksize 512.
    "atftpd": (BIG_NAME, RequestedOptions(windowsize=16)),
}


@pytest.mark.timeout(90)
def test_download_block_number_rollover(peer: Peer, tmp_path: Path) -> None:
    """More than 65,535 blocks: the 16-bit block number wraps (to 0 with all four servers)."""
    name, options = ROLLOVER[peer.name]
    expected = FILES[name] if name in FILES else (peer.root / name).read_bytes()
    bus = EventBus()
    log = EventLog(bus)
    outcome = fetch(peer, name, None, options, bus=bus)  # hash only
    blksize = options.blksize or 512
    result = expect_completed(outcome, expected, blksize, peer)
    assert result.stats.blocks > 65_535
    wire_blocks = [e.packet.block for e in log.of(PacketReceived) if isinstance(e.packet, Data) and not e.note]
    wrap = wire_blocks.index(65_535)
    assert wire_blocks[wrap + 1] == 0, f"block after 65535 was {wire_blocks[wrap + 1]}"
    assert len(wire_blocks) == result.stats.blocks
    log.close()


@pytest.mark.parametrize("blksize", [None, 8], ids=["blksize512", "blksize8"])
def test_download_netascii(peer: Peer, blksize: int | None, tmp_path: Path) -> None:
    """Each server's netascii as it really is on the wire, and our decoding of it.

    tftpd-hpa and atftpd are RFC 764, so the file comes back exact; dnsmasq and tftpy are not, and
    we decode what they sent as RFC 764 says (blksize 8 puts CRs on block boundaries)."""
    text = FILES["text.txt"]
    bus = EventBus()
    log = EventLog(bus)
    outcome = fetch(
        peer,
        "text.txt",
        tmp_path,
        RequestedOptions(blksize=blksize),
        mode="netascii",
        bus=bus,
    )
    assert outcome.ok, describe(outcome)
    wire = wire_data(log)
    assert wire == peer.netascii(text), f"{peer.name} put something else on the wire than PEERS.md says"
    got = (tmp_path / "text.txt").read_bytes()
    assert got == netascii_decode(wire)
    assert outcome.sha256 == sha256(got), "the hash is of the file as kept, after decoding"
    if peer.netascii is netascii_rfc:
        assert got == text
    log.close()


def test_netascii_tsize(peer: Peer, tmp_path: Path) -> None:
    """tsize in netascii, where each server does something else: tftpd-hpa refuses the request with
    ERROR 8 (we ask again without options, as real clients fall back), dnsmasq leaves tsize out of its
    OACK, atftpd announces tsize=0 and then sends the file."""
    text = FILES["text.txt"]
    bus = EventBus()
    log = EventLog(bus)
    outcome = fetch(
        peer,
        "text.txt",
        tmp_path,
        RequestedOptions(tsize=True),
        mode="netascii",
        timing=FAIL_TIMING,
        bus=bus,
    )
    no_leftovers(tmp_path)
    retried = log.of(RequestRetried)
    if peer.name == "tftpd-hpa":
        assert outcome.ok, describe(outcome)
        expect_verdicts(outcome, tsize=Verdict.DROPPED)
        assert [(r.code, r.asked, r.requested) for r in retried] == [(8, (("tsize", "0"),), ())]
        # Two requests, each answered from a port of its own: the second transfer ID is the one locked.
        locked = log.of(PeerLocked)
        assert len(locked) == 2 and locked[0].peer != locked[1].peer == outcome.peer
        assert (tmp_path / "text.txt").read_bytes() == netascii_decode(peer.netascii(text))
        return
    assert retried == [], "only a refusal makes the client ask again"
    if peer.adds_blksize:
        expect_unasked_blksize_refused(outcome)
        return
    assert outcome.ok, describe(outcome)
    assert (tmp_path / "text.txt").read_bytes() == netascii_decode(peer.netascii(text))
    if peer.name == "dnsmasq":
        expect_verdicts(outcome, tsize=Verdict.IGNORED)
        assert outcome.negotiated.oack is None
    else:  # atftpd
        expect_verdicts(outcome, tsize=Verdict.ACCEPTED)
        assert outcome.negotiated.tsize == 0


def test_missing_file(peer: Peer, tmp_path: Path) -> None:
    outcome = fetch(peer, "no-such-file.bin", tmp_path, timing=FAIL_TIMING)
    result = outcome.result
    assert isinstance(result, Failed), describe(outcome)
    assert (result.reason, result.raised_by, result.code) == (
        Reason.PEER_ERROR,
        Side.PEER,
        1,
    )
    assert outcome.output is None and os.listdir(tmp_path) == [], "nothing is written for a failed download"


def test_atftpd_oack_too_big_for_block(served: Path, tmp_path: Path) -> None:
    """blksize 8 + windowsize: atftpd cannot fit its OACK in 8 bytes and answers ERROR 8; we ask again
    without options and get the file in 512-byte blocks."""
    with _start("atftpd", served, "127.0.0.1") as peer:
        outcome = fetch(
            peer,
            "small.bin",
            tmp_path,
            RequestedOptions(blksize=8, windowsize=16),
            timing=FAIL_TIMING,
        )
        expect_completed(outcome, FILES["small.bin"], 512, peer)
        expect_verdicts(outcome, blksize=Verdict.DROPPED, windowsize=Verdict.DROPPED)
        assert "require roughly a blksize" in peer.proc.log()


# ----------------------------------------------------------------------- uploads

UPLOADS: dict[str, tuple[bytes, RequestedOptions, str]] = {
    "default": (UPLOAD, RequestedOptions(), "octet"),
    "blksize1468-tsize": (UPLOAD, RequestedOptions(blksize=1468, tsize=True), "octet"),
    "windowsize8": (UPLOAD, RequestedOptions(windowsize=8), "octet"),
    "empty": (b"", RequestedOptions(), "octet"),
    "exact512": (FILES["exact512.bin"], RequestedOptions(), "octet"),
    "netascii": (FILES["text.txt"], RequestedOptions(), "netascii"),
}


@pytest.mark.parametrize("peer", ["dnsmasq"], indirect=True, scope="module")
def test_upload_refused_by_dnsmasq(peer: Peer, tmp_path: Path) -> None:
    """dnsmasq is read-only: a WRQ draws ERROR 4. (The other servers take uploads: next test.)"""
    source = tmp_path / "source"
    source.write_bytes(UPLOAD)
    outcome = send(peer, source, "refused.bin", timing=FAIL_TIMING)
    result = outcome.result
    assert isinstance(result, Failed), describe(outcome)
    assert (result.reason, result.raised_by, result.code) == (
        Reason.PEER_ERROR,
        Side.PEER,
        4,
    )
    assert not (peer.root / "refused.bin").exists()


@pytest.mark.parametrize("peer", [s for s in SERVERS if s != "dnsmasq"], indirect=True, scope="module")
@pytest.mark.parametrize("case", UPLOADS)
def test_upload(peer: Peer, case: str, tmp_path: Path) -> None:
    data, options, mode = UPLOADS[case]
    source = tmp_path / "source"
    source.write_bytes(data)
    remote = f"up-{peer.name}-{case}.bin"
    target = peer.root / remote
    outcome = send(peer, source, remote, options, mode)
    if peer.adds_blksize and options.blksize is None and options.to_wire():
        expect_unasked_blksize_refused(outcome)
        return
    assert outcome.ok, describe(outcome)
    assert outcome.sha256 == sha256(data), "the hash is of the file as read"
    stored = data
    if mode == "netascii" and peer.netascii is identity:
        stored = netascii_rfc(data)  # tftpy has no netascii: it keeps the bytes as they travelled
    peers.wait_for_content(target, stored)
    result = outcome.result
    assert isinstance(result, Completed)
    wire_size = len(netascii_rfc(data)) if mode == "netascii" else len(data)
    assert result.stats.bytes in (wire_size, len(data))
    blksize = options.blksize or 512
    assert result.stats.blocks == wire_size // blksize + 1
    expected: dict[str, Verdict] = {}
    if options.blksize:
        expected["blksize"] = Verdict.ACCEPTED
    if options.tsize:
        expected["tsize"] = Verdict.ACCEPTED
        # tftpy answers a WRQ's tsize with 0 instead of echoing the size (RFC 2349 says echo it)
        assert outcome.negotiated.tsize == (0 if peer.name == "tftpy" else len(data))
    if options.windowsize:
        expected["windowsize"] = Verdict.ACCEPTED if peer.windowsize else Verdict.IGNORED
        assert outcome.negotiated.windowsize == (8 if peer.windowsize else 1)
    expect_verdicts(outcome, **expected)


# ----------------------------------------------------------------------- IPv6


@needs_ipv6
def test_ipv6_download(peer6: Peer, tmp_path: Path) -> None:
    data = FILES["small.bin"]
    request = ClientRequest("::1", "small.bin", port=peer6.port, family=socket.AF_INET6, timing=OK_TIMING,
                            options=RequestedOptions(blksize=1468, tsize=True), output=tmp_path / "out",
                            deadline=DEADLINE)  # fmt: skip
    outcome = ClientTransfer(request).run()
    expect_completed(outcome, data, 1468, peer6)
    assert (tmp_path / "out").read_bytes() == data
    assert outcome.local[0] == "::1"
    expect_verdicts(outcome, blksize=Verdict.ACCEPTED, tsize=Verdict.ACCEPTED)


@needs_ipv6
def test_ipv6_missing_file(peer6: Peer, tmp_path: Path) -> None:
    outcome = fetch(peer6, "no-such-file.bin", tmp_path, timing=FAIL_TIMING)
    assert isinstance(outcome.result, Failed) and outcome.result.code == 1, describe(outcome)


@needs_ipv6
def test_ipv6_upload(peer6: Peer, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(UPLOAD)
    remote = f"up6-{peer6.name}.bin"
    outcome = send(
        peer6,
        source,
        remote,
        RequestedOptions(blksize=1468, tsize=True),
        timing=FAIL_TIMING,
    )
    if not peer6.uploads:
        assert isinstance(outcome.result, Failed) and outcome.result.code == 4, describe(outcome)
        return
    assert outcome.ok, describe(outcome)
    peers.wait_for_content(peer6.root / remote, UPLOAD)
