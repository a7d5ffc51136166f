"""The temporary files of downloads and uploads: their names, the mode a finished file gets, and
which leftovers count as stale."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tftpdiag.engine import partfiles
from tftpdiag.engine.partfiles import create_part, current_umask, final_mode, remove_stale


def make_part_in_a_child(target: Path) -> None:
    """A temporary file as a tftpdiag process that has since ended left it."""
    script = "import sys; from pathlib import Path; from tftpdiag.engine.partfiles import create_part; " \
             "create_part(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", script, str(target)], check=True, timeout=30,
                   env={**os.environ, "PYTHONPATH": str(Path(partfiles.__file__).parents[2])})


@pytest.fixture
def umask_027() -> object:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("proc", [True, False], ids=["from-proc", "round-trip"])
def test_the_umask_is_read_without_changing_it(umask_027: object, proc: bool, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    if not proc:
        monkeypatch.setattr(partfiles, "_STATUS", str(tmp_path / "no-such-file"))
    assert current_umask() == 0o027
    assert current_umask() == 0o027  # and it is still the same
    assert final_mode(tmp_path / "new") == 0o640


def test_a_replaced_file_gives_its_mode_but_not_its_set_id_bits(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.write_bytes(b"x")
    old.chmod(0o4750)
    assert final_mode(old) == 0o750


def test_a_temporary_file_is_private_while_it_fills(tmp_path: Path) -> None:
    fd, path = create_part(tmp_path / "image.bin")
    os.close(fd)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.path.basename(path).startswith(".image.bin.tftpdiag-") and path.endswith(".part")


def test_a_longest_name_still_gets_a_temporary_file_found_stale_later(tmp_path: Path) -> None:
    target = tmp_path / ("é" * 127)  # 254 bytes: a temporary name with the whole of it would not fit
    make_part_in_a_child(target)
    [left] = os.listdir(tmp_path)  # the process that made it has ended: stale
    assert len(os.fsencode(left)) <= 255
    removed = remove_stale(tmp_path, target=target)
    assert [r.path.name for r in removed] == [left] and removed[0].error is None
    assert os.listdir(tmp_path) == []


def test_only_the_named_targets_leftovers_go(tmp_path: Path) -> None:
    for name in ("a.bin", "b.bin"):
        make_part_in_a_child(tmp_path / name)
    removed = remove_stale(tmp_path, target=tmp_path / "a.bin")
    assert [r.path.name.split(".tftpdiag-")[0] for r in removed] == [".a.bin"]
    assert [n.split(".tftpdiag-")[0] for n in os.listdir(tmp_path)] == [".b.bin"]
