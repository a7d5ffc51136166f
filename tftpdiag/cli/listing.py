"""Every command's line in ``tftpdiag --help``, in the order listed: the one home of those lines.

Each command's parser takes its line from here; a run that names no command (``--help``, ``--version``,
none at all, a mistyped one) is answered from here alone, without building any command's parser or
loading the modules that define their flags (see ``build_parser``'s ``bare``)."""

from __future__ import annotations

__all__ = ["COMMAND_HELP", "COMMANDS"]

COMMAND_HELP = {
    "probe": "download a file from a TFTP server and show the transfer",
    "put": "upload a file to a TFTP server",
    "serve": "serve a directory over TFTP and show every session",
    "demo": "serve a sample firmware image on loopback and probe it",
    "watch": "capture TFTP between any devices and servers and show it live",
    "storm": "play many devices booting at once against a server and time them",
    "trace": "open a saved trace or a packet capture and show its transfers",
    "pxe": "act as a netbooting device: DHCP answers, boot file, TFTP probe, verdict",
    "history": "what serve --history recorded: which devices got their files",
    "completion": "print a shell completion script (bash, zsh or fish)",
}
COMMANDS = tuple(COMMAND_HELP)
