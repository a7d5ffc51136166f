"""A minimal Python TFTP pair, as fast as Python gets with nothing else to do: a measuring stick for
issue 16's targets.

    python benchmarks/floor.py serve ROOT --port 6969 [--spin]
    python benchmarks/floor.py get 127.0.0.1 6969 big.bin out.bin --blksize 1468 [--windowsize 16] [--spin]

A server and a client with nothing but the transfer: a read request with blksize and windowsize
(RFC 2348, 7440), the OACK, then DATA and ACK, with no checks beyond the block number, no events, no
record, no timers (a lost datagram ends the run: on loopback none is lost), the file read whole before
the first DATA and written in large buffered writes. Each session gets its own connected socket, so the
kernel filters the peer's address and the reads carry none. A window leaves in one system call and
arrives in one (UDP GSO and GRO, as tftpdiag's engine/offload.py does). --spin makes both loops spin on
non-blocking reads (the quickest way to wait on an idle machine with a CPU for each end); without it
they block in the read (the quickest beside a CPU-bound program, where a spinning end takes the CPU
its peer needs).

benchmarks/transfer.py runs it as two pairs, "python floor" (blocking) and "python floor --spin",
timed like every other pair (the client as a fresh process, start-up included). A real tool does all
this and more (it checks every packet, keeps a record, reports), so where even this misses one of issue
16's targets against the C peers, that target is out of a Python tool's reach on the machine measured.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
from collections.abc import Callable

RRQ, DATA, ACK, ERROR, OACK = 1, 3, 4, 5, 6
_HEADER = struct.Struct("!HH")
UDP_SEGMENT, UDP_GRO = 103, 104  # Linux's (include/uapi/linux/udp.h)


def _options(raw: bytes) -> tuple[str, dict[str, str]]:
    """The file name and options of a read request."""
    fields = raw[2:].split(b"\0")
    name = fields[0].decode("ascii", "replace")
    pairs = fields[2:-1]
    return name, {pairs[i].decode("ascii", "replace").lower(): pairs[i + 1].decode("ascii", "replace")
                  for i in range(0, len(pairs) - 1, 2)}


def _receiver(sock: socket.socket, spin: bool) -> Callable[[], bytes]:
    """A read of one datagram from the connected ``sock``: a spin on non-blocking reads, or one blocking read."""
    recv = sock.recv
    if not spin:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 2, 0))
        return lambda: recv(65536)

    sock.setblocking(False)

    def spun() -> bytes:
        while True:
            try:
                return recv(65536)
            except BlockingIOError:
                continue

    return spun


def serve(root: str, port: int, spin: bool) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", port))
    while True:
        raw, peer = listener.recvfrom(65536)
        try:
            if _HEADER.unpack_from(raw)[0] != RRQ:
                continue
            name, options = _options(raw)
            blksize, window = int(options.get("blksize", 512)), int(options.get("windowsize", 1))
            if not (8 <= blksize <= 65464 and 1 <= window <= 64):  # RFC 2348's sizes; GSO's most segments
                raise ValueError
        except (struct.error, ValueError, IndexError):
            continue  # not a read request this pair understands: ignored
        try:
            with open(os.path.join(root, os.path.basename(name)), "rb") as f:
                content = f.read()
        except OSError:
            listener.sendto(b"\0\5\0\1not found\0", peer)
            continue
        try:
            _send(content, peer, options, blksize, window, spin)
        except OSError:
            continue  # the client went: wait for the next request


def _send(content: bytes, peer: tuple[str, int], options: dict[str, str], blksize: int, window: int,
          spin: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.connect(peer)
        receive = _receiver(sock, spin)
        send, pack, unpack = sock.send, _HEADER.pack, _HEADER.unpack_from
        if options:
            acked = b"".join(f"{k}\0{v}\0".encode() for k, v in options.items() if k in ("blksize", "windowsize"))
            send(pack(OACK, 0)[:2] + acked)
            while unpack(receive()) != (ACK, 0):
                pass
        view = memoryview(content)
        blocks = len(content) // blksize + 1  # the last one short, empty if the size is a multiple
        if window > 1:  # every datagram of a window but the last of the file is blksize + 4 bytes: one send
            sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, blksize + 4)
        block = 1
        while block <= blocks:
            last = min(block + window - 1, blocks)
            send(b"".join([pack(DATA, n & 0xFFFF) + view[(n - 1) * blksize:n * blksize]
                           for n in range(block, last + 1)]))
            while True:
                op, acked_block = unpack(receive())
                if op == ACK and acked_block == last & 0xFFFF:
                    break
                if op == ERROR:
                    return
            block = last + 1


def get(host: str, port: int, name: str, out: str, blksize: int, windowsize: int | None, spin: bool) -> int:
    request = b"\0\1" + name.encode() + b"\0octet\0blksize\0" + str(blksize).encode() + b"\0"
    if windowsize:
        request += b"windowsize\0" + str(windowsize).encode() + b"\0"
    window = windowsize or 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, open(out, "wb", buffering=1 << 20) as f:
        sock.settimeout(5)
        sock.sendto(request, (host, port))
        raw, server = sock.recvfrom(65536)
        op = _HEADER.unpack_from(raw)[0]
        if op != OACK:
            print(f"floor: the server answered opcode {op}", file=sys.stderr)
            return 1
        sock.connect(server)
        sock.settimeout(None)
        if window > 1:  # a window's datagrams arrive in one read, joined: each is blksize + 4 bytes but the last
            sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
        receive = _receiver(sock, spin)
        send, pack, unpack, write = sock.send, _HEADER.pack, _HEADER.unpack_from, f.write
        send(pack(ACK, 0))
        expected, size = 1, blksize + 4
        while True:
            run = receive()
            for start in range(0, len(run), size):
                raw = run[start:start + size]
                op, block = unpack(raw)
                if op != DATA or block != expected & 0xFFFF:
                    if op == ERROR:
                        return 1
                    continue
                write(raw[4:])
                short = len(raw) - 4 < blksize
                if short or expected % window == 0:
                    send(pack(ACK, block))
                if short:
                    return 0
                expected += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve", help="serve ROOT's files until killed")
    s.add_argument("root")
    s.add_argument("--port", type=int, required=True)
    g = commands.add_parser("get", help="download one file")
    g.add_argument("host")
    g.add_argument("port", type=int)
    g.add_argument("name")
    g.add_argument("out")
    g.add_argument("--blksize", type=int, default=512)
    g.add_argument("--windowsize", type=int)
    for p in (s, g):
        p.add_argument("--spin", action="store_true", help="spin on non-blocking reads instead of blocking")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.root, args.port, args.spin)
        return 0
    return get(args.host, args.port, args.name, args.out, args.blksize, args.windowsize, args.spin)


if __name__ == "__main__":
    sys.exit(main())
