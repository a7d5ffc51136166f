"""The protocol's numbers: option ranges (RFC 2348, 2349, 7440) and how long a server keeps a silent
client. Kept apart, with no imports, so that the command line can name them in its --help without
loading the machines (start-up time: `tftpdiag --help` should not pay for the protocol)."""

from __future__ import annotations

DEFAULT_BLKSIZE = 512
BLKSIZE_MIN, BLKSIZE_MAX = 8, 65464
TIMEOUT_MIN, TIMEOUT_MAX = 1, 255
WINDOWSIZE_MIN, WINDOWSIZE_MAX = 1, 65535
# The block size probe, put and storm ask for unless told: the largest whose DATA fits an Ethernet frame
# (1500-byte MTU) without IP fragments.
ETHERNET_BLKSIZE = 1468

# Seconds a server session keeps a client it hears nothing from (Timing.give_up), as tftpd-hpa does
# (about 63 s): longer than the usual clients keep trying themselves (tftp-hpa 25 s, U-Boot 10 x 5 s),
# so the client, not the server, decides that a transfer is lost.
GIVE_UP = 60.0
