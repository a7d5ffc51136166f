"""Port 69 without full root: sockets handed over by systemd (socket activation), and what to say when
binding a privileged port is refused.

systemd's protocol (sd_listen_fds(3)) needs no library: the sockets are file descriptors 3, 4, ...,
``LISTEN_FDS`` says how many, and ``LISTEN_PID`` says which process they are for (a child that
inherited the environment must not take them). The variables are removed once read, as sd_listen_fds
does when asked, so that programs this one starts do not take them either.
"""

from __future__ import annotations

import os
import socket

__all__ = ["SD_LISTEN_FDS_START", "ActivationError", "activated_sockets", "privileged_port_help"]

SD_LISTEN_FDS_START = 3
_MOST_FDS = 64  # far more than any unit lists; a garbled LISTEN_FDS must not make us walk thousands


class ActivationError(Exception):
    """systemd handed over something serve cannot use: said in one line."""


def activated_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The datagram sockets systemd passed to this process, or [] when it passed none (not started by
    socket activation, or the variables are meant for another process)."""
    env = os.environ if environ is None else environ
    count_text, pid_text = env.get("LISTEN_FDS"), env.get("LISTEN_PID")
    if count_text is None:
        return []
    if pid_text is not None and pid_text.strip() != str(os.getpid()):
        return []  # inherited from the process systemd started, not meant for us
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(name, None)
    try:
        count = int(count_text)
    except ValueError:
        raise ActivationError(f"LISTEN_FDS is not a number: {count_text[:40]!r}") from None
    if not 0 <= count <= _MOST_FDS:
        raise ActivationError(f"LISTEN_FDS={count} is out of range (0 to {_MOST_FDS})")
    sockets: list[socket.socket] = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ActivationError(f"file descriptor {fd} from systemd is not a socket: {exc.strerror}") from None
        os.set_inheritable(fd, False)
        if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            sock.detach()
            raise ActivationError(f"file descriptor {fd} from systemd is not a UDP socket: TFTP needs "
                                  "ListenDatagram= in the .socket unit")
        if sock.getsockname()[1] == 0:
            sock.detach()
            raise ActivationError(f"the socket systemd passed as file descriptor {fd} is not bound to a port")
        sockets.append(sock)
    return sockets


def privileged_port_help(shown: str, port: int) -> str:
    """The permission error for a port below net.ipv4.ip_unprivileged_port_start: each way to get it
    without running the whole server as root, one line each."""
    return "\n".join((
        f"cannot bind {shown}: permission denied (port {port} is privileged). Ways that need no full root:",
        "  - systemd socket activation: systemd binds the port and hands it over (contrib/systemd/"
        "tftpdiag.socket and tftpdiag.service);",
        "  - AmbientCapabilities=CAP_NET_BIND_SERVICE in the service unit;",
        "  - sudo setcap cap_net_bind_service+ep on the Python that runs tftpdiag (then every script it "
        "runs may bind low ports);",
        f"  - sudo sysctl net.ipv4.ip_unprivileged_port_start={port} (every user may then bind it);",
        "  - or another port: --port 6969.",
    ))
