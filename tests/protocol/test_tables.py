"""The four role machines' transition tables (session.Table): every (state, opcode) pair is either a
row of its role's table or unexpected, the tables say what the map below says, the one dispatch
follows them, and the shortcuts receive() takes mid-transfer lead to the rows they stand for."""

from __future__ import annotations

import pytest

from tests.support.machines import (
    BLOCK,
    CLIENT,
    SERVER,
    TID,
    client_read,
    client_write,
    data,
    locked_client_read,
    server_read,
    server_write,
)
from tftpdiag.protocol import events as ev
from tftpdiag.protocol.client import ClientRead, ClientWrite
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Ack, Data, Error, OAck, Opcode, Request, encode
from tftpdiag.protocol.receiver import Receiver
from tftpdiag.protocol.sender import Sender
from tftpdiag.protocol.server import ServerRead, ServerWrite
from tftpdiag.protocol.session import LIVE_STATES, Session, State

ROLES: tuple[type[Session], ...] = (ClientRead, ClientWrite, ServerRead, ServerWrite)


def render(role: type[Session]) -> str:
    """The table as text, with every pair a state of the role can meet: a row, or 'unexpected'."""
    lines = [role.__name__]
    for state in LIVE_STATES:
        row = role.TABLE.get(state)
        if row is None:
            continue
        for opcode in Opcode:
            if opcode in row:
                name, then = row[opcode]
                lines.append(f"  {state.name:12} {opcode.name:5} {name} -> {then.name if then else 'same'}")
            else:
                lines.append(f"  {state.name:12} {opcode.name:5} unexpected")
    return "\n".join(lines)


MAP = {
    ClientRead: """ClientRead
  REQUESTING   RRQ   _invalid_reply -> FAILED
  REQUESTING   WRQ   _invalid_reply -> FAILED
  REQUESTING   DATA  _first_data -> TRANSFERRING
  REQUESTING   ACK   _invalid_reply -> FAILED
  REQUESTING   ERROR _on_refusal -> same
  REQUESTING   OACK  _on_oack -> NEGOTIATING
  NEGOTIATING  RRQ   unexpected
  NEGOTIATING  WRQ   unexpected
  NEGOTIATING  DATA  _on_data -> TRANSFERRING
  NEGOTIATING  ACK   unexpected
  NEGOTIATING  ERROR _on_error -> FAILED
  NEGOTIATING  OACK  _repeated_oack -> same
  TRANSFERRING RRQ   unexpected
  TRANSFERRING WRQ   unexpected
  TRANSFERRING DATA  _on_data -> same
  TRANSFERRING ACK   unexpected
  TRANSFERRING ERROR _on_error -> FAILED
  TRANSFERRING OACK  _late_oack -> same
  STORING      RRQ   unexpected
  STORING      WRQ   unexpected
  STORING      DATA  _data_while_storing -> same
  STORING      ACK   unexpected
  STORING      ERROR _on_error -> FAILED
  STORING      OACK  _late_oack -> same
  DALLYING     RRQ   unexpected
  DALLYING     WRQ   unexpected
  DALLYING     DATA  _data_after_end -> same
  DALLYING     ACK   unexpected
  DALLYING     ERROR _error_after_end -> same
  DALLYING     OACK  _late_oack -> same""",
    ClientWrite: """ClientWrite
  REQUESTING   RRQ   _invalid_reply -> FAILED
  REQUESTING   WRQ   _invalid_reply -> FAILED
  REQUESTING   DATA  _invalid_reply -> FAILED
  REQUESTING   ACK   _first_ack -> TRANSFERRING
  REQUESTING   ERROR _on_refusal -> same
  REQUESTING   OACK  _on_oack -> TRANSFERRING
  TRANSFERRING RRQ   unexpected
  TRANSFERRING WRQ   unexpected
  TRANSFERRING DATA  unexpected
  TRANSFERRING ACK   _on_ack -> same
  TRANSFERRING ERROR _on_error -> FAILED
  TRANSFERRING OACK  _repeated_oack -> same""",
    ServerRead: """ServerRead
  NEGOTIATING  RRQ   _repeated_request -> same
  NEGOTIATING  WRQ   _repeated_request -> same
  NEGOTIATING  DATA  unexpected
  NEGOTIATING  ACK   _ack_of_oack -> same
  NEGOTIATING  ERROR _oack_refused -> FAILED
  NEGOTIATING  OACK  unexpected
  TRANSFERRING RRQ   _repeated_request -> same
  TRANSFERRING WRQ   _repeated_request -> same
  TRANSFERRING DATA  unexpected
  TRANSFERRING ACK   _on_ack -> same
  TRANSFERRING ERROR _on_error -> FAILED
  TRANSFERRING OACK  unexpected""",
    ServerWrite: """ServerWrite
  NEGOTIATING  RRQ   _repeated_request -> same
  NEGOTIATING  WRQ   _repeated_request -> same
  NEGOTIATING  DATA  _on_data -> TRANSFERRING
  NEGOTIATING  ACK   unexpected
  NEGOTIATING  ERROR _on_error -> FAILED
  NEGOTIATING  OACK  unexpected
  TRANSFERRING RRQ   _repeated_request -> same
  TRANSFERRING WRQ   _repeated_request -> same
  TRANSFERRING DATA  _on_data -> same
  TRANSFERRING ACK   unexpected
  TRANSFERRING ERROR _on_error -> FAILED
  TRANSFERRING OACK  unexpected
  STORING      RRQ   _repeated_request -> same
  STORING      WRQ   _repeated_request -> same
  STORING      DATA  _data_while_storing -> same
  STORING      ACK   unexpected
  STORING      ERROR _on_error -> FAILED
  STORING      OACK  unexpected
  DALLYING     RRQ   _repeated_request -> same
  DALLYING     WRQ   _repeated_request -> same
  DALLYING     DATA  _data_after_end -> same
  DALLYING     ACK   unexpected
  DALLYING     ERROR _error_after_end -> same
  DALLYING     OACK  unexpected""",
}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.__name__)
def test_the_table_is_the_map(role: type[Session]) -> None:
    print(render(role))
    assert render(role) == MAP[role]


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.__name__)
def test_every_row_names_a_handler_of_the_role(role: type[Session]) -> None:
    for state, row in role.TABLE.items():
        assert state in LIVE_STATES
        for opcode, (name, then) in row.items():
            assert callable(getattr(role, name)), (state, opcode, name)
            assert then is None or then in LIVE_STATES or then is State.FAILED
            assert role._rows[state][opcode] == (getattr(role, name), then)


def test_the_shortcuts_lead_to_the_rows_they_stand_for() -> None:
    """Receiver.receive takes in-order DATA and Sender.receive an ACK straight to the handler of the
    (TRANSFERRING, DATA) / (TRANSFERRING, ACK) row, without the dispatch: the rows must be those."""
    for role in (ClientRead, ServerWrite):
        assert issubclass(role, Receiver) and role.TABLE[State.TRANSFERRING][Opcode.DATA] == ("_on_data", None)
    for role in (ClientWrite, ServerRead):
        assert issubclass(role, Sender) and role.TABLE[State.TRANSFERRING][Opcode.ACK] == ("_on_ack", None)


PACKETS = {Opcode.RRQ: Request(Opcode.RRQ, "x", "octet", ()), Opcode.WRQ: Request(Opcode.WRQ, "x", "octet", ()),
           Opcode.DATA: Data(7, b"abc"), Opcode.ACK: Ack(7), Opcode.ERROR: Error(0, "no"),
           Opcode.OACK: OAck((("blksize", "1024"),))}


def machines_in_each_state() -> list[tuple[Session, State]]:
    """A machine of each role in each state its table has rows for."""
    out: list[tuple[Session, State]] = []
    out.append((client_read()[0], State.REQUESTING))
    out.append((locked_client_read(RequestedOptions(blksize=1024), blksize="1024")[0], State.NEGOTIATING))
    out.append((locked_client_read()[0], State.TRANSFERRING))
    dallying, _ = locked_client_read()
    dallying.receive(data(2, b"end"), TID, 0.02)
    out.append((dallying, State.DALLYING))
    out.append((client_write(BLOCK * 3), State.REQUESTING))
    writing = client_write(BLOCK * 3)
    writing.receive(encode(Ack(0)), TID, 0.01)
    out.append((writing, State.TRANSFERRING))
    out.append((server_read(BLOCK * 3, ("blksize", "512")), State.NEGOTIATING))
    out.append((server_read(BLOCK * 3), State.TRANSFERRING))
    out.append((server_write()[0], State.NEGOTIATING))
    taking, _ = server_write()
    taking.receive(data(1, BLOCK), taking.peer, 0.01)
    out.append((taking, State.TRANSFERRING))
    ended, _ = server_write()
    ended.receive(data(1, b"end"), ended.peer, 0.01)
    out.append((ended, State.DALLYING))
    # Without a caller storing what they took, receivers stay STORING after the last block.
    storing = ClientRead(1, filename="f", server=SERVER, local=CLIENT, now=0.0)
    storing.receive(data(1, b"end"), TID, 0.01)
    out.append((storing, State.STORING))
    req = Request(Opcode.WRQ, "f", "octet", ())
    upload = ServerWrite(2, request=req, raw=encode(req), client=CLIENT, local=TID, now=0.0)
    upload.receive(data(1, b"end"), CLIENT, 0.01)
    out.append((upload, State.STORING))
    return out


def role_of(machine: Session) -> type[Session]:
    return next(role for role in ROLES if isinstance(machine, role))


def test_every_unexpected_pair_falls_to_the_one_default() -> None:
    """A packet whose opcode has no row in the state is noted UNEXPECTED and changes nothing else."""
    made = machines_in_each_state()
    for machine, state in made:
        assert machine.state is state, (type(machine).__name__, machine.state)
    for role in ROLES:
        assert {(role, state) for state in role.TABLE} <= {(role_of(m), state) for m, state in made}, role
    for index, (_, state) in enumerate(made):
        for opcode, packet in PACKETS.items():
            machine = machines_in_each_state()[index][0]  # a fresh one for each packet
            if opcode in role_of(machine).TABLE[state]:
                continue
            machine.datagrams_to_send(), machine.events()
            before = (machine.state, machine.stats(1.0), machine.next_timeout())
            machine.receive(encode(packet), machine.peer, 1.0)
            events = machine.events()
            assert [(type(e), getattr(e, "note", None)) for e in events] == [(ev.PacketReceived, ev.Note.UNEXPECTED)], \
                (type(machine).__name__, state, opcode, events)
            assert machine.datagrams_to_send() == []
            after = (machine.state, machine.stats(1.0), machine.next_timeout())
            assert after[0] is before[0] and after[2] == before[2]
            assert after[1].packets_received == before[1].packets_received + 1
