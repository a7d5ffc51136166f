"""A capture's client that stops answering while the server resends: the server's live judgement
(client-stopped-acking), worded for a capture, not packet loss. Synthetic captures, as the tester's:
a client that ACKs some blocks of a download, or sends some of an upload, then goes silent."""

from __future__ import annotations

from tests.trace.test_trace_rebuild import dgram
from tftpdiag.findings import analyze
from tftpdiag.protocol.events import Address
from tftpdiag.protocol.packets import Ack, Data, OAck, Opcode, Request, encode
from tftpdiag.trace.rebuild import rebuild

C: Address = ("10.0.0.1", 40000)
S: Address = ("10.0.0.2", 69)
T: Address = ("10.0.0.2", 50000)


def _silent_download(acked: int, resends: int, after: float = 0.0):  # type: ignore[no-untyped-def]
    """A download of 1024-byte blocks whose client ACKs ``acked`` blocks, then says nothing while the
    server sends the next block ``resends`` more times a second apart; the capture goes on ``after``."""
    wire = [dgram(0.0, C, S, encode(Request(Opcode.RRQ, "fw.bin", "octet", (("blksize", "1024"),)))),
            dgram(0.001, T, C, encode(OAck((("blksize", "1024"),)))),
            dgram(0.002, C, T, encode(Ack(0)))]
    t = 0.003
    for k in range(1, acked + 1):
        wire.append(dgram(t, T, C, encode(Data(k, bytes(1024)))))
        wire.append(dgram(t + 0.0005, C, T, encode(Ack(k))))
        t += 0.001
    for attempt in range(resends + 1):
        wire.append(dgram(t + attempt, T, C, encode(Data(acked + 1, bytes(1024)))))
    if after:
        wire.append(dgram(t + resends + after, ("10.0.0.9", 1), ("10.0.0.2", 9), b"unrelated"))
    return wire


def test_a_client_that_stops_acking_is_not_packet_loss() -> None:
    findings = analyze(rebuild(_silent_download(acked=4, resends=2)))
    ids = {f.id for f in findings}
    assert "packet-loss" not in ids, [f.summary for f in findings]
    (found,) = [f for f in findings if f.id == "client-stopped-acking"]
    assert found.summary.startswith("The client 10.0.0.1:40000 stopped acknowledging after block 4: the server "
                                    "sent 3 times in 2.0 s without an answer"), found.summary
    assert "we " not in found.summary and "our " not in found.summary


def test_a_client_that_never_answers_the_oack() -> None:
    wire = [dgram(0.0, C, S, encode(Request(Opcode.RRQ, "fw.bin", "octet", (("blksize", "1024"),))))]
    wire += [dgram(0.001 + k, T, C, encode(OAck((("blksize", "1024"),)))) for k in range(3)]
    findings = analyze(rebuild(wire))
    (found,) = [f for f in findings if f.id == "client-stopped-acking"]
    assert found.summary.startswith("The client 10.0.0.1:40000 never answered the server's OACK, sent 3 times "
                                    "from port 50000 in 2.0 s"), found.summary


def test_a_resend_the_client_answers_is_still_packet_loss() -> None:
    """The server resends block 5 once and the client ACKs it and the rest: a loss it got over."""
    wire = _silent_download(acked=4, resends=1)
    t = wire[-1].time
    wire.append(dgram(t + 0.0005, C, T, encode(Ack(5))))
    wire.append(dgram(t + 0.001, T, C, encode(Data(6, bytes(10)))))
    wire.append(dgram(t + 0.0015, C, T, encode(Ack(6))))
    ids = {f.id for f in analyze(rebuild(wire))}
    assert "packet-loss" in ids and "client-stopped-acking" not in ids


def test_an_uploading_client_that_stops_sending_data() -> None:
    wire = [dgram(0.0, C, S, encode(Request(Opcode.WRQ, "up.bin", "octet", ()))),
            dgram(0.001, T, C, encode(Ack(0)))]
    t = 0.002
    for k in range(1, 4):
        wire.append(dgram(t, C, T, encode(Data(k, bytes(512)))))
        wire.append(dgram(t + 0.0005, T, C, encode(Ack(k))))
        t += 0.001
    wire += [dgram(t + k, T, C, encode(Ack(3))) for k in range(1, 4)]
    findings = analyze(rebuild(wire))
    assert "packet-loss" not in {f.id for f in findings}
    (found,) = [f for f in findings if f.id == "client-stopped-acking"]
    assert found.summary.startswith("The client 10.0.0.1:40000 stopped sending DATA after block 3 (1.5 KiB): the "
                                    "server sent 4 times in "), found.summary


def test_a_resend_answering_the_clients_repeat_is_no_silence() -> None:
    """The client never got block 5 and sends ACK 4 again; the server answers it with block 5 again,
    then the capture ends: one resend, an answer, is no client that stopped answering."""
    wire = _silent_download(acked=4, resends=0)
    t = wire[-1].time
    wire.append(dgram(t + 0.5, C, T, encode(Ack(4))))
    wire.append(dgram(t + 0.5005, T, C, encode(Data(5, bytes(1024)))))
    assert "client-stopped-acking" not in {f.id for f in analyze(rebuild(wire))}
