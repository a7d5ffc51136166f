"""Which tftpdiag a benchmark measures: the code of the checkout it sits in, or another copy.

    python benchmarks/build.py

Why: a benchmark runs ``python -m tftpdiag`` (as a user would), which imports whatever copy that
interpreter finds first: an install made hours before from an older commit measures that commit, not the
checkout. It happened: on 2026-12-04 the benchmarks' environment still held a copy installed at 20:05,
several commits before the figures it produced were said to be of. So every table says which copy ran and
whether it is this checkout's code, file for file, and transfer.py refuses a copy that differs unless
told (--any-build).
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

__all__ = ["differences", "under_test"]

CHECKOUT = Path(__file__).resolve().parent.parent / "tftpdiag"


def _sources(folder: Path) -> dict[str, str]:
    """Each .py file under ``folder`` (its path relative to it) and the SHA-256 of its bytes."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*.py"))}


def differences(copy: Path, checkout: Path = CHECKOUT) -> list[str]:
    """The .py files that differ between ``copy`` and ``checkout`` (missing from either counts)."""
    mine, theirs = _sources(checkout), _sources(copy)
    return sorted(name for name in mine.keys() | theirs.keys() if mine.get(name) != theirs.get(name))


def located(python: str = sys.executable) -> Path | None:
    """Where ``python -m tftpdiag`` would import tftpdiag from (None: it finds none)."""
    if python == sys.executable:
        spec = importlib.util.find_spec("tftpdiag")
        return Path(spec.origin).parent if spec is not None and spec.origin else None
    found = subprocess.run([python, "-c", "import tftpdiag; print(tftpdiag.__file__)"],
                           capture_output=True, text=True, cwd="/")
    return Path(found.stdout.strip()).parent if found.returncode == 0 else None


def under_test(python: str = sys.executable, checkout: Path = CHECKOUT) -> tuple[bool, str]:
    """(whether it is the checkout's code, a line saying which copy runs)."""
    copy = located(python)
    if copy is None:
        return False, f"tftpdiag: {python} finds none (pip install . first)"
    if copy.resolve() == checkout.resolve():
        return True, f"tftpdiag: {copy} (this checkout)"
    differ = differences(copy, checkout)
    if not differ:
        return True, f"tftpdiag: {copy} (the same code as this checkout)"
    shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
    files = "1 file differs" if len(differ) == 1 else f"{len(differ)} files differ"
    return False, f"tftpdiag: {copy}, NOT this checkout's code ({files}: {shown})"


if __name__ == "__main__":
    same, said = under_test()
    print(said)
    sys.exit(0 if same else 1)
