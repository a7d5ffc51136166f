"""Does `watch` keep up? A windowed transfer at full loopback speed, captured live.

    sudo python benchmarks/watch.py                      # 64 MiB, blksize 1428, windowsize 16, 3 rounds
    sudo python benchmarks/watch.py --size 256M --rounds 5 --load 1

Each round starts atftpd (C) on a private loopback address, `tftpdiag watch --json` limited to that
address, and atftp (C) downloading the file windowed: neither end is Python, so the transfer runs as fast
as loopback lets it and the watcher is the only program that might fall behind. The round then stops
the watcher and compares what it reported with the truth: the transfer's bytes, and the packets the
kernel or the interface had to drop. A watcher that keeps up reports every byte and nothing lost; one
that falls behind must say exactly how much the capture lost (never a silent gap).

Printed per round: the transfer's own time and rate, what watch reported (bytes, session ok), the
capture's packet count and drops. Needs root (or CAP_NET_RAW) and Debian's atftp/atftpd
(bash .ci/install-peers.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ATFTPD = "/opt/tftpdiag-peers/atftpd/usr/sbin/atftpd"


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bound(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def one_round(root: Path, size: int, blksize: int, windowsize: int) -> dict:
    host = f"127.{random.randrange(100, 200)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"
    port = _free_port(host)
    server = subprocess.Popen([ATFTPD, "--daemon", "--no-fork", "--logfile", "/dev/null", "--user", "root",
                               "--group", "root", "--bind-address", host, "--port", str(port), str(root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    watch = subprocess.Popen([sys.executable, "-m", "tftpdiag", "watch", "-i", "lo", "--port", str(port),
                              "--host", host, "--json", "--idle", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait(lambda: _bound(host, port), 10, "atftpd")
        assert watch.stderr is not None
        watch.stderr.readline()  # the banner: the capture is open
        out = root / "out.bin"
        started = time.perf_counter()
        subprocess.run(["atftp", "--option", f"blksize {blksize}", "--option", f"windowsize {windowsize}",
                        "-g", "-r", "image.bin", "-l", str(out), host, str(port)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        took = time.perf_counter() - started
        ok_file = out.stat().st_size == size
        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline())  # the session, once watch has rebuilt it whole
        caught_up = time.perf_counter() - started
    finally:
        watch.send_signal(signal.SIGINT)
        rest, _ = watch.communicate(timeout=60)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    capture = [json.loads(x) for x in rest.splitlines() if '"capture"' in x][-1]
    return {"took": took, "caught_up": caught_up, "file_ok": ok_file, "bytes": first["bytes"],
            "ok": first["ok"], "packets": capture["packets"],
            "dropped": capture["kernel_dropped"] + capture["interface_dropped"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=_size, default=64 << 20)
    parser.add_argument("--blksize", type=int, default=1428)
    parser.add_argument("--windowsize", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="CPU-bound processes running beside it")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (live capture)", file=sys.stderr)
        return 2
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "image.bin").write_bytes(os.urandom(args.size))
            print(f"{args.size >> 20} MiB, blksize {args.blksize}, windowsize {args.windowsize}, load {args.load}")
            print(f"{'round':>5} {'transfer':>9} {'MiB/s':>7} {'watch done':>10} {'bytes ok':>8} "
                  f"{'packets':>9} {'lost':>6}")
            for n in range(1, args.rounds + 1):
                r = one_round(root, args.size, args.blksize, args.windowsize)
                rate = args.size / r["took"] / (1 << 20)
                print(f"{n:>5} {r['took']:>8.3f}s {rate:>7.1f} {r['caught_up']:>9.3f}s "
                      f"{str(r['bytes'] == args.size and r['ok']):>8} {r['packets']:>9,} {r['dropped']:>6,}")
    finally:
        for hog in hogs:
            hog.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
