"""Scratch directories (engine/scratch.py): a view killed outright leaves its spool and its transfer's
datagrams in the temporary directory; the next tftpdiag to make a scratch directory removes them, and
nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tftpdiag.engine import scratch
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.partfiles import host_tag
from tftpdiag.engine.scratch import remove_stale_scratch
from tftpdiag.trace.spool import Spool


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def made(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "run-1.bin").write_bytes(b"\x00" * 100)
    return path


def test_only_this_machines_directories_of_processes_gone_are_removed(tmp_path: Path) -> None:
    host, gone = host_tag(), dead_pid()
    stale = made(tmp_path, f"tftpdiag-datagrams-{host}-{gone}-abc123")
    outside = made(tmp_path, "precious")
    (stale / "link").symlink_to(outside)  # removed as a link: what it points to is not followed
    running = made(tmp_path, f"tftpdiag-spool-{host}-{os.getpid()}-def456")
    elsewhere = made(tmp_path, f"tftpdiag-spool-{'0' * 8 if host != '0' * 8 else '1' * 8}-{gone}-x")
    older = made(tmp_path, "tftpdiag-datagrams-k2j4h5")  # an older name: whose it was cannot be told
    unrelated = made(tmp_path, f"other-spool-{host}-{gone}-x")
    a_file = tmp_path / f"tftpdiag-spool-{host}-{gone}-file"
    a_file.write_bytes(b"")
    a_link = tmp_path / f"tftpdiag-spool-{host}-{gone}-link"
    a_link.symlink_to(outside)
    assert remove_stale_scratch(str(tmp_path)) == [str(stale)]
    assert not stale.exists()
    for kept in (outside / "run-1.bin", running, elsewhere, older, unrelated, a_file, a_link):
        assert os.path.lexists(kept), kept


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_another_users_directory_is_left_alone(tmp_path: Path) -> None:
    theirs = made(tmp_path, f"tftpdiag-spool-{host_tag()}-{dead_pid()}-abc")
    os.chown(theirs, 65534, 65534)
    assert remove_stale_scratch(str(tmp_path)) == []
    assert theirs.exists()


def test_the_look_is_bounded_in_a_huge_temporary_directory(tmp_path: Path) -> None:
    for n in range(50):
        (tmp_path / f"f{n}").write_bytes(b"")
    stale = made(tmp_path, f"tftpdiag-demo-{host_tag()}-{dead_pid()}-abc")
    assert remove_stale_scratch(str(tmp_path), max_entries=0) == [] and stale.exists()
    assert remove_stale_scratch(str(tmp_path), max_entries=51) == [str(stale)]


_KILLED_VIEW = """
import os, signal
from tftpdiag.engine import apart
from tftpdiag.engine.bus import EventBus
from tftpdiag.trace.spool import Spool
spool = Spool(EventBus())
store = apart._store_path()
open(store, "wb").write(b"datagrams" * 1000)
print(os.path.dirname(str(spool.path)), os.path.dirname(store), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no exit handler runs
"""


def test_a_view_killed_outright_leaves_scratch_the_next_one_removes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", _KILLED_VIEW], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == -signal.SIGKILL, run.stderr
    left = [Path(p) for p in run.stdout.split()]
    assert len(left) == 2 and all(p.parent == tmp_path and p.is_dir() for p in left)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(scratch, "_cleaned", [])  # as in a fresh process
    spool = Spool(EventBus())
    try:
        assert not any(p.exists() for p in left)
        assert spool.path.parent.parent == tmp_path and spool.path.parent.exists()  # its own stays
    finally:
        spool.close()
    assert not spool.path.parent.exists()
