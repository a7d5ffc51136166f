"""Start-up: how long `tftpdiag --help` and a probe of a closed port take, as a user starts them.

    python benchmarks/startup.py                       # this interpreter's tftpdiag, 15 rounds
    python benchmarks/startup.py --load 1              # with one CPU-bound program running beside
    python -m venv /tmp/v && /tmp/v/bin/pip install .  # an install as from PyPI (no editable hook)
    python benchmarks/startup.py --python /tmp/v/bin/python

Each round runs, in turn, the interpreter alone (`python -c pass`), `tftpdiag --help`, and `tftpdiag
probe 127.0.0.1 x --port P --no-tui` against a loopback port nothing listens on (the ICMP port
unreachable ends it at once), each as a fresh process from the console script pip made beside the
interpreter, with bytecode compiled as pip compiles it. The table gives medians and minimums; the run
ends with issue 16's start-up targets (under 100 ms and 150 ms), each met or not.

An editable install (`pip install -e .`) adds its import hook to every start of that interpreter (20 ms
here), and a site's .pth files theirs: the `pass` row shows what the interpreter costs before tftpdiag.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HELP_LIMIT, PROBE_LIMIT = 0.100, 0.150  # issue 16: seconds


def commands(python: str, port: int) -> dict[str, list[str]]:
    script = Path(python).parent / "tftpdiag"
    tftpdiag = [str(script)] if script.exists() else [python, "-m", "tftpdiag"]
    return {
        "python -c pass": [python, "-c", "pass"],
        "tftpdiag --help": [*tftpdiag, "--help"],
        "tftpdiag probe (closed port)": [*tftpdiag, "probe", "127.0.0.1", "x", "--port", str(port), "--no-tui"],
    }


def run_once(argv: list[str]) -> float:
    from timing import run_timed  # (here: the tests load this file alone, without benchmarks/ on the path)

    _, elapsed = run_timed(argv, 30, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, cwd="/")
    return elapsed


def targets(medians: dict[str, float]) -> list[tuple[str, float, float, bool]]:
    """(what, median seconds, limit, met) for each target the run measured."""
    out = []
    for name, limit in (("tftpdiag --help", HELP_LIMIT), ("tftpdiag probe (closed port)", PROBE_LIMIT)):
        if name in medians:
            out.append((name, medians[name], limit, medians[name] < limit))
    return out


def compile_bytecode(python: str) -> None:
    """Compile the tftpdiag that ``python`` imports, as pip does when it installs a package."""
    subprocess.run([python, "-c", "import compileall, importlib.util\n"
                    "spec = importlib.util.find_spec('tftpdiag')\n"
                    "for folder in spec.submodule_search_locations: compileall.compile_dir(folder, quiet=1)"],
                   check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="run N CPU-bound processes beside the benchmark (default 0)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter whose tftpdiag to time (default: this one)")
    args = parser.parse_args()

    from host import describe  # (here: the tests load this file alone, without benchmarks/ on the path)
    from transfer import free_port  # a loopback port nothing listens on: the probe's closed port

    print(describe())
    compile_bytecode(args.python)
    runs = commands(args.python, free_port())
    for argv in runs.values():  # once each, untimed: the page cache warm, as for a user's second run
        run_once(argv)
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
            for _ in range(args.load)]
    times: dict[str, list[float]] = {name: [] for name in runs}
    try:
        for _ in range(args.rounds):
            for name, argv in runs.items():
                times[name].append(run_once(argv))
    finally:
        for proc in load:
            proc.kill()
            proc.wait()

    beside = f", {args.load} CPU-bound beside" if args.load else ""
    where = f"{args.python}, {args.rounds} interleaved rounds{beside}"
    print(f"\nstart-up ({where})\n")
    print(f"| {'command':<30} | median ms | min ms |")
    print(f"|{'-' * 32}|----------:|-------:|")
    medians = {}
    for name, values in times.items():
        medians[name] = statistics.median(values)
        print(f"| {name:<30} | {medians[name] * 1000:9.1f} | {min(values) * 1000:6.1f} |")
    print()
    for name, median, limit, met in targets(medians):
        print(f"target: {name} under {limit * 1000:.0f} ms: {median * 1000:.1f} ms, {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
