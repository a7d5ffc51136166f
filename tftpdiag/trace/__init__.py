"""Packet traces: reading and writing capture files of TFTP traffic."""

from tftpdiag.protocol.packets import Data


def snapped(packet: object) -> bool:
    """Whether a trace's snap length (--trace-snaplen) may cut ``packet``: DATA only, whose payload is
    the bulk of a trace. A request, OACK, ERROR or ACK is kept whole: a reader needs a file name, its
    options and an error's text entire, and they are small."""
    return type(packet) is Data
