"""The pxe screen: answers in a table, the selected one's options below, a hostile server's strings shown
escaped and never read as markup, and `p` going on to the probe. No network: the answers are made up."""

from __future__ import annotations

import io

from rich.console import Console

from tests.dhcp.test_dhcp_codec import MAC, offer, reply
from tftpdiag.dhcp.analysis import choose_boot
from tftpdiag.dhcp.arch import by_name
from tftpdiag.dhcp.engine import Collected, Interface
from tftpdiag.dhcp.messages import ClientIdentity
from tftpdiag.pxe.run import PxeReport, PxeRequest, finish
from tftpdiag.tui.pxe_app import PROBE, QUIT, PxeApp

HOSTILE = b"\x1b[2J[bold red]evil[/]\x07.0"


def report(*offers) -> PxeReport:
    made = PxeReport(PxeRequest(arch=by_name("bios"), interface="eth0"), Interface("eth0", MAC, "10.0.0.50"),
                     ClientIdentity.make(MAC, by_name("bios")), Collected(offers=list(offers)))
    made.boot = choose_boot(made.collected.offers)
    finish(made)
    return made


def plain(widget) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


async def test_the_table_the_selected_options_and_going_on_to_the_probe():
    first = offer(reply(siaddr="10.0.0.1", file=b"pxelinux.0"))
    second = offer(reply(siaddr="10.0.0.2", server="10.0.0.2", options=[(67, HOSTILE)]), source="10.0.0.2")
    app = PxeApp(report(first, second))
    async with app.run_test(size=(160, 40)) as pilot:
        table = app.query_one("#offers")
        assert table.row_count == 2
        options = app.query_one("#options")
        assert "options from 10.0.0.1" in plain(options) and "pxelinux.0" not in plain(options)
        await pilot.press("down")
        shown = plain(options)
        assert "options from 10.0.0.2" in shown
        assert "\\x1b[2J[bold red]evil[/]\\x07.0" in shown and "\x1b" not in shown  # escaped, markup left as text
        verdict = plain(app.query_one("#verdict"))
        assert "several-dhcp-servers" not in verdict and "2 DHCP servers answered" in verdict
        assert "TFTP: probing 10.0.0.1 for 'pxelinux.0'" in verdict
        assert "would NOT boot" in verdict  # two servers that disagree: an error already
        await pilot.press("p")
    assert app.return_value == PROBE


async def test_nothing_to_probe_quits():
    app = PxeApp(report())
    async with app.run_test(size=(120, 30)) as pilot:
        assert "No DHCP server answered" in plain(app.query_one("#options"))
        assert "No DHCP server answered a bios PXE client" in plain(app.query_one("#verdict"))
        await pilot.press("p")
    assert app.return_value == QUIT


async def test_before_the_probe_the_verdict_waits_for_it():
    app = PxeApp(report(offer(reply(siaddr="10.0.0.1", file=b"pxelinux.0"))))
    async with app.run_test(size=(160, 40)):
        assert "-> ? (the probe tells)" in plain(app.query_one("#verdict"))
