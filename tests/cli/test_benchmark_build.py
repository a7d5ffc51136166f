"""benchmarks/build.py: a benchmark says which tftpdiag it measured, and whether it is the checkout's code
(an install left from an older commit once measured that commit, not the one its figures named)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.support.benchmarks import benchmark_module

CHECKOUT = Path(__file__).resolve().parents[2] / "tftpdiag"


@pytest.fixture(scope="module")
def build():
    with benchmark_module("build") as module:
        yield module


def test_a_copy_of_the_checkout_is_its_code_and_a_changed_one_is_not(build, tmp_path) -> None:
    copy = tmp_path / "tftpdiag"
    shutil.copytree(CHECKOUT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert build.differences(copy) == []
    net = copy / "engine" / "net.py"
    net.write_bytes(net.read_bytes() + b"\n# older\n")
    (copy / "engine" / "gone.py").write_text("")
    (copy / "fmt.py").unlink()
    assert build.differences(copy) == ["engine/gone.py", "engine/net.py", "fmt.py"]


def test_under_test_names_the_copy_and_says_whether_it_is_the_checkout(build, tmp_path, monkeypatch) -> None:
    same, said = build.under_test(sys.executable)  # the tests import the checkout itself
    assert same and said == f"tftpdiag: {CHECKOUT} (this checkout)"
    copy = tmp_path / "site-packages" / "tftpdiag"
    shutil.copytree(CHECKOUT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(build, "located", lambda python: copy)
    assert build.under_test("python") == (True, f"tftpdiag: {copy} (the same code as this checkout)")
    (copy / "engine" / "net.py").write_text("# an older net.py\n")
    assert build.under_test("python") == (
        False, f"tftpdiag: {copy}, NOT this checkout's code (1 file differs: engine/net.py)")
    monkeypatch.setattr(build, "located", lambda python: None)
    assert build.under_test("python")[0] is False
