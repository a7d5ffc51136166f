"""Many devices at once: `tftpdiag serve` against tftpd-hpa, with the same storm of clients.

    python benchmarks/storm.py                          # both scenarios, 3 rounds
    python benchmarks/storm.py --scenarios storm --rounds 5
    python benchmarks/storm.py --scenarios concurrent --concurrent-size 8M
    python benchmarks/storm.py --only ours,tftpd-hpa,ours-engine-x2

Scenarios (every device lock-step, blksize 1468, as boot ROMs ask):
  storm       --clients devices (default 500) ask at once for a --size file (default 1 MiB), from as many
              loopback addresses (127.0.1.1, 127.0.1.2, ...): the morning after a power cut. Reported:
              how many got it byte-exact, completion-time percentiles, wall time.
  concurrent  --concurrent-clients downloads (default 50) of a --concurrent-size file (default 4 MiB) at
              once: the aggregate throughput, issue 16's target ("at least that of tftpd-hpa, which forks
              a process per client and so uses every core").

Servers:
  ours             tftpdiag serve --no-tui, default settings, its plain session lines going to /dev/null
                   (normal use: every packet event is folded into a record and judged by the findings).
  tftpd-hpa        in.tftpd -L (Debian's tftpd-hpa), forking a process per client, as tests/support/peers.py
                   starts it.
  ours-engine      the server engine alone (TftpServer, no event readers): what the protocol loop costs.
  ours-engine-x2   two engine processes sharing one listening socket (forked after binding; each runs
                   its own sessions): whether a second core helps when one loop is the limit.

Clients (--client): `storm` is tftpdiag's own storm client (one process, one thread, epoll over all the
sockets; it costs the same CPU whichever server it runs against, and on a 2-core machine it takes one
core of the two); `curl` starts a curl process per device (cheap per block, so the server is the limit:
this shows whether a server uses more than one core; curl binds no chosen source address).

Rounds are interleaved (ours, tftpd-hpa, ..., ours, tftpd-hpa, ...) so that a noisy neighbour slows
all of them alike; each server is started fresh for each run. The table gives medians of the rounds
and each server's wall time as a ratio of tftpd-hpa's (below 1: faster), with the server's and the
clients' CPU seconds: a server whose CPU time is near the wall time is the limit.

Needs: root (in.tftpd chroots), tftpd-hpa (bash .ci/install-peers.sh). Run it on a quiet machine:
it saturates both cores for about a minute with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
IN_TFTPD = "/usr/sbin/in.tftpd"
SERVERS = ("ours", "tftpd-hpa", "ours-engine", "ours-engine-x2")
DEFAULT_SERVERS = ("ours", "tftpd-hpa")

# The engine alone, optionally forked into N processes that share the listening socket (the
# "inherited" socket path serve uses for systemd socket activation).
ENGINE = r"""
import os, signal, socket, sys
from pathlib import Path
from tftpdiag.engine.admission import raise_open_file_limit
from tftpdiag.engine.server import ServerConfig, TftpServer
raise_open_file_limit()
root, port, workers = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listener.bind(("127.0.0.1", port))
for _ in range(workers - 1):
    if os.fork() == 0:
        break
server = TftpServer(ServerConfig(root=root, port=port, inherited=(listener,)))
server.bind()
signal.signal(signal.SIGTERM, lambda *a: server.stop())
server.serve()
"""


@dataclass
class Run:
    server: str
    summary: dict[str, Any]
    server_cpu: float
    client_cpu: float


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def start_server(name: str, root: Path, port: int) -> subprocess.Popen[bytes]:
    if name == "ours":
        argv = [PY, "-m", "tftpdiag", "serve", str(root), "--bind", "127.0.0.1", "--port", str(port), "--no-tui"]
    elif name == "tftpd-hpa":
        argv = [IN_TFTPD, "-L", "-4", "-s", "-u", "root", "--address", f"127.0.0.1:{port}", str(root)]
    else:
        workers = "2" if name.endswith("-x2") else "1"
        argv = [PY, "-c", ENGINE, str(root), str(port), workers]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(),
                            start_new_session=True)
    deadline = time.monotonic() + 20
    while not _bound(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            said = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"{name} did not start: {said}")
        time.sleep(0.02)
    return proc


def group_cpu(pgid: int) -> float:
    """CPU seconds of every process in a process group (a forking server's children too)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5, pgrp (after the name, fields start at 3: state)
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
    return total


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_one(name: str, root: Path, filename: str, clients: int, sources: list[str], timeout: float,
            client: str) -> Run:
    port = free_port()
    proc = start_server(name, root, port)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        if client == "curl":
            summary = curl_storm(port, root / filename, clients, timeout)
        else:
            argv = [PY, "-m", "tftpdiag", "storm", "127.0.0.1", filename, "--port", str(port), "--clients",
                    str(clients), "--expect-file", str(root / filename), "--json", "--deadline", str(timeout)]
            for spec in sources:
                argv += ["--from", spec]
            done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=timeout + 30)
            if not done.stdout.strip():
                raise SystemExit(f"storm failed against {name}: {done.stderr}")
            summary = json.loads(done.stdout)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = group_cpu(proc.pid)
    finally:
        stop_server(proc)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(name, summary, server_cpu, client_cpu)


def curl_storm(port: int, expected: Path, clients: int, timeout: float) -> dict[str, Any]:
    """The same storm with a curl process per device (C, a few microseconds a block): the server, not
    the client, is then what limits, which shows whether a server uses more than one core."""
    sys.path.insert(0, str(REPO))
    from tftpdiag.storm import percentile

    want = expected.read_bytes()
    with tempfile.TemporaryDirectory(prefix="tftpdiag-storm-curl-") as tmp:
        began = time.time()
        procs = {}
        for i in range(clients):
            out = Path(tmp) / f"{i}.bin"
            argv = ["curl", "-s", "--max-time", str(timeout), "--tftp-blksize", "1468", "-o", str(out),
                    f"tftp://127.0.0.1:{port}/{expected.name}"]
            procs[subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid] = out
        ended: dict[int, float] = {}
        codes: dict[int, int] = {}
        while len(ended) < len(procs):
            pid, status = os.wait()  # reaps curl (its CPU time then counts); the server is not a curl
            if pid in procs:
                ended[pid], codes[pid] = time.time() - began, os.waitstatus_to_exitcode(status)
        wall = time.time() - began
        good = [pid for pid, out in procs.items() if codes[pid] == 0 and out.read_bytes() == want]
    times = [ended[pid] for pid in good]
    return {"clients": clients, "completed": len(good), "failed": clients - len(good),
            "p50_s": percentile(times, 0.5), "p95_s": percentile(times, 0.95), "p99_s": percentile(times, 0.99),
            "max_s": max(times) if times else None, "refused": None, "retransmits": None, "wall_s": wall,
            "aggregate_bps": len(want) * len(good) / wall}


def sources_for(clients: int) -> list[str]:
    """One loopback address per device: 127.0.1.1 onwards."""
    last = 0x7F000100 + clients
    return [f"127.0.1.1-{socket.inet_ntoa(last.to_bytes(4, 'big'))}"]


def report(title: str, runs: list[Run], servers: list[str]) -> dict[str, dict[str, float]]:
    print(f"\n{title}")
    print(f"{'server':<16} {'ok/all':>9} {'wall s':>8} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'max s':>7} "
          f"{'Mbit/s':>8} {'retx':>6} {'srv CPU':>8} {'cli CPU':>8} {'vs hpa':>7}")
    medians: dict[str, dict[str, float]] = {}
    for name in servers:
        mine = [r for r in runs if r.server == name]
        if not mine:
            continue

        def med(key: str, runs: list[Run] = mine) -> float:
            values = [r.summary[key] for r in runs if r.summary.get(key) is not None]
            return statistics.median(values) if values else float("nan")

        medians[name] = {
            "wall": med("wall_s"), "p50": med("p50_s"), "p95": med("p95_s"), "p99": med("p99_s"),
            "max": med("max_s"), "bps": med("aggregate_bps"), "retx": med("retransmits"),  # nan for curl
            "server_cpu": statistics.median(r.server_cpu for r in mine),
            "client_cpu": statistics.median(r.client_cpu for r in mine),
            "ok": min(r.summary["completed"] for r in mine), "all": mine[0].summary["clients"],
        }
    base = medians.get("tftpd-hpa", {}).get("wall")
    for name, m in medians.items():
        ratio = f"{m['wall'] / base:.2f}x" if base else "-"
        # tftpd-hpa's children are reaped without a wait, so their CPU time is counted nowhere.
        server_cpu = "-" if name == "tftpd-hpa" else f"{m['server_cpu']:.1f}"
        print(f"{name:<16} {m['ok']:>4}/{m['all']:<4} {m['wall']:>8.2f} {m['p50']:>7.2f} {m['p95']:>7.2f} "
              f"{m['p99']:>7.2f} {m['max']:>7.2f} {m['bps'] * 8 / 1e6:>8.1f} {m['retx']:>6.0f} "
              f"{server_cpu:>8} {m['client_cpu']:>8.1f} {ratio:>7}")
    return medians


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(os.urandom(size))


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().rstrip("ib")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="storm,concurrent",
                        help="comma-separated: storm, concurrent (default both)")
    parser.add_argument("--only", default=",".join(DEFAULT_SERVERS),
                        help=f"comma-separated servers among {', '.join(SERVERS)} (default ours,tftpd-hpa)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each server per scenario (default 3)")
    parser.add_argument("--clients", type=int, default=500, help="devices in the storm scenario (default 500)")
    parser.add_argument("--size", type=parse_size, default=1 << 20, help="file of the storm scenario (default 1M)")
    parser.add_argument("--concurrent-clients", type=int, default=50,
                        help="downloads in the concurrent scenario (default 50)")
    parser.add_argument("--concurrent-size", type=parse_size, default=4 << 20,
                        help="file of the concurrent scenario (default 4M)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds a storm may take (default 240)")
    parser.add_argument("--client", choices=("storm", "curl"), default="storm",
                        help="the devices: tftpdiag storm (one Python process, default) or a curl process each "
                             "(cheap per block, so the server is the limit; curl cannot bind many source addresses)")
    args = parser.parse_args()
    servers = [s.strip() for s in args.only.split(",") if s.strip()]
    for name in servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
    if "tftpd-hpa" in servers and (os.geteuid() != 0 or not os.access(IN_TFTPD, os.X_OK)):
        parser.error("tftpd-hpa needs root and /usr/sbin/in.tftpd (bash .ci/install-peers.sh)")
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers and the storm inherit it
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"{os.uname().release}, Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="tftpdiag-storm-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        results: dict[str, Any] = {}
        for scenario in scenarios:
            if scenario == "storm":
                clients, size, sources = args.clients, args.size, sources_for(args.clients)
            elif scenario == "concurrent":
                clients, size, sources = args.concurrent_clients, args.concurrent_size, []
            else:
                parser.error(f"unknown scenario {scenario!r}")
            filename = f"{scenario}.bin"
            make_file(root / filename, size)
            os.chmod(root / filename, 0o644)
            runs = []
            for round_no in range(args.rounds):
                for name in servers:
                    run = run_one(name, root, filename, clients, sources, args.timeout, args.client)
                    print(f"  round {round_no + 1} {name}: {run.summary['completed']}/{clients} in "
                          f"{run.summary['wall_s']:.2f} s", file=sys.stderr, flush=True)
                    runs.append(run)
            title = (f"{scenario}: {clients} clients ({args.client}) x {size / (1 << 20):g} MiB, lock-step, "
                     f"blksize 1468, median of {args.rounds}")
            results[scenario] = report(title, runs, servers)
        concurrent = results.get("concurrent", {})
        if "ours" in concurrent and "tftpd-hpa" in concurrent:
            ours, hpa = concurrent["ours"]["bps"], concurrent["tftpd-hpa"]["bps"]
            met = "met" if ours >= hpa else "NOT met"
            print(f"\nissue 16 target, aggregate throughput of {args.concurrent_clients} concurrent lock-step "
                  f"downloads at least tftpd-hpa's: {ours / hpa:.2f}x, {met}")


if __name__ == "__main__":
    main()
