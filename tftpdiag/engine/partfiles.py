"""The temporary files a download or an upload is written to before it is put in place, the mode the
finished file gets, and the removal of temporary files a killed tftpdiag left behind.

A temporary file sits beside its target as ``.NAME.tftpdiag-HOST-PID-RANDOM.part``: HOST is a short
hash of this machine's name and PID the process that writes it. Such a file is stale when it was made
on this machine by a process that no longer runs: a running tftpdiag (this one included) never loses
its files, whatever their age, and a file from another machine sharing the directory (NFS) is left
alone, as is anything not named exactly so. A reused PID only keeps a stale file a little longer.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from tftpdiag.records import record

__all__ = ["create_part", "written_through", "final_mode", "set_final_mode", "current_umask", "remove_stale",
           "Removal", "host_tag", "pid_running"]

_MARK = "tftpdiag"
_NAME_BYTES = 160  # of the target's name kept in the temporary name: the whole must fit in NAME_MAX (255)
_PATTERN = re.compile(
    r"\.(?P<name>.+)\.tftpdiag-(?P<host>[0-9a-f]{8})-(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{8}\.part", re.DOTALL)
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
_umask_lock = threading.Lock()
_STATUS = "/proc/self/status"  # where Linux shows a process's umask


def host_tag() -> str:
    """A short tag of this machine's name: a file or directory made here says where it was made."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _short(name: str) -> str:
    """The target's name cut to fit a temporary name (on a character boundary)."""
    while len(os.fsencode(name)) > _NAME_BYTES:
        name = name[:-1]
    return name


def create_part(target: Path) -> tuple[int, str]:
    """A new temporary file beside ``target``, open for writing: (descriptor, path).

    It is readable by its owner only while it fills (the file it replaces may be private); the
    finished file gets its mode from :func:`final_mode` just before it is put in place.
    """
    prefix = f".{_short(target.name)}.{_MARK}-{host_tag()}-{os.getpid()}-"
    for _ in range(100):
        # os.urandom, as secrets.token_hex does: importing secrets was 2.5 ms of every probe's start.
        path = os.path.join(target.parent, f"{prefix}{os.urandom(4).hex()}.part")
        try:
            return os.open(path, _OPEN_FLAGS, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")


def written_through(target: Path) -> Path:
    """The file a finished download put in place at ``target`` replaces: a symbolic link (of any depth)
    is written through to the file it names, as cp writes, and stays a link; the temporary file is made
    beside that file, so that the rename stays within its file system."""
    return Path(os.path.realpath(target))


def current_umask() -> int:
    """This process's umask, read without changing it where Linux tells it (/proc), else by the
    set-and-restore round trip under a lock (the umask is process-wide: a thread creating a file in
    between gets the stricter 077, never a looser mode)."""
    try:
        with open(_STATUS, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def final_mode(target: Path) -> int:
    """The mode a finished download or upload gets: that of the regular file it replaces, else what
    a new file gets here (0666 less the umask, as cp or tftpd-hpa make it). Set-id and sticky bits are
    not carried over to new content."""
    try:
        st = os.stat(target)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode) & 0o777
    return 0o666 & ~current_umask()


def set_final_mode(fd: int, target: Path) -> None:
    """Give the temporary file open at ``fd`` the mode :func:`final_mode` says, before it is put in place.
    Best effort: a file system without Unix modes (vfat, some network shares) refuses, and the file is
    still worth keeping."""
    try:
        os.fchmod(fd, final_mode(target))
    except OSError:
        pass


@record
class Removal:
    """A stale partial file that was removed, or why it could not be."""

    path: Path
    error: str | None = None  # why it could not be removed; None: removed


def pid_running(pid: int) -> bool:
    """Whether ``pid`` may still run: only a process known to be gone makes what it left stale."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or a value we cannot judge: keep the file
    return True


def _stale(entry: os.DirEntry[str], host: str, name: str | None) -> bool:
    match = _PATTERN.fullmatch(entry.name)
    if match is None or match["host"] != host or (name is not None and match["name"] != name):
        return False
    try:
        if not entry.is_file(follow_symlinks=False):
            return False
    except OSError:
        return False
    return not pid_running(int(match["pid"]))


def _entries(directory: Path, recursive: bool, budget: list[int]) -> Iterator[os.DirEntry[str]]:
    """The entries under ``directory`` (its subdirectories too if ``recursive``; symlinks are not
    followed), at most ``budget[0]`` of them, so a huge tree costs a bounded start-up time."""
    pending = [directory]
    while pending and budget[0] > 0:
        try:
            with os.scandir(pending.pop()) as it:
                for entry in it:
                    budget[0] -= 1
                    if budget[0] < 0:
                        return
                    yield entry
                    if recursive:
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                pending.append(Path(entry.path))
                        except OSError:
                            pass
        except OSError:
            continue


def remove_stale(directory: Path, *, recursive: bool = False, target: Path | None = None,
                 max_entries: int = 100_000) -> list[Removal]:
    """Remove the stale temporary files (see the module's docstring) in ``directory``; only those of
    ``target`` if given. Returns what was removed or could not be."""
    host = host_tag()
    name = _short(target.name) if target is not None else None
    out: list[Removal] = []
    for entry in _entries(directory, recursive, [max_entries]):
        if not _stale(entry, host, name):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue  # another process cleaned it meanwhile
        except OSError as exc:
            out.append(Removal(Path(entry.path), exc.strerror or str(exc)))
        else:
            out.append(Removal(Path(entry.path)))
    return out
