"""Words that the machines and the engine put in a transfer's ending (the ERROR sent, the Failed
event's message) and that readers recognise again: the findings, from a record or a capture that carries
only this text, and the headless summary. One home, so that rewording one side cannot silently blind
the other. Plain strings, no imports: the engine, the findings and the command line all take them."""

from __future__ import annotations

__all__ = ["TSIZE_SHORT", "READER_GONE"]

# A transfer that ended short of the size its sender announced (protocol/receiver.py, _expect_exactly).
TSIZE_SHORT = "short of the announced tsize"
# The reader of the output (-o -, a FIFO) closed it: EPIPE as the engine words it (engine/files.py).
READER_GONE = "the reader of the output went away"
