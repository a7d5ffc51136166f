"""A reboot storm: N devices asking one server for the same file at once, each from its own socket.

One thread drives them all. Every device is a sans-IO client machine (protocol.client.ClientRead) with
a socket of its own; one poller (engine/poller.py, the server's too) waits on all the sockets, and one
sweep of the machines' deadlines every few milliseconds runs their retransmit timers. (A thread per
device, as ClientTransfer runs one download, costs a stack and a switch per datagram: at 500 devices
that is most of a core spent switching, and the interpreter lock serialises them anyway.)

What each device received is hashed as it arrives and compared at the end, size and SHA-256, with what
was expected (given, or else the digest most devices agree on).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import field
from itertools import islice

from tftpdiag.engine.files import store_received
from tftpdiag.engine.net import describe_errno, errored_destination, normalise, resolve, udp_socket
from tftpdiag.engine.poller import Poller
from tftpdiag.protocol.client import ClientRead
from tftpdiag.protocol.events import Address, Completed, Failed, Reason
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.timer import Timing
from tftpdiag.records import record

__all__ = ["StormConfig", "DeviceResult", "StormSetupError", "run_storm", "source_addresses"]

_SWEEP = 0.02  # seconds between looks at the devices' retransmit timers
_BURST = 64  # datagrams read from one socket per readiness (a window), before the next socket's turn
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_MOST_SOURCES = 65536  # addresses taken from --from networks, at most


class StormSetupError(Exception):
    """The storm cannot start: said in one line."""


@record
class StormConfig:
    """A storm: how many simulated devices ask for which file, and how."""

    host: str
    filename: str
    port: int = 69
    clients: int = 100
    ramp: float = 0.0  # seconds over which the devices' first requests are spread (0: all at once)
    blksize: int | None = 1468
    windowsize: int | None = None  # None: lock-step, as most boot ROMs
    tsize: bool = True
    timing: Timing = field(default_factory=lambda: Timing(initial_timeout=1.0, retries=5, dally=0.0,
                                                          adaptive=False))
    sources: tuple[str, ...] = ()  # local addresses the devices bind, in turn; () lets the kernel choose
    deadline: float = 300.0  # seconds for the whole storm; devices still going then count as failed
    family: int = 0

    @property
    def options(self) -> RequestedOptions:
        """What every device asks for (the command line checks its request with these before the storm)."""
        return RequestedOptions(blksize=self.blksize, windowsize=self.windowsize, tsize=self.tsize)


@record
class DeviceResult:
    """How one simulated device's download ended."""

    index: int
    local: Address
    ok: bool  # completed, and the bytes are those expected (set by the caller's check)
    completed: bool  # the protocol finished; the bytes are checked separately
    seconds: float  # from its first request to its end
    size: int
    sha256: str
    retransmits: int  # packets this device sent again (requests, ACKs)
    duplicates: int  # DATA it received again: the server's retransmissions as seen here
    refused: bool  # the server answered with an ERROR before any data
    error: str  # why it failed; "" when it completed


class _Hash:
    """A download's sink: only its size and digest are kept."""

    __slots__ = ("hash", "size")

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def store(self, chunks: list[bytes]) -> None:
        data = b"".join(chunks)
        self.hash.update(data)
        self.size += len(data)

    def commit(self) -> None:
        """Nothing to store: the digest is all that is kept."""


class _Device:
    __slots__ = ("index", "sock", "local", "machine", "sink", "start", "fd")

    def __init__(self, index: int, sock: socket.socket, start: float) -> None:
        self.index = index
        self.sock = sock
        self.fd = sock.fileno()
        self.local = normalise(sock.getsockname())
        self.machine: ClientRead | None = None
        self.sink = _Hash()
        self.start = start


def source_addresses(specs: Sequence[str], limit: int = _MOST_SOURCES) -> tuple[str, ...]:
    """Addresses from '127.0.1.0/24' (its hosts), '127.0.0.5' or '127.0.1.1-127.0.1.200' specs."""
    out: list[str] = []
    for spec in specs:
        spec = spec.strip()
        try:
            if "-" in spec:
                first_text, last_text = spec.split("-", 1)
                first, last = ipaddress.ip_address(first_text.strip()), ipaddress.ip_address(last_text.strip())
                if first.version != last.version or int(last) < int(first):
                    raise ValueError
                end = min(int(last), int(first) + limit)
                out.extend(str(ipaddress.ip_address(n)) for n in range(int(first), end + 1))
            elif "/" in spec:
                network = ipaddress.ip_network(spec, strict=False)
                hosts = network.hosts() if network.num_addresses > 2 else iter(network)
                out.extend(str(address) for address in islice(hosts, limit))
            else:
                out.append(str(ipaddress.ip_address(spec)))
        except ValueError:
            raise StormSetupError(f"not an address, network or range: {spec[:60]!r} (e.g. 127.0.1.0/24 or "
                                  "127.0.1.1-127.0.1.200)") from None
        if len(out) >= limit:
            break
    return tuple(out[:limit])


def _open_sockets(config: StormConfig, family: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
    try:
        for i in range(config.clients):
            source = config.sources[i % len(config.sources)] if config.sources else wildcard
            # With the ICMP errors asked for (IP_RECVERR), a device whose server port is closed fails at
            # once ("port unreachable") instead of retrying for half a minute.
            sock = udp_socket(family, (source, 0))
            socks.append(sock)
            sock.setblocking(False)
    except OSError as exc:
        for sock in socks:
            sock.close()
        if exc.errno == 24:  # EMFILE
            raise StormSetupError(f"cannot open {config.clients} sockets: the open-file limit is too low "
                                  "(ulimit -n)") from None
        raise StormSetupError(f"cannot open the devices' sockets: {exc.strerror}") from None
    return socks


def run_storm(config: StormConfig, on_done: Callable[[DeviceResult], None] | None = None,
              on_ready: Callable[[], None] | None = None) -> tuple[list[DeviceResult], float]:
    """Run the storm; returns each device's result (ok unchecked: see ``completed``) and the wall time.
    ``on_ready`` is called once every device is set up (the name resolved, the sockets open), just
    before the first request: an announcement made there is never followed by a set-up error."""
    try:
        family, server = resolve(config.host, config.port, config.family)
    except Exception as exc:  # noqa: BLE001 - ResolveError or a malformed name: one line either way
        raise StormSetupError(str(exc)) from None
    if config.sources:
        wanted = socket.AF_INET6 if ":" in config.sources[0] else socket.AF_INET
        if wanted != family:
            raise StormSetupError("the source addresses are not of the server's address family")
    options = config.options
    socks = _open_sockets(config, family)
    if on_ready is not None:
        on_ready()
    began = time.time()
    step = config.ramp / (config.clients - 1) if config.clients > 1 else 0.0
    devices = [_Device(i, sock, began + i * step) for i, sock in enumerate(socks)]
    results: list[DeviceResult] = []
    poller: Poller[_Device] = Poller()
    try:
        for device in devices:
            poller.register(device.fd, device)
        _drive(config, devices, poller, server, options, began, results, on_done)
    finally:
        poller.close()
        for sock in socks:
            sock.close()
    return sorted(results, key=lambda r: r.index), time.time() - began


def _drive(config: StormConfig, devices: list[_Device], poller: Poller[_Device], server: Address,
           options: RequestedOptions, began: float, results: list[DeviceResult],
           on_done: Callable[[DeviceResult], None] | None) -> None:
    waiting = deque(devices)  # not started yet, in start order
    running: dict[int, _Device] = {}
    next_sweep = 0.0
    deadline = began + config.deadline

    def settle(device: _Device, now: float) -> None:
        machine = device.machine
        assert machine is not None
        store_received(machine, device.sink, now)  # before sending, as when the machine hashed each block
        out = machine.datagrams_to_send()
        for raw, dest in out:
            try:
                device.sock.sendto(raw, dest)
            except (BlockingIOError, InterruptedError):
                pass  # as if lost on the wire: the retransmit timer covers it
            except OSError as exc:
                machine.unreachable(now, f"sending to {dest[0]}:{dest[1]}: {exc.strerror}")
        machine.events()  # only the result is kept; the events would pile up
        if machine.closed:
            finish(device, now)

    def finish(device: _Device, now: float) -> None:
        running.pop(device.fd, None)
        poller.unregister(device.fd)
        result = _result(device, now)
        results.append(result)
        if on_done is not None:
            on_done(result)

    while waiting or running:
        now = time.time()
        while waiting and waiting[0].start <= now:
            device = waiting.popleft()
            device.start = now
            device.machine = ClientRead(device.index + 1, filename=config.filename, server=server,
                                        local=device.local, now=now, options=options,
                                        timing=config.timing)
            running[device.fd] = device
            settle(device, now)
        if now >= deadline:
            for device in list(running.values()):
                assert device.machine is not None
                device.machine.abort(now, f"the storm's deadline of {config.deadline:g} s passed")
                settle(device, now)
            for device in waiting:  # never started: a failure of the storm, not of the server
                device.machine = None
                finish(device, now)
            waiting.clear()
            break
        if now >= next_sweep:
            for device in list(running.values()):
                machine = device.machine
                assert machine is not None
                when = machine.next_timeout()
                if when is not None and when <= now:
                    machine.handle_timeout(now)
                    settle(device, now)
            next_sweep = now + _SWEEP
        wait = next_sweep - now
        if waiting:
            wait = min(wait, waiting[0].start - now)
        for ready in poller.poll(max(wait, 0.0)):  # not `device`: that name holds a _Device above
            if ready.fd in running:
                _read(ready, settle)


def _read(device: _Device, settle: Callable[[_Device, float], None]) -> None:
    machine = device.machine
    assert machine is not None
    recv = device.sock.recvfrom
    now = time.time()
    for _ in range(_BURST):
        try:
            data, addr = recv(65536, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:  # ICMP port unreachable and the like, reported on the next read
            blamed = errored_destination(device.sock)  # also empties the error queue
            where = f"{blamed[0]} port {blamed[1]}: " if blamed else ""
            machine.unreachable(now, where + describe_errno(exc.errno or 0))
            break
        machine.receive(data, normalise(addr), now)
        if machine.finished:
            break
    settle(device, now)


def _result(device: _Device, now: float) -> DeviceResult:
    machine = device.machine
    if machine is None:
        return DeviceResult(device.index, device.local, False, False, 0.0, 0, "", 0, 0, False,
                            "not started before the deadline")
    result = machine.result
    completed = isinstance(result, Completed)
    error = ""
    refused = False
    if isinstance(result, Failed):
        error = result.message
        refused = result.reason is Reason.PEER_ERROR and device.sink.size == 0
    elif not completed:
        error = "ended without a result"
    seconds = (result.time if result is not None else now) - device.start
    return DeviceResult(device.index, device.local, completed, completed, max(seconds, 0.0), device.sink.size,
                        device.sink.hash.hexdigest(), machine.retransmits, machine.duplicates, refused, error)


def consensus(results: Sequence[DeviceResult]) -> tuple[int, str] | None:
    """The (size, SHA-256) most completed devices received, when no expected one was given."""
    counts = Counter((r.size, r.sha256) for r in results if r.completed)
    return counts.most_common(1)[0][0] if counts else None
