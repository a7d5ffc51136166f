"""tftpdiag runs on Python 3.10 (Ubuntu 22.04's) and later. CI has one Python, so the oldest is kept
by two checks that run on any: vermin finds every use of a module, function, argument or syntax newer
than 3.10 in the package, its tests and scripts; and the stand-in for what 3.10 lacks (StrEnum)
behaves as the real one does."""

from __future__ import annotations

import enum
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tftpdiag.compat import StrEnum310

ROOT = Path(__file__).resolve().parents[2]


def test_nothing_newer_than_python_3_10_is_used() -> None:
    pytest.importorskip("vermin", reason="vermin is in the [test] extra")
    run_vermin = "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())"  # it has no __main__
    result = subprocess.run([sys.executable, "-c", run_vermin, "--target=3.10-", "--violations", "--no-tips",
                             "--eval-annotations",
                             *(str(ROOT / d) for d in ("tftpdiag", "tests", "scripts", "benchmarks"))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Minimum required versions: 3.10" in result.stdout


def test_the_3_10_str_enum_behaves_as_the_real_one() -> None:
    class Old(StrEnum310):
        A = "client-read"

    members = [Old.A]
    if sys.version_info >= (3, 11):
        class New(enum.StrEnum):  # novermin - the one it stands in for
            A = "client-read"

        members.append(New.A)
    for member in members:
        assert str(member) == f"{member}" == f"{member:>12}".strip() == "client-read"
        assert member == "client-read" and isinstance(member, str) and member.value == "client-read"
        assert json.dumps({"role": member}) == '{"role": "client-read"}'
        assert type(member)("client-read") is member
