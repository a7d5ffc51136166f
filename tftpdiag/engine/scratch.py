"""Scratch directories in the system's temporary directory (the view's save spool, the datagrams of a
transfer run apart, the demo's files), named so that those a killed tftpdiag left can be told and
removed.

Each is removed by the process that made it when it exits. A process killed outright (SIGKILL, the
out-of-memory killer, a closed terminal's hang-up arriving mid-write) runs no exit handler, and its
directories stayed until a reboot: the spool and the datagrams are as large as what the view
transferred, so a few killed views could fill a small /tmp. A directory is therefore named
``tftpdiag-KIND-HOST-PID-RANDOM`` and is stale when it was made on this machine (HOST, as for partial
files: engine/partfiles.py) by a process that no longer runs, and is this user's. The first scratch
directory a process makes removes the stale ones first; nothing else is touched, and a directory of a
running tftpdiag is never stale, whatever its age.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from tftpdiag.engine.partfiles import host_tag, pid_running

__all__ = ["scratch_prefix", "remove_stale_scratch"]

_PATTERN = re.compile(r"tftpdiag-(?P<kind>[a-z]+)-(?P<host>[0-9a-f]{8})-(?P<pid>[1-9][0-9]{0,9})-[^/]+")
# Entries of the temporary directory looked at, at most: a /tmp of a million files costs a bounded start.
_MAX_ENTRIES = 20_000
_cleaned: list[bool] = []  # whether this process has removed the stale ones already


def scratch_prefix(kind: str) -> str:
    """The name's prefix for a new scratch directory of ``kind`` (``tempfile.mkdtemp(prefix=...)``);
    the first call in a process removes the stale ones first."""
    if not _cleaned:
        _cleaned.append(True)
        remove_stale_scratch()
    return f"tftpdiag-{kind}-{host_tag()}-{os.getpid()}-"


def remove_stale_scratch(directory: str | None = None, max_entries: int = _MAX_ENTRIES) -> list[str]:
    """Remove the stale scratch directories (see the module's docstring) in ``directory`` (the system's
    temporary directory by default); the paths removed. Never raises: what cannot be removed stays."""
    directory = directory or tempfile.gettempdir()
    host, uid = host_tag(), os.getuid()
    removed: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for count, entry in enumerate(entries):
                if count >= max_entries:
                    break
                match = _PATTERN.fullmatch(entry.name)
                if match is None or match["host"] != host:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not entry.is_dir(follow_symlinks=False) or st.st_uid != uid or pid_running(int(match["pid"])):
                    continue
                shutil.rmtree(entry.path, ignore_errors=True)  # fd-based on Linux: symlinks inside are not followed
                if not os.path.lexists(entry.path):
                    removed.append(entry.path)
    except OSError:
        pass
    return removed
