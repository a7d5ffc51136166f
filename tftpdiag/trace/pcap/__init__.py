"""Dependency-free pcap/pcapng codec for UDP datagrams.

:class:`PcapWriter` (writer.py) turns datagrams seen by tftpdiag into a classic libpcap file that
Wireshark, tshark and tcpdump open as ordinary IP/UDP traffic. :func:`read_datagrams` (files.py) pulls
the UDP datagrams out of captures made by other tools (tcpdump, dumpcap/Wireshark, or this writer) and
ignores everything else in them; links.py takes each frame down to its datagram.
"""

from tftpdiag.protocol.datagram import Address, Datagram
from tftpdiag.trace.pcap.files import CaptureError, read_datagrams
from tftpdiag.trace.pcap.links import link_decoder
from tftpdiag.trace.pcap.writer import LINKTYPE_RAW, PcapWriter

__all__ = ["Address", "Datagram", "PcapWriter", "LINKTYPE_RAW", "CaptureError", "read_datagrams", "link_decoder"]
