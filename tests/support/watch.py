"""Helpers for the watch tests: a watcher on loopback, and a scripted TFTP client for device behaviour."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.support.peers import wait_until
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.watch import WatchConfig, Watcher
from tftpdiag.sessions import SessionRecord, SessionTable


def private_loopback(third: int) -> str:
    """A loopback address no other test uses (127/8 all answers on lo): 127.<pid-based>.<third>.<random>."""
    return f"127.{100 + os.getpid() % 100}.{third}.{random.randrange(2, 250)}"


@dataclass
class Watching:
    watcher: Watcher
    records: dict[int, SessionRecord] = field(default_factory=dict)
    table: SessionTable = field(default_factory=SessionTable)

    def finished(self) -> list[SessionRecord]:
        return [r for r in self.table if r.finished or r.refused is not None]

    def wait_finished(self, count: int, timeout: float = 20.0) -> list[SessionRecord]:
        wait_until(lambda: len(self.finished()) >= count, timeout, f"{count} finished transfers in watch")
        return self.finished()


@contextmanager
def watching(hosts: tuple[str, ...], ports: tuple[int, ...] = (69,), idle: float = 3.0) -> Iterator[Watching]:
    """A watcher on lo limited to ``hosts``, folding its events into a session table on a thread."""
    bus = EventBus()
    sub = bus.subscribe()
    watcher = Watcher(WatchConfig("lo", ports, hosts, idle), bus)
    w = Watching(watcher)
    stop = threading.Event()

    def fold() -> None:
        while not stop.wait(0.02):
            w.table.apply(sub.drain())
        w.table.apply(sub.drain())

    engine = threading.Thread(target=watcher.serve, daemon=True)
    folder = threading.Thread(target=fold, daemon=True)
    engine.start()
    folder.start()
    try:
        yield w
    finally:
        watcher.stop()
        engine.join(10)
        stop.set()
        folder.join(10)


class ScriptedClient:
    """A TFTP client from its own address, scripted step by step as a device's firmware would be."""

    def __init__(self, source: str, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(3.0)

    def close(self) -> None:
        self.sock.close()

    def _rrq(self, name: str, options: dict[str, str]) -> None:
        body = name.encode() + b"\0octet\0"
        body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in options.items())
        self.sock.sendto(b"\0\1" + body, self.server)

    def size_probe(self, name: str) -> int | None:
        """UEFI's first step: ask with tsize, read the size from the OACK, abort with ERROR 8."""
        self._rrq(name, {"tsize": "0", "blksize": "1468"})
        data, tid = self.sock.recvfrom(65536)
        if data[:2] != b"\0\6":
            return None
        fields = data[2:].split(b"\0")
        opts = {fields[i].decode().lower(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}
        self.sock.sendto(b"\0\5\0\x08" + b"size probe done\0", tid)
        return int(opts["tsize"])

    def get(self, name: str, options: dict[str, str] | None = None) -> bytes | None:
        """A lock-step download; None when the server answers with an ERROR."""
        options = options or {}
        self._rrq(name, options)
        blksize, expected, out = 512, 1, bytearray()
        while True:
            data, tid = self.sock.recvfrom(65536)
            op = data[:2]
            if op == b"\0\5":
                return None
            if op == b"\0\6":
                fields = data[2:].split(b"\0")
                opts = {fields[i].decode().lower(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}
                blksize = int(opts.get("blksize", 512))
                self.sock.sendto(b"\0\4\0\0", tid)
                continue
            block = struct.unpack("!H", data[2:4])[0]
            self.sock.sendto(b"\0\4" + data[2:4], tid)
            if block == expected & 0xFFFF:
                out += data[4:]
                expected += 1
                if len(data) - 4 < blksize:
                    return bytes(out)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

