"""Sans-IO TFTP: codecs and session machines that take bytes and the time and return bytes, timers
and events. Nothing in this package opens a socket or a file, starts a thread or reads a clock."""
