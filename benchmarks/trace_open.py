"""Opening a big capture: `tftpdiag trace` (--json, and the full-screen view up to its first screen)
beside `tshark -r FILE -T fields -e frame.number` on the same file: wall time and peak memory (RSS).

    python benchmarks/trace_open.py                       # 1,000,000 packets, 3 rounds
    python benchmarks/trace_open.py --packets 200000 --rounds 5

The capture is one lock-step download of 500,000 blocks (a DATA and an ACK each; blksize 512, so the
block numbers roll over seven times), written with tftpdiag's own pcap writer; each round runs every
reader once, in turn, as fresh processes.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tftpdiag.protocol.packets import Ack, Data, Opcode, Request, encode  # noqa: E402
from tftpdiag.trace.pcap import PcapWriter  # noqa: E402

PY = sys.executable
CLIENT, SERVER, TID = ("10.0.0.1", 40000), ("10.0.0.2", 69), ("10.0.0.2", 50001)

# The full-screen view, headless, until it has drawn its first screen of the capture's transfers.
TUI_SCRIPT = """
import sys
from tftpdiag.trace.load import load_trace
from tftpdiag.tui.launch import trace_app
loaded = load_trace(sys.argv[1])
app = trace_app(sys.argv[1], loaded.events, loaded.warning)
async def drawn(pilot):
    await pilot.pause()
    app.exit(0)
app.run(headless=True, size=(200, 55), auto_pilot=drawn)
"""


def write_capture(path: Path, packets: int) -> None:
    blocks = packets // 2
    payload = bytes(512)
    t = 1_700_000_000.0
    with PcapWriter(path) as writer:
        writer.write(t, CLIENT, SERVER, encode(Request(Opcode.RRQ, "big.bin", "octet", ())))
        for n in range(1, blocks + 1):
            t += 0.00002
            last = n == blocks
            writer.write(t, TID, CLIENT, encode(Data(n & 0xFFFF, payload[:100] if last else payload)))
            t += 0.00002
            writer.write(t, CLIENT, TID, encode(Ack(n & 0xFFFF)))


def run(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - started
    # ru_maxrss of children is the largest of any child so far: run the biggest reader last, or read
    # /usr/bin/time's figure instead (used when present).
    return elapsed, max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)


def run_measured(argv: list[str]) -> tuple[float, int]:
    gnu_time = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    if gnu_time is None:
        return run(argv)
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
        started = time.perf_counter()
        subprocess.run([gnu_time, "-f", "%M", "-o", out.name, *argv], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        elapsed = time.perf_counter() - started
        return elapsed, int(Path(out.name).read_text().split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets in the capture (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each reader (default 3)")
    args = parser.parse_args()
    readers = {
        "tftpdiag trace --json": lambda f: [PY, "-m", "tftpdiag", "trace", str(f), "--json"],
        "tftpdiag trace (TUI, first screen)": lambda f: [PY, "-c", TUI_SCRIPT, str(f)],
    }
    if shutil.which("tshark"):
        readers["tshark -T fields -e frame.number"] = lambda f: ["tshark", "-r", str(f), "-T", "fields", "-e",
                                                                "frame.number"]
    with tempfile.TemporaryDirectory(prefix="tftpdiag-trace-bench-") as tmp:
        capture = Path(tmp) / "big.pcap"
        write_capture(capture, args.packets)
        size = capture.stat().st_size
        times: dict[str, list[float]] = {}
        peaks: dict[str, list[int]] = {}
        for round_ in range(args.rounds):
            for name, argv in readers.items():
                elapsed, peak = run_measured(argv(capture))
                times.setdefault(name, []).append(elapsed)
                peaks.setdefault(name, []).append(peak)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"\n{args.packets:,} packets ({size / (1 << 20):.0f} MiB pcap), median of {args.rounds} interleaved rounds "
          f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)")
    print(f"{'reader':<38} {'median s':>9} {'peak MiB':>9} {'bytes/packet':>13}")
    for name in readers:
        peak = statistics.median(peaks[name]) * 1024
        print(f"{name:<38} {statistics.median(times[name]):>9.2f} {peak / (1 << 20):>9.0f} "
              f"{peak / args.packets:>13.0f}")


if __name__ == "__main__":
    main()
