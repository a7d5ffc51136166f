"""tftpdiag: see why a TFTP transfer fails, packet by packet."""

__version__ = "0.1.0"
