"""An ERROR 0 (not defined) whose text says what happened gets the finding its text means, as the
typed code would: live (our client against a fake server) and rebuilt from a capture of the same."""

from __future__ import annotations

import pytest

from tests.support.interop import client_capture
from tests.support.machines import StoringClientRead, fed, server_read
from tftpdiag.findings import Finding, analyze
from tftpdiag.fmt import SHOWN, quote
from tftpdiag.protocol.client import ClientWrite
from tftpdiag.protocol.events import Event
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Error, encode
from tftpdiag.protocol.session import Session
from tftpdiag.trace.rebuild import rebuild

CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 69)


def answered_with(code: int, message: str, *, upload: bool = False,
                  options: RequestedOptions = RequestedOptions()) -> list[Event]:
    """Our client's events when the server answers its request with this ERROR."""
    client: Session
    if upload:
        client = fed(ClientWrite(1, filename="boot.img", server=SERVER, local=CLIENT, size=100, now=0.0,
                                 options=options), b"x" * 100)
    else:
        client = StoringClientRead(1, filename="boot.img", server=SERVER, local=CLIENT, now=0.0,
                                   options=options)
    events = client.events()
    client.datagrams_to_send()
    client.receive(encode(Error(code, message)), ("10.0.0.2", 50001), 0.01)
    client.datagrams_to_send()
    return events + client.events()


def captured(events: list[Event]) -> list[Event]:
    """The same exchange as a capture on the client's host shows it, rebuilt."""
    return rebuild(client_capture(events))


def only(events: list[Event]) -> Finding:
    findings = analyze(events)
    assert len(findings) == 1, [(f.id, f.summary) for f in findings]
    return findings[0]


# (message as real servers word it, finding id, words its suggestion must hold)
FAMILIES = [
    ("File not found", "file-not-found", "root directory"),  # atftpd, tftpy, Cisco with code 0
    ("No such file or directory", "file-not-found", "root directory"),  # strerror(ENOENT)
    ("cannot access /srv/tftp/boot.img: No such file or directory", "file-not-found", "root directory"),  # dnsmasq
    ("The system cannot find the file specified.", "file-not-found", "root directory"),  # Windows
    ("open /srv/tftp/boot.img: file does not exist", "file-not-found", "root directory"),  # Go servers
    ("Permission denied", "access-violation", "world-readable"),  # strerror(EACCES)
    ("cannot access /srv/tftp/boot.img: Permission denied", "access-violation", "world-readable"),  # dnsmasq
    ("Access violation", "access-violation", "world-readable"),
    ("Access is denied.", "access-violation", "world-readable"),  # Windows
    ("cannot read /srv/tftp/boot.img: Is a directory", "access-violation", "is a directory"),  # dnsmasq
    ("Is a directory", "access-violation", "is a directory"),  # tftpd-hpa: strerror(EISDIR)
    ("Disk full or allocation exceeded", "server-error", "disk is full"),
    ("No space left on device", "server-error", "disk is full"),  # strerror(ENOSPC)
    ("File too large", "server-error", "disk is full"),  # strerror(EFBIG)
    ("Unknown transfer ID", "server-error", "lost track of this transfer"),
    ("Illegal TFTP operation", "server-error", "does not take this request"),
    # The client asks again without options (tests/protocol/test_fallback.py): the refusal is named, and
    # what the retry showed (here nothing yet, or nothing before the capture ends) decides the severity.
    ("Option negotiation failed", "option-refused", "does not fall back"),
]


@pytest.mark.parametrize("message,finding_id,advice", FAMILIES, ids=[m for m, _, _ in FAMILIES])
@pytest.mark.parametrize("view", ["live", "trace"])
def test_error_0_text_gets_the_finding_it_means(message: str, finding_id: str, advice: str, view: str) -> None:
    options = RequestedOptions(blksize=1468, tsize=True)
    events = answered_with(0, message, options=options)
    f = only(events if view == "live" else captured(events))
    assert f.id == finding_id, (f.id, f.summary)
    if finding_id == "option-refused":
        assert "asked again without options" in f.summary, f.summary
    else:
        assert f.severity == "error", (f.id, f.summary)
    assert advice in f.suggestion, f.suggestion
    # The summary says what the server sent: code 0, with its own words.
    assert "ERROR 0 (not defined)" in f.summary and quote(message) in f.summary, f.summary


def test_typed_code_and_code_0_with_its_name_are_the_same_finding() -> None:
    typed = only(answered_with(1, "File not found"))
    worded = only(answered_with(0, "File not found"))
    assert typed.id == worded.id == "file-not-found"
    assert "ERROR 1, 'File not found'" in typed.summary and "ERROR 0" not in typed.summary
    assert "ERROR 0 (not defined), 'File not found': code 0, but the text means file not found" in worded.summary
    assert typed.suggestion == worded.suggestion


def test_upload_refused_in_words() -> None:
    f = only(answered_with(0, "Read-only file system", upload=True))
    assert f.id == "access-violation" and "--allow-upload" in f.suggestion
    f = only(answered_with(0, "File exists", upload=True))
    assert f.id == "server-error" and "does not overwrite files" in f.suggestion
    f = only(answered_with(0, "No such file or directory", upload=True))
    assert f.id == "file-not-found" and "refused the upload" in f.summary and "-c (create)" in f.suggestion


def test_text_about_options_needs_options_asked() -> None:
    f = only(answered_with(0, "Option negotiation failed"))
    assert f.id == "server-error" and "no meaning of its own" in f.suggestion


@pytest.mark.parametrize("message", [
    "block number overflow",  # says nothing a code would
    "x" * 600 + " not found",  # absurdly long: not read for meaning
    "",
], ids=["no-meaning", "absurd-length", "empty"])
def test_error_0_without_a_meaning_stays_a_server_error(message: str) -> None:
    f = only(answered_with(0, message))
    assert f.id == "server-error" and "no meaning of its own" in f.suggestion
    assert "means" not in f.summary


# An ERROR's message is the peer's to choose, up to ~64 KiB: findings quote it as every view quotes a
# string from the network (fmt.quote: bounded at fmt.SHOWN with the cut counted, odd characters visible).
UNTRUSTED = {
    "60000-chars": "x" * 60_000,
    "odd-chars": "it's \x1b[2J\r\nforged \\ line\u202e",
}


def _texts(f: Finding) -> list[str]:
    return [f.summary, *f.evidence, f.suggestion]


def assert_quoted(findings: list[Finding], message: str) -> None:
    assert findings
    shown = quote(message)
    assert any(shown in f.summary for f in findings), [f.summary for f in findings]
    for f in findings:
        for text in _texts(f):
            assert message[:SHOWN + 1] not in text  # never whole, never unquoted
            assert len(text) < SHOWN + 400, (f.id, len(text))


@pytest.mark.parametrize("message", UNTRUSTED.values(), ids=UNTRUSTED.keys())
@pytest.mark.parametrize("code", [0, 1, 2, 3, 8])
@pytest.mark.parametrize("view", ["live", "trace"])
def test_a_servers_error_message_is_quoted_bounded(message: str, code: int, view: str) -> None:
    events = answered_with(code, message, options=RequestedOptions(blksize=1468, tsize=True))
    assert_quoted(analyze(events if view == "live" else captured(events)), message)


@pytest.mark.parametrize("message", UNTRUSTED.values(), ids=UNTRUSTED.keys())
def test_a_clients_error_message_is_quoted_bounded(message: str) -> None:
    """The client's ERROR that ends a download from our server (client-aborted)."""
    server = server_read(b"x" * 2000)
    events = server.events()
    server.datagrams_to_send()
    server.receive(encode(Error(0, message)), CLIENT, 0.01)  # (the address server_read's machine serves)
    server.datagrams_to_send()
    findings = analyze(events + server.events())
    assert [f.id for f in findings] == ["client-aborted"]
    assert_quoted(findings, message)
