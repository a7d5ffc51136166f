"""Which of many sockets (or other descriptors) are ready to read: the one poller of the engine's loops
that wait on more than one socket, the server's (engine/server.py) and the storm's (engine/storm.py),
and of the capture's wait on its ring (engine/capture.py).

epoll where the system has it, else poll. The selectors module would do the same but builds key objects
on every call, a cost a lock-step transfer pays once per block.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["Poller"]

T = TypeVar("T")


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


class Poller(Generic[T]):
    """Readiness to read, keyed by file descriptor: :meth:`poll` returns the data each ready one was
    registered with. A descriptor must be unregistered before it is closed (its number may be reused)."""

    __slots__ = ("_epoll", "_impl", "_data", "_wait")

    def __init__(self) -> None:
        self._epoll = hasattr(select, "epoll")
        self._impl = select.epoll() if self._epoll else select.poll()
        self._data: dict[int, T] = {}
        # The system call, in seconds (poll's own takes milliseconds): chosen once, asked once a turn.
        impl = self._impl
        self._wait: Callable[[float], list[tuple[int, int]]] = (
            impl.poll if self._epoll and isinstance(impl, select.epoll) else lambda timeout: impl.poll(timeout * 1000))

    def __len__(self) -> int:
        return len(self._data)

    def register(self, source: _HasFileno | int, data: T) -> None:
        fd = source if isinstance(source, int) else source.fileno()
        self._data[fd] = data
        self._impl.register(fd, select.EPOLLIN if self._epoll else select.POLLIN)

    def unregister(self, source: _HasFileno | int) -> None:
        fd = source if isinstance(source, int) else source.fileno()
        if fd in self._data:
            del self._data[fd]
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._impl.unregister(fd)

    def poll(self, timeout: float) -> list[T]:
        """The data of the descriptors ready within ``timeout`` seconds (0: only those ready now)."""
        data = self._data
        ready = []  # a loop, not a comprehension: in 3.11 that is a function call more, once a turn
        for fd, _ in self._wait(timeout):
            if fd in data:
                ready.append(data[fd])
        return ready

    def close(self) -> None:
        # A poll object has nothing to close; select.epoll is looked up only where it exists.
        if self._epoll and isinstance(self._impl, select.epoll):
            self._impl.close()

    def __enter__(self) -> Poller[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
