"""`pxe --json` keeps what the DHCP server said as it said it (JSON escapes it); only the text for a
terminal is escaped. No network: the answers are made up, as the pxe view's tests make them."""

from __future__ import annotations

import json

from tests.dhcp.test_dhcp_codec import offer, reply
from tests.pxe.test_pxe_tui import report
from tftpdiag import fmt
from tftpdiag.pxe.render import offer_lines, to_json

EVIL = b"\x1b[31mEVIL\x1b]0;title\x07\r\nfake\\x.efi"  # an escape, a title, CR LF and a backslash of its own


def printed(*offers) -> tuple[dict, str]:
    made = report(*offers)
    text = fmt.json_line(to_json(made))
    text.encode("utf-8")  # strict: valid UTF-8 whatever the server sent
    return json.loads(text), "\n".join(offer_lines(made))


def test_json_keeps_the_boot_file_and_next_server_a_server_sent_and_the_terminal_sees_them_escaped():
    data, shown = printed(offer(reply(file=EVIL, options=[(66, b"tftp\\\x1b.example")])))
    (first,) = data["offers"]
    assert first["bootfile"] == EVIL.decode() and data["chosen"]["bootfile"] == EVIL.decode()
    assert first["next_server"] == "tftp\\\x1b.example" and data["chosen"]["next_server"] == "tftp\\\x1b.example"
    assert "\x1b" not in shown and "\r" not in shown and "\\\\x.efi" in shown  # the terminal's copy, escaped


def test_a_boot_file_that_is_not_utf8_is_written_by_the_one_rule():
    data, _ = printed(offer(reply(file=b"boot\\\xff.efi")))
    assert data["offers"][0]["bootfile"] == "boot\\\\\\xff.efi" == data["chosen"]["bootfile"]
    assert fmt.unstored(data["chosen"]["bootfile"]).encode("utf-8", "surrogateescape") == b"boot\\\xff.efi"
