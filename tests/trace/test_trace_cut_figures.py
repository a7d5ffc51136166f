"""A record cut before its first Progress event (a jsonl trace truncated early, a view that joined a
stream late) still has its figures: the bytes come from the DATA packets it holds."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from tests.support.simnet import Impairment, run_transfer
from tftpdiag.protocol.events import Completed, Failed, PacketReceived, PacketRun, PacketSent, Progress
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.sessions import SessionTable
from tftpdiag.trace.jsonl import JsonlWriter
from tftpdiag.trace.load import load_trace
from tftpdiag.trace.summary import trace_json

DATA = random.Random(4).randbytes(512 * 60 + 77)


@pytest.mark.parametrize("direction", ["read", "write"])
@pytest.mark.parametrize("runs", [False, True], ids=["events", "columns"])
def test_bytes_come_from_the_packets_before_any_progress(direction: str, runs: bool, tmp_path: Path) -> None:
    res = run_transfer(direction, DATA, options=RequestedOptions(windowsize=4),
                       impairment=Impairment(loss=0.05, dup=0.03, seed=6), runs=runs)
    mine = [e for e in res.events if e.session == 1 and not isinstance(e, (Progress, Completed, Failed))]
    packets = [p for e in mine if isinstance(e, (PacketSent, PacketReceived, PacketRun))
               for p in (e if isinstance(e, PacketRun) else (e,))]
    assert any(p.note.value for p in packets)  # resends and duplicates, to be left out
    assert any(isinstance(e, PacketRun) for e in mine) == runs
    table = SessionTable()
    table.apply(mine)
    (record,) = table
    assert record.bytes == len(DATA) and record.state == "transferring"
    if runs:
        return  # (a trace file holds events, not columns)
    # The same from a jsonl trace cut there.
    buf = io.StringIO()
    writer = JsonlWriter(buf)
    for e in mine:
        writer.write(e)
    path = tmp_path / "cut.jsonl"
    path.write_text(buf.getvalue())
    (transfer,) = trace_json(load_trace(path))["transfers"]
    assert transfer["bytes"] == len(DATA)


def test_progress_still_decides_once_it_comes() -> None:
    res = run_transfer("read", DATA)
    table = SessionTable()
    table.apply(e for e in res.events if e.session == 1)
    (record,) = table
    (done,) = [e for e in res.events if isinstance(e, Completed) and e.session == 1]
    assert record.bytes == done.stats.bytes == len(DATA)
