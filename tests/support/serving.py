"""A `tftpdiag serve` process for the tests of a server left running: started on a free loopback port,
its stderr read for the addresses it prints, stopped with SIGTERM (or 'q' in its TUI)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tftpdiag.engine.client import ClientOutcome, ClientRequest, ClientTransfer
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.timer import Timing

TIMING = Timing(initial_timeout=0.5, retries=3, dally=0.0)


class Serving:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, metrics: int | None, stderr: list[str],
                 stdout_path: Path) -> None:
        self.proc, self.port, self.metrics_port = proc, port, metrics
        self._stderr = stderr
        self.stdout_path = stdout_path

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def get(self, name: str, **options: int) -> ClientOutcome:
        return ClientTransfer(ClientRequest("127.0.0.1", name, port=self.port, timing=TIMING, deadline=10,
                                            options=RequestedOptions(**options))).run()

    def put(self, name: str, source: Path) -> ClientOutcome:
        return ClientTransfer(ClientRequest("127.0.0.1", name, port=self.port, upload=True, source=source,
                                            timing=TIMING, deadline=10)).run()

    def quit_tui(self) -> int:
        """Press q once the app has taken the terminal (a key typed before that, while the terminal
        still waits for a whole line, would be thrown away when the app sets it up)."""
        wait_for(lambda: "\x1b[?1049h" in self.stderr, 30, "the TUI to take the screen")
        for _ in range(10):
            os.write(self.tty, b"q")  # type: ignore[attr-defined]
            try:
                return self.proc.wait(3)
            except subprocess.TimeoutExpired:
                continue
        raise TimeoutError("the TUI did not quit on q")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


def wait_for(cond, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """Poll until ``cond()`` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def serve(root: Path, *flags: str, tmp: Path, tty: bool = False) -> Iterator[Serving]:
    """``tftpdiag serve ROOT --bind 127.0.0.1 --port 0 FLAGS`` headless (or in its TUI, on a
    pseudo-terminal, with ``tty``); yields once it listens, stops it after."""
    argv = [sys.executable, "-m", "tftpdiag", "serve", str(root), "--bind", "127.0.0.1", "--port", "0", *flags]
    stdout_path = tmp / f"serve-{time.monotonic_ns()}.out"
    lines: list[str] = []
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    master = None
    if tty:
        # The TUI's terminal is a pseudo-terminal, all three streams as a user's would be, which a
        # thread reads (an unread terminal stalls the app). The TUI prints no banner: the port is
        # chosen here, and the sinks' lines before the app starts say the server is bound.
        import pty
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        argv[argv.index("--port") + 1] = str(port)
        master, slave = pty.openpty()
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        threading.Thread(target=_read_terminal, args=(master, lines), daemon=True).start()
    else:
        with open(stdout_path, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, env=env)
        port = 0
        threading.Thread(target=_read_lines, args=(proc, lines), daemon=True).start()
    try:
        text = wait_for(lambda: "".join(lines) if ("serving" in "".join(lines) or tty and _ready(lines, flags))
                        else proc.poll() is not None and "".join(lines) + "\n(exited)", 20, "serve to start")
        assert proc.poll() is None, text
        if not tty:
            port = int(re.search(r"on 127\.0\.0\.1:(\d+)", text)[1])  # type: ignore[index]
        found = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", text)
        serving = Serving(proc, port, int(found[1]) if found else None, lines, stdout_path)
        serving.tty = master  # type: ignore[attr-defined]
        yield serving
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if master is not None:
            os.close(master)


def _ready(lines: list[str], flags: tuple[str, ...]) -> bool:
    """Under the TUI: every sink asked for has said it is set up (the log says nothing)."""
    text = "".join(lines)
    return ("--metrics" not in flags or "metrics at" in text) and ("--history" not in flags or "recording" in text)


def _read_lines(proc: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert proc.stderr is not None
    for raw in proc.stderr:
        lines.append(raw.decode(errors="replace"))


def _read_terminal(fd: int, lines: list[str]) -> None:
    """What the TUI's terminal shows, kept up to 4 MiB (it redraws for as long as it runs)."""
    kept = 0
    try:
        while chunk := os.read(fd, 65536):
            if kept < 4 << 20:
                lines.append(chunk.decode(errors="replace"))
                kept += len(chunk)
    except OSError:
        pass
