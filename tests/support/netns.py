"""A throw-away LAN made of network namespaces, for tests that need real broadcast (DHCP, PXE).

    with Lan() as lan:                      # a namespace holding a bridge
        server = lan.host("srv", "10.77.0.1/24")
        client = lan.host("cli", "10.77.0.50/24")
        client.run(["ip", "addr"])           # a command inside the client's namespace

Each host is a namespace joined to the bridge by a veth pair (``eth0`` inside). Names carry a random
part so parallel runs do not collide; everything is removed on exit, whatever happened (deleting a
namespace kills nothing by itself, so the processes started here are ended first). Needs root.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Lan", "Host", "can_run"]


def can_run() -> str | None:
    """None when namespaces can be made here, else why not (for a skip message)."""
    if os.geteuid() != 0:
        return "needs root: these tests build a LAN from network namespaces (ip netns) and bind DHCP ports"
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


@dataclass
class Host:
    lan: Lan
    name: str  # its namespace
    address: str | None

    def run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], **kw)

    def start(self, cmd: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)
        self.lan.procs.append(proc)
        return proc


@dataclass
class Lan:
    prefix: str = field(default_factory=lambda: "tpx" + secrets.token_hex(3))
    hosts: list[Host] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    made: list[str] = field(default_factory=list)

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-lan"

    def __enter__(self) -> Lan:
        try:
            self._add_ns(self.bridge_ns)
            _ip("link", "add", "br0", "type", "bridge", ns=self.bridge_ns)
            _ip("link", "set", "br0", "up", ns=self.bridge_ns)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_ns(self, name: str) -> None:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
        self.made.append(name)
        _ip("link", "set", "lo", "up", ns=name)

    def host(self, tag: str, address: str | None, mac: str | None = None) -> Host:
        """A namespace ``PREFIX-TAG`` on the bridge, its ``eth0`` up with ``address`` (CIDR) if given."""
        name = f"{self.prefix}-{tag}"
        self._add_ns(name)
        port = f"v{len(self.hosts)}"
        _ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name, ns=self.bridge_ns)
        _ip("link", "set", port, "master", "br0", ns=self.bridge_ns)
        _ip("link", "set", port, "up", ns=self.bridge_ns)
        if mac:
            _ip("link", "set", "eth0", "address", mac, ns=name)
        if address:
            _ip("addr", "add", address, "dev", "eth0", ns=name)
        _ip("link", "set", "eth0", "up", ns=name)
        host = Host(self, name, address.split("/")[0] if address else None)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.procs.clear()
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self.made.clear()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
