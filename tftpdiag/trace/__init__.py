"""Packet traces: reading and writing capture files of TFTP traffic."""
