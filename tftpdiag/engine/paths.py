"""Requested name -> an open file inside the served root, or a refusal with its TFTP error and reason.

Names arrive from devices that mean well and from attackers: a leading '/' is taken relative to the
root (PXE clients send one), backslashes are separators (Windows-built firmware), and anything that
would leave the root, hide behind a symlink, or name something that is not a regular file is refused.
"""

from __future__ import annotations

import difflib
import errno
import os
import stat
from collections.abc import Callable
from itertools import islice
from pathlib import Path

from tftpdiag.protocol.packets import ErrorCode
from tftpdiag.records import record

__all__ = ["Refusal", "ReadTarget", "WriteTarget", "open_for_read", "check_for_write", "clean_name", "nearest_name"]

_CONTROL = {chr(c) for c in range(32)} | {"\x7f"}


@record
class Refusal:
    """Why the server turns a request away, and the ERROR the client is told."""

    code: int
    message: str  # what the client is told
    why: str  # machine-readable: path-escape, bad-name, not-found, not-a-file, no-permission, read-only, exists
    suggestion: str | None = None  # the nearest existing name, for a file not found


@record
class ReadTarget:
    """A file opened to be served."""

    path: Path
    fd: int
    size: int


@record
class WriteTarget:
    """Where an upload will land."""

    path: Path
    exists: bool


def clean_name(name: str) -> str | Refusal:
    """The request's name as a relative path with '/' separators, or why it is refused."""
    if any(ch in _CONTROL for ch in name):
        return Refusal(ErrorCode.ACCESS_VIOLATION, "file name holds control characters", "bad-name")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        # Refused wherever it leads (as tftpd-hpa does), but said truly: "sub/../x" stays inside.
        depth = 0
        for part in parts:
            depth += -1 if part == ".." else 1
            if depth < 0:
                return Refusal(ErrorCode.ACCESS_VIOLATION, "path leads outside the served directory", "path-escape")
        return Refusal(ErrorCode.ACCESS_VIOLATION, "'..' in a file name is refused", "bad-name")
    if not parts:
        return Refusal(ErrorCode.ACCESS_VIOLATION, "no file name", "bad-name")
    return "/".join(parts)


def _inside(root_real: str, candidate: str) -> bool:
    return candidate == root_real or candidate.startswith(root_real.rstrip(os.sep) + os.sep)


def _locate(root: Path, name: str) -> tuple[Path, str] | Refusal:
    cleaned = clean_name(name)
    if isinstance(cleaned, Refusal):
        return cleaned
    try:
        path = root / cleaned
        # Resolve every symlink on the way; the result must still be under the root.
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return Refusal(ErrorCode.ACCESS_VIOLATION, "file name cannot be used", "bad-name")
    if not _inside(os.path.realpath(root), real):
        return Refusal(ErrorCode.ACCESS_VIOLATION, "path leads outside the served directory", "path-escape")
    return Path(real), cleaned


def nearest_name(root: Path, cleaned: str) -> str | None:
    """The existing name a device probably meant: same letters in another case, or a close spelling."""
    parent = root / os.path.dirname(cleaned)
    base = os.path.basename(cleaned)
    try:
        with os.scandir(parent) as entries:
            names = [e.name for e in islice(entries, 5000)]  # a huge folder: the first 5,000 names
    except OSError:
        return None
    prefix = os.path.dirname(cleaned)
    for candidate in names:
        if candidate.lower() == base.lower():
            return os.path.join(prefix, candidate) if prefix else candidate
    close = difflib.get_close_matches(base, names, n=1, cutoff=0.75)
    if close:
        return os.path.join(prefix, close[0]) if prefix else close[0]
    return None


def open_for_read(root: Path, name: str,
                  suggest: Callable[[Path, str], str | None] | None = nearest_name) -> ReadTarget | Refusal:
    """The file to send, or why not. ``suggest(root, cleaned)`` names the file probably meant when it
    is not found (the server passes one with a bounded cost; None: no hint)."""
    located = _locate(root, name)
    if isinstance(located, Refusal):
        return located
    path, cleaned = located
    try:
        # O_NONBLOCK: opening a FIFO must not hang the server; O_NOFOLLOW: no last-moment symlink swap.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return Refusal(ErrorCode.FILE_NOT_FOUND, "file not found", "not-found",
                       suggest(root, cleaned) if suggest is not None else None)
    except PermissionError:
        return Refusal(ErrorCode.ACCESS_VIOLATION, "permission denied", "no-permission")
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return Refusal(ErrorCode.FILE_NOT_FOUND, f"cannot use this name: {exc.strerror}", "bad-name")
        return Refusal(ErrorCode.ACCESS_VIOLATION, f"cannot open: {exc.strerror}", "not-a-file")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        return Refusal(ErrorCode.ACCESS_VIOLATION, f"{cleaned} is {kind}", "not-a-file")
    os.set_blocking(fd, True)
    return ReadTarget(path, fd, st.st_size)


def check_for_write(root: Path, name: str, *, allow_upload: bool, allow_overwrite: bool) -> WriteTarget | Refusal:
    if not allow_upload:
        return Refusal(ErrorCode.ACCESS_VIOLATION, "uploads are not allowed on this server", "read-only")
    located = _locate(root, name)
    if isinstance(located, Refusal):
        return located
    path, cleaned = located
    if not os.path.isdir(path.parent):  # (False for a name too long too: is_dir() raises then)
        return Refusal(ErrorCode.ACCESS_VIOLATION, f"no such directory for {cleaned}", "not-found")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return WriteTarget(path, exists=False)
    except OSError as exc:  # a name too long for the file system (ENAMETOOLONG), a loop of links...
        return Refusal(ErrorCode.ACCESS_VIOLATION, f"cannot use this name: {exc.strerror}", "bad-name")
    if not stat.S_ISREG(st.st_mode):
        return Refusal(ErrorCode.ACCESS_VIOLATION, f"{cleaned} is not a regular file", "not-a-file")
    if not allow_overwrite:
        return Refusal(ErrorCode.FILE_EXISTS, "file already exists", "exists")
    return WriteTarget(path, exists=True)
