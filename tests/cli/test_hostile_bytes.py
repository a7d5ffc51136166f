"""Hostile bytes: what a peer or a trace file says cannot drive the terminal of the person reading.

A hostile server answers `probe` with an ERROR message and OACK option names full of escape
sequences, BEL, CR/LF (a forged log line), bytes that are not UTF-8, a bidi override and Rich markup;
a hostile client sends the same in file names, modes, options and ERROR messages to `serve`; traces
(pcap and jsonl) carry them to `trace`. Each output path is checked: plain text, --json and the TUI.
Everything runs on loopback, a handful of datagrams per case, each wait bounded.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.json_text import assert_valid_text
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.fmt import clean, json_restored, line, quote
from tftpdiag.protocol.events import Event, Failed, RequestRefused
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.timer import Timing
from tftpdiag.trace.jsonl import JsonlWriter
from tftpdiag.trace.load import load_trace
from tftpdiag.trace.pcap import PcapWriter
from tftpdiag.tui.widgets.serve_view import ServerInfo

TIMEOUT = 30

# Everything a terminal would act on, and markup Rich or Textual would read, in one string.
HOSTILE = ("\x1b]0;pwned\x07" "\x1b[2J" "\r\nFAKE LOG LINE" "\x07\x9b31m\x7f" "\u202egnp.exe" "\u2066"
           "[red]x[/red][link=http://evil.example]y[/link]")
NOT_UTF8 = b"\xff\xfe"
# Option names and modes must be ASCII on the wire: the ASCII part of the above.
HOSTILE_ASCII = "\x1b]0;pwned\x07\x1b[2J\r\nFAKE LOG LINE\x07\x7f[red]x[/red][link=http://evil.example]y[/link]"


def hostile_bytes() -> bytes:
    return HOSTILE.encode() + NOT_UTF8


# -- what safe output looks like ---------------------------------------------------------------------

def assert_safe_text(text: str) -> None:
    """Printable characters and line ends only (no ESC, BEL, CR, C1, DEL, bidi control, surrogate), no
    line that a peer started."""
    odd = sorted({ch for ch in text if ch != "\n" and not ch.isprintable()})
    assert not odd, f"unsafe characters reached the output: {odd!r}"
    assert not [row for row in text.splitlines() if row.lstrip().startswith("FAKE LOG LINE")], text


def assert_safe_output(out: bytes) -> str:
    text = out.decode("utf-8")  # strict: a raw byte that is not UTF-8 fails here
    assert b"\x1b" not in out and b"\x07" not in out and b"\r" not in out
    assert_safe_text(text)
    return text


def assert_shown_escaped(text: str) -> None:
    """The hostile text is shown, escaped, not dropped: the reader can see what the peer sent."""
    assert "\\x1b[2J" in text and "FAKE LOG LINE" in text


# -- the boundary itself ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [HOSTILE, HOSTILE_ASCII, "a\udcff\udcfeb", "\ud800", "\u2028\u2029\u061c\u200f",
                                  "\x00\t\x85\xa0\xad", "ok \\x1b already", "é漢字🙂"])
def test_clean_and_quote_leave_only_printable_text(text: str) -> None:
    for shown in (clean(text), quote(text), line(text)):
        assert shown.isprintable()
        assert clean(shown) == shown  # cleaning what is clean changes nothing
    assert clean("a\udcff\udcfeb") == "a\\xff\\xfeb"  # bytes that were not UTF-8 shown as bytes
    assert clean("é漢字🙂") == "é漢字🙂"


def test_huge_strings_are_bounded() -> None:
    huge = "\x1b" * 100_000
    assert len(clean(huge)) < 1000 and clean(huge).endswith("…(+99,800 chars)")
    assert len(line("x" * 100_000)) < 2100


# -- a hostile server, for probe ----------------------------------------------------------------------

class HostileServer:
    """Answers each request with what ``reply`` gives, from its own port; counts requests."""

    def __init__(self, reply: Callable[[bytes], list[bytes]]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                data, peer = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            if data[:2] in (b"\x00\x01", b"\x00\x02"):
                for packet in self.reply(data):
                    self.sock.sendto(packet, peer)

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def error_packet(code: int, message: bytes) -> bytes:
    return struct.pack("!HH", 5, code) + message + b"\0"


def oack_packet(*pairs: tuple[bytes, bytes]) -> bytes:
    return b"\x00\x06" + b"".join(name + b"\0" + value + b"\0" for name, value in pairs)


SERVER_REPLIES: dict[str, Callable[[bytes], list[bytes]]] = {
    "error": lambda request: [error_packet(1, hostile_bytes())],
    "oack": lambda request: [oack_packet((HOSTILE_ASCII.encode(), HOSTILE_ASCII.encode()),
                                         (b"blksize", HOSTILE_ASCII.encode()))],
}


def run_cli(*args: str | Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "tftpdiag", *map(str, args)], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


PROBE_FLAGS = ("--timeout", "0.2", "--retries", "1")


def test_probe_failure_headline_quotes_the_name_as_the_findings_do() -> None:
    """A backslash in the name is doubled in the headline, as in a finding: a literal \\x cannot be
    read as an escaped byte."""
    from tests.support.peers import free_udp_port

    name = "\x1b[31mRED\x1b]0;t\x07\\x.bin"
    port = free_udp_port()  # nothing listens: the ICMP port unreachable ends the probe at once
    result = run_cli("probe", f"127.0.0.1:{port}", name, "--no-tui", *PROBE_FLAGS)
    assert result.returncode == 1, result.stderr
    headline = assert_safe_output(result.stdout).splitlines()[0]
    assert headline.startswith(f"✘ {quote(name)} from 127.0.0.1:{port}: "), headline
    assert "'\\x1b[31mRED\\x1b]0;t\\x07\\\\x.bin'" in headline


def test_probe_success_headline_quotes_the_name_as_the_failure_does(tmp_path: Path) -> None:
    """A downloaded name with a backslash reads as in the failure headline and the findings: doubled,
    never a literal \\x that could be an escaped byte. (The server refuses control characters, and
    reads a backslash as a Windows client's path separator.)"""
    name = "fw\\x41.bin"
    (tmp_path / "fw").mkdir()
    (tmp_path / "fw" / "x41.bin").write_bytes(b"firmware")
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0)) as server:
        port = server.addresses[0][1]
        result = run_cli("probe", "127.0.0.1", name, "--port", str(port), "--no-tui", *PROBE_FLAGS)
    assert result.returncode == 0, result.stderr
    headline = assert_safe_output(result.stdout).splitlines()[0]
    assert headline == f"✔ downloaded {quote(name)} from 127.0.0.1:{port}", headline
    assert "'fw\\\\x41.bin'" in headline


@pytest.mark.parametrize("scenario", sorted(SERVER_REPLIES))
@pytest.mark.parametrize("command", ["probe", "put"])
def test_probe_plain_and_json_show_a_hostile_server_safely(scenario: str, command: str, tmp_path: Path) -> None:
    local = tmp_path / "boot.bin"
    local.write_bytes(bytes(100))
    target = ("boot.bin",) if command == "probe" else (local,)
    with HostileServer(SERVER_REPLIES[scenario]) as server:
        plain = run_cli(command, "127.0.0.1", *target, "--port", server.port, "--no-tui", *PROBE_FLAGS)
        as_json = run_cli(command, "127.0.0.1", *target, "--port", server.port, "--json", *PROBE_FLAGS)
    assert plain.returncode == 1 and as_json.returncode == 1, plain.stderr
    text = assert_safe_output(plain.stdout)
    assert_safe_output(plain.stderr)
    assert_shown_escaped(text)
    assert "[red]x[/red]" in text  # shown as it came, not read as markup
    assert_safe_output(as_json.stdout)
    summary = json.loads(as_json.stdout)
    assert_valid_text(summary)
    if scenario == "error":
        # JSON keeps the message itself (escaped by JSON, not altered): scripts get what was sent, the
        # bytes that are not UTF-8 written by the one rule (fmt.storable), not lost to U+FFFD.
        assert summary["error"]["message"] == HOSTILE + "\\xff\\xfe"
        # ... and says so, so that a reader unescapes that string (and no other) to get the bytes back.
        assert summary["escaped"] == ["/error/message"]
        restored = json_restored(json.loads(as_json.stdout))
        assert restored["error"]["message"].encode("utf-8", "surrogateescape") == hostile_bytes()
    for finding in summary["findings"]:
        assert_safe_text(finding["summary"] + finding["suggestion"] + "".join(finding["evidence"]))


@pytest.mark.parametrize("scenario", sorted(SERVER_REPLIES))
def test_probe_sweep_shows_a_hostile_server_safely(scenario: str) -> None:
    with HostileServer(SERVER_REPLIES[scenario]) as server:
        plain = run_cli("probe", "127.0.0.1", "boot.bin", "--port", server.port, "--sweep", "--no-tui", *PROBE_FLAGS)
        as_json = run_cli("probe", "127.0.0.1", "boot.bin", "--port", server.port, "--sweep", "--json",
                          *PROBE_FLAGS)
    assert plain.returncode == 1 and as_json.returncode == 1, plain.stderr
    text = assert_safe_output(plain.stdout)
    assert_safe_output(plain.stderr)
    assert "\\x1b" in text and "[red]" in text  # escaped, and markup shown as text
    assert_safe_output(as_json.stdout)
    json.loads(as_json.stdout)


def test_sweep_table_reads_no_markup_from_the_server() -> None:
    from tftpdiag.sweep import DEFAULT_PROBES, ProbeResult, SweepReport, render_text

    report = SweepReport("127.0.0.1", 69, "[b]boot.bin", 1 << 20)
    report.results.append(ProbeResult(DEFAULT_PROBES[0], "failed", message="[red]gone[/red]",
                                      granted={"[i]k": "[link=http://evil.example]v[/link]"}))
    text = render_text(report, width=400)
    assert_safe_text(text)
    for shown in ("[b]boot.bin", "[red]gone[/red]", "[i]k=[link=http://evil.example]v[/link]"):
        assert shown in text


# -- a hostile client, for serve ----------------------------------------------------------------------

DISK_NAME = "pxelinux.0\x1b[2J\x07"  # a name on the server's disk, offered back as the nearest name


def request_packet(opcode: int, name: bytes, mode: bytes = b"octet", *options: tuple[bytes, bytes]) -> bytes:
    body = name + b"\0" + mode + b"\0" + b"".join(k + b"\0" + v + b"\0" for k, v in options)
    return struct.pack("!H", opcode) + body


HOSTILE_REQUESTS = [
    # a name with control characters, hostile options: refused as a bad name
    request_packet(1, hostile_bytes(), b"octet", (HOSTILE_ASCII.encode(), HOSTILE_ASCII.encode())),
    # a name that is not there: the nearest existing one (hostile, from the disk) is suggested
    request_packet(1, b"pxelinux.0"),
    # an upload to a read-only server, markup, a bidi override and bytes that are not UTF-8 in its name
    request_packet(2, "[red]x[/red][link=http://evil.example]y[/link]\u202egnp.exe".encode() + NOT_UTF8),
    # a transfer mode nobody knows
    request_packet(1, b"image.bin", HOSTILE_ASCII.encode()),
    # an ERROR where a request belongs
    error_packet(0, hostile_bytes()),
]


def hostile_client(port: int) -> None:
    """Send every request above from its own port, then start a real transfer and abort it with a
    hostile ERROR message. Each step waits a bounded time."""
    for packet in HOSTILE_REQUESTS:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(packet, ("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT / 3)
        sock.sendto(request_packet(1, b"image.bin", b"octet", (b"blksize", b"512"),
                                   (HOSTILE_ASCII.encode(), b"1")), ("127.0.0.1", port))
        _, server = sock.recvfrom(65536)
        sock.sendto(error_packet(0, hostile_bytes()), server)


SERVE_ENDINGS = len(HOSTILE_REQUESTS) + 1  # one line (or JSON object) per request, and the aborted transfer


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    served.mkdir()
    (served / "image.bin").write_bytes(bytes(5000))
    (served / DISK_NAME).write_bytes(b"x")
    return served


def serve_cli(root: Path, *flags: str) -> tuple[bytes, bytes]:
    """`tftpdiag serve` as a process: the hostile client's session against it, then SIGINT."""
    proc = subprocess.Popen([sys.executable, "-m", "tftpdiag", "serve", str(root), "--bind", "127.0.0.1",
                             "--port", "0", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    lines: queue.Queue[bytes] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None and proc.stderr is not None
    threading.Thread(target=lambda: [lines.put(row) for row in iter(stdout.readline, b"")], daemon=True).start()
    try:
        banner = proc.stderr.readline().decode()
        port = int(banner.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
        hostile_client(port)
        out = []
        deadline = time.monotonic() + TIMEOUT
        # A plain line starts with the time; a finding's lines are indented after it (JSON: no space).
        while sum(1 for row in out if not row.split(b" ", 1)[-1].startswith(b" ")) < SERVE_ENDINGS:
            out.append(lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while not lines.empty():
        out.append(lines.get())
    return b"".join(out), banner.encode() + err


def test_serve_plain_lines_show_a_hostile_client_safely(root: Path) -> None:
    out, err = serve_cli(root, "--no-tui")
    text = assert_safe_output(out)
    assert_safe_output(err)
    assert_shown_escaped(text)
    # A session's line; not a finding's (indented) nor a device's (judged at the stop, read or not yet)
    ours = [row for row in text.splitlines() if not row.split(" ", 1)[1].startswith((" ", "device "))]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", row) for row in text.splitlines())
    assert len(ours) == SERVE_ENDINGS, text  # one line each: nothing a client sent started another
    assert "nearest existing" in text or "did the client mean 'pxelinux.0\\x1b[2J\\x07'" in text, text
    assert "[red]x[/red]" in text and "\\u202egnp.exe\\xff\\xfe" in text


def test_serve_json_escapes_what_a_hostile_client_sent(root: Path) -> None:
    out, err = serve_cli(root, "--json")
    assert_safe_output(out)
    assert_safe_output(err)
    objects = [json.loads(row) for row in out.splitlines()]
    assert_valid_text(objects)
    objects = [o for o in objects if o["event"] != "device"]  # judged at the stop: read or not yet
    assert len(objects) == SERVE_ENDINGS
    suggestions = [o.get("suggestion") for o in objects]
    assert DISK_NAME in suggestions  # JSON keeps the name itself, escaped by JSON
    for obj in objects:
        for finding in obj["findings"]:
            assert_safe_text(finding["summary"] + finding["suggestion"] + "".join(finding["evidence"]))


# -- the TUI ------------------------------------------------------------------------------------------

TUI_SIZE = (220, 60)  # wide, so that long cells show enough to check


def probe_events(scenario: str) -> list[Event]:
    """A real client transfer against the hostile server, every event it published."""
    bus = EventBus()
    sub = bus.subscribe()
    with HostileServer(SERVER_REPLIES[scenario]) as server:
        request = ClientRequest(host="127.0.0.1", filename="boot.bin", port=server.port,
                                options=RequestedOptions(blksize=1468, tsize=True),
                                timing=Timing(initial_timeout=0.2, retries=1, dally=0.0))
        transfer = ClientTransfer(request, bus).start()
        assert transfer.wait(TIMEOUT) is not None
        transfer.join(5)
    return sub.drain()


def serve_events(root: Path) -> tuple[list[Event], ServerInfo]:
    """Our server's events for the hostile client's session, and how the serve view names it."""
    from tftpdiag.tui.launch import server_info

    bus = EventBus()
    sub = bus.subscribe()
    events: list[Event] = []
    config = ServerConfig(root=root, bind=("127.0.0.1",), port=0)
    with TftpServer(config, bus) as server:
        hostile_client(server.addresses[0][1])
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            events += sub.drain()
            ended = [e for e in events if isinstance(e, (RequestRefused, Failed))]
            if len(ended) >= SERVE_ENDINGS:
                break
            time.sleep(0.01)
        info = server_info(server)
    assert len(ended) == SERVE_ENDINGS
    return events, info


def screen(app: object) -> tuple[str, list[object]]:
    """The whole screen as the terminal would get it: its text, and the segments (for their styles)."""
    strips = app.screen._compositor.render_strips()  # type: ignore[attr-defined]
    return "\n".join(strip.text for strip in strips), [segment for strip in strips for segment in strip]


def assert_screen_safe(app: object) -> str:
    text, segments = screen(app)
    assert_safe_text(text)
    # Markup in a peer's string is shown as text: no link to the peer's address, and its brackets show.
    assert not [s for s in segments if s.style is not None and s.style.link]  # type: ignore[attr-defined]
    return text


@pytest.mark.parametrize("scenario", sorted(SERVER_REPLIES))
async def test_probe_tui_shows_a_hostile_server_safely(scenario: str) -> None:
    from tests.support.tui_samples import probe_app
    from tftpdiag.tui.model import Filter

    app = probe_app(probe_events(scenario), label="127.0.0.1")
    async with app.run_test(size=TUI_SIZE) as pilot:
        await pilot.pause()
        text = assert_screen_safe(app)
        assert "\\x1b[2J" in text and "[red]x" in text
        app.packet_filter = Filter.PROBLEMS
        app.refresh_now()
        await pilot.pause()
        assert_screen_safe(app)


async def test_serve_tui_and_its_session_detail_show_a_hostile_client_safely(root: Path) -> None:
    from tftpdiag.tui.app import RecordedFeed, TftpDiagApp
    from tftpdiag.tui.screens.detail import SessionDetailScreen

    events, info = serve_events(root)
    end = max(e.time for e in events)
    app = TftpDiagApp(mode="serve", feed=RecordedFeed(events), server=info, clock=lambda: end, tick=None)
    async with app.run_test(size=TUI_SIZE) as pilot:
        await pilot.pause()
        text = assert_screen_safe(app)
        log = "\n".join(str(row.text) for row in app.query_one("#log").lines)
        assert_safe_text(log)
        assert "\\x1b[2J" in log and "[red]x[/red]" in log and "'pxelinux.0\\x1b[2J\\x07'" in log
        assert "image.bin" in text
        await pilot.press("enter")  # the aborted transfer, in full: its packets and the client's ERROR
        await pilot.pause()
        assert isinstance(app.screen, SessionDetailScreen)
        detail = assert_screen_safe(app)
        assert "ERROR" in detail and "\\x1b]0;pwned" in detail


# -- traces: a crafted capture and a crafted jsonl record ---------------------------------------------

CLIENT_A, CLIENT_B, SERVER = ("10.0.0.9", 40000), ("10.0.0.9", 40001), ("10.0.0.2", 69)


def hostile_pcap(path: Path) -> Path:
    """Two exchanges on the wire: a request with a hostile name and options answered by a hostile
    ERROR, and an OACK with hostile options that the client refuses with a hostile ERROR 8."""
    tid_a, tid_b = ("10.0.0.2", 50000), ("10.0.0.2", 50001)
    with PcapWriter(path) as writer:
        writer.write(1e9, CLIENT_A, SERVER, request_packet(1, hostile_bytes(), b"octet",
                                                           (HOSTILE_ASCII.encode(), HOSTILE_ASCII.encode())))
        writer.write(1e9 + 0.01, tid_a, CLIENT_A, error_packet(1, hostile_bytes()))
        writer.write(1e9 + 1, CLIENT_B, SERVER, request_packet(1, b"boot.bin", b"octet", (b"blksize", b"1468")))
        writer.write(1e9 + 1.01, tid_b, CLIENT_B, oack_packet((HOSTILE_ASCII.encode(), HOSTILE_ASCII.encode()),
                                                              (b"blksize", HOSTILE_ASCII.encode())))
        writer.write(1e9 + 1.02, CLIENT_B, tid_b, error_packet(8, hostile_bytes()))
    return path


def hostile_jsonl(path: Path, root: Path) -> Path:
    """What the hostile peers made our probe and server publish, as a jsonl record; then a refusal
    whose every text field is hostile (a file can say anything), and one damaged line."""
    events = probe_events("error") + [replace_session(e, 50) for e in probe_events("oack")]
    served, _ = serve_events(root)
    with open(path, "w", encoding="utf-8") as f:
        writer = JsonlWriter(f)
        for event in events + [replace_session(e, 100) for e in served]:
            writer.write(event)
        f.write(json.dumps({"t": 2e9, "session": 200, "event": "request-refused", "peer": ["10.0.0.7", 1069],
                            "filename": HOSTILE, "is_read": True, "code": 2, "message": HOSTILE, "why": HOSTILE,
                            "suggestion": HOSTILE, "received": ""}) + "\n")
        f.write('{"t": 1.0, "session": Infinity, "event": "timed-out"}\n')
    return path


def replace_session(event: Event, offset: int) -> Event:
    from dataclasses import replace

    return replace(event, session=event.session + offset)  # type: ignore[arg-type]


@pytest.fixture
def traces(tmp_path: Path, root: Path) -> list[Path]:
    # The trace's own name is shown too: it may hold anything a file name can.
    return [hostile_pcap(tmp_path / "capture\x1b[2J\x07.pcap"),
            hostile_jsonl(tmp_path / "run\r\nFAKE LOG LINE.jsonl", root)]


def test_trace_plain_and_json_show_hostile_traces_safely(traces: list[Path]) -> None:
    for path in traces:
        plain = run_cli("trace", path, "--no-tui")
        as_json = run_cli("trace", path, "--json")
        assert plain.returncode == 0 and as_json.returncode == 0, plain.stderr
        text = assert_safe_output(plain.stdout)
        assert_safe_output(plain.stderr)
        assert_shown_escaped(text)
        assert "[red]x[/red]" in text
        assert_safe_output(as_json.stdout)
        loaded = json.loads(as_json.stdout)
        assert_valid_text(loaded)
        assert len(loaded["transfers"]) >= 2
        for transfer in loaded["transfers"]:
            for finding in transfer["findings"]:
                assert_safe_text(finding["summary"] + finding["suggestion"] + "".join(finding["evidence"]))
    jsonl_text = plain.stdout.decode()
    assert "skipped 1 damaged line" in jsonl_text  # the Infinity line, named in one warning line
    assert "\\u202egnp.exe" in jsonl_text  # the refusal's hostile 'why' and message, escaped


async def test_trace_tui_shows_hostile_traces_safely(traces: list[Path]) -> None:
    from tftpdiag.tui.launch import trace_app
    from tftpdiag.tui.screens.detail import SessionDetailScreen

    for path in traces:
        loaded = load_trace(path)
        app = trace_app(path, loaded.events, loaded.warning)
        async with app.run_test(size=TUI_SIZE) as pilot:
            await pilot.pause()
            text = assert_screen_safe(app)
            assert "\\x07" in text  # the trace's own name, escaped in the header
            rows = app.query_one("#sessions").row_count  # type: ignore[attr-defined]
            assert rows >= 2
            for _ in range(rows):  # each transfer in full
                await pilot.press("enter")
                await pilot.pause()
                assert isinstance(app.screen, SessionDetailScreen)
                assert_screen_safe(app)
                await pilot.press("escape", "down")
                await pilot.pause()
