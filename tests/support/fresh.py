"""Code run in a fresh interpreter: what a start imports and builds cannot be seen from inside the test
process, which has imported everything already."""

from __future__ import annotations

import subprocess
import sys

TIMEOUT = 60


def fresh_python(code: str) -> str:
    """``code`` run by ``python -c`` in a new process; its stdout (the test fails if it does)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result.stdout
