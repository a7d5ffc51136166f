"""The sans-IO DHCP side of tftpdiag pxe: messages built, answers read (hostile ones too), loaders told
apart, and the findings drawn from answers (no sockets: the engine's facts are made up here)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.pxe.test_pxe_netns import pe_image
from tftpdiag import fmt
from tftpdiag.dhcp.analysis import ProbeFacts, PxeFacts, analyse, choose_boot
from tftpdiag.dhcp.arch import ARCHES, NOT_UEFI, by_code, by_name, loader_from_bytes, loader_from_name
from tftpdiag.dhcp.messages import (
    BROADCAST_FLAG,
    ClientIdentity,
    boot_server_addresses,
    build_boot_request,
    build_discover,
)
from tftpdiag.dhcp.offers import JSON_LIMIT, Offer
from tftpdiag.dhcp.options import option_value, pxe_suboptions
from tftpdiag.dhcp.packet import (
    ACK,
    BOOTREPLY,
    BOOTREQUEST,
    DISCOVER,
    MAGIC,
    OFFER,
    REQUEST,
    DhcpMessage,
    DhcpParseError,
    encode,
    encode_options,
    parse,
)
from tftpdiag.pxe.names import candidates
from tftpdiag.pxe.render import cells

MAC = bytes.fromhex("020000abcdef")


def me(arch: str = "efi-x64") -> ClientIdentity:
    return ClientIdentity.make(MAC, by_name(arch))


def reply(*, yiaddr="10.0.0.20", siaddr="0.0.0.0", file=b"", sname=b"", options=None, kind=OFFER,
          server="10.0.0.1", xid=7) -> bytes:
    opts = [(53, bytes((kind,))), (54, ipaddress.IPv4Address(server).packed)] + list(options or [])
    msg = DhcpMessage(op=BOOTREPLY, xid=xid, chaddr=MAC, yiaddr=yiaddr, siaddr=siaddr, file=file, sname=sname)
    return encode(msg, opts)


def offer(raw: bytes, source="10.0.0.1", port=67, t=0.1) -> Offer:
    return Offer(parse(raw), source, port, t)


# -- what we send --------------------------------------------------------------------------------

def test_discover_says_what_a_pxe_client_of_that_architecture_says():
    raw = build_discover(me("efi-x64"), 0x1234)
    msg = parse(raw)
    assert len(raw) >= 300 and msg.op == BOOTREQUEST and msg.xid == 0x1234 and msg.chaddr == MAC
    assert msg.message_type == DISCOVER and msg.flags & BROADCAST_FLAG and msg.giaddr == "0.0.0.0"
    assert msg.options[93] == b"\x00\x07"
    assert msg.option_text(60) == "PXEClient:Arch:00007:UNDI:003016"
    assert msg.options[94] == b"\x01\x03\x10" and len(msg.options[97]) == 17 and msg.options[97][0] == 0
    assert msg.options[61] == b"\x01" + MAC
    asked = set(msg.options[55])
    assert {66, 67, 150, 43, 60, 54, 1, 3} <= asked
    assert 50 not in msg.options  # asks for no address in particular
    assert parse(build_discover(me("bios"), 1)).option_text(60) == "PXEClient:Arch:00000:UNDI:002001"
    assert parse(build_discover(me("efi-x64-http"), 1)).option_text(60).startswith("HTTPClient:Arch:00016")


def test_a_relayed_discover_carries_giaddr_and_no_broadcast_flag():
    msg = parse(build_discover(me(), 9, giaddr="192.0.2.7"))
    assert msg.giaddr == "192.0.2.7" and msg.hops == 1 and not msg.flags & BROADCAST_FLAG


def test_the_boot_server_request_asks_for_the_first_menu_item():
    menu = bytes((6, 1, 3, 8, 7, 0x80, 0, 1, 192, 0, 2, 5, 9, 7, 0x80, 0, 4)) + b"Boot" + b"\xff"
    msg = parse(build_boot_request(me("bios"), 5, "10.0.0.50", menu))
    assert msg.message_type == REQUEST and msg.ciaddr == "10.0.0.50" and msg.yiaddr == "0.0.0.0"
    assert msg.options[43][:6] == bytes((71, 4, 0x80, 0, 0, 0))
    assert boot_server_addresses(menu) == ["192.0.2.5"]
    assert boot_server_addresses(b"\x09\x02") == []  # a broken menu lists nobody


def test_arch_table_is_consistent():
    assert len({a.name for a in ARCHES}) == len({a.code for a in ARCHES}) == len(ARCHES)
    for arch in ARCHES:
        assert by_code(arch.code) is arch and by_name(arch.name.upper()) is arch
        assert arch.firmware == "bios" or arch.machines


# -- what we read -------------------------------------------------------------------------------

def test_an_offer_with_overloaded_file_and_sname_fields():
    # Options 67 in the file field and 66 in sname (option 52 = 3), 67's value split in two (RFC 3396).
    file_opts = encode_options([(67, b"efi/"), (67, b"ipxe.efi")]) + b"\xff"
    sname_opts = encode_options([(66, b"10.0.0.9")]) + b"\xff"
    raw = reply(file=file_opts, sname=sname_opts, options=[(52, b"\x03")])
    msg = parse(raw)
    assert msg.overload == 3 and msg.file == b"" and msg.sname == b""
    o = offer(raw)
    assert o.bootfile == "efi/ipxe.efi" and o.bootfile_source == "option 67"
    assert o.next_server.value == "10.0.0.9" and o.next_server.source == "option 66"
    assert not o.proxy and o.your_ip == "10.0.0.20"


def test_the_file_field_wins_and_siaddr_comes_first():
    o = offer(reply(siaddr="10.0.0.5", file=b"pxelinux.0", options=[(67, b"other"), (66, b"tftp"),
                                                                    (150, bytes([10, 0, 0, 6, 10, 0, 0, 7]))]))
    assert o.bootfile == "pxelinux.0" and o.bootfile_source == "file field"
    assert [(s.value, s.source) for s in o.boot_servers] == [
        ("10.0.0.5", "siaddr"), ("tftp", "option 66"), ("10.0.0.6", "option 150"), ("10.0.0.7", "option 150")]


def test_a_proxy_answer_and_its_pxe_suboptions():
    vendor = bytes((6, 1, 8, 10, 4, 0)) + b"PXE" + b"\xff"
    o = offer(reply(yiaddr="0.0.0.0", options=[(60, b"PXEClient"), (43, vendor)]))
    assert o.proxy and o.your_ip is None and o.bootfile is None
    assert dict(pxe_suboptions(vendor)) == {"discovery control": "8 (boot file in this offer, no menu)",
                                           "menu prompt": "wait 0 s: 'PXE'"}
    ack = offer(reply(yiaddr="10.0.0.50", kind=ACK, file=b"pxelinux.0"), port=4011)
    assert ack.proxy and ack.your_ip is None  # a boot server's ACK only echoes the client's address


@pytest.mark.parametrize("raw, words", [
    (b"", "shorter"),
    (b"\x02" + bytes(239), "magic"),
    (b"\x03" + bytes(235) + MAGIC, "op 3"),
    (bytes([2]) + bytes(235) + MAGIC + b"\x43\x05abc", "says 5 bytes"),
    (bytes([2]) + bytes(235) + MAGIC + b"\x43", "no length"),
    (bytes([2]) + bytes(235) + MAGIC + b"\x34\x01\x07", "overload"),
])
def test_broken_messages_get_a_typed_error_that_says_why(raw, words):
    with pytest.raises(DhcpParseError, match=words):
        parse(raw)


def _safe(text: str) -> bool:
    return text.isprintable() and len(text) < 2000


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1600))
def test_hostile_bytes_parse_or_raise_the_typed_error(data):
    try:
        msg = parse(data)
    except DhcpParseError:
        return
    _everything_shown_is_safe(msg)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=128), st.binary(max_size=64), st.binary(max_size=4),
       st.integers(0, 4))
def test_hostile_options_after_a_valid_header(options, file, sname, siaddr, overload):
    head = struct.pack("!BBBBIHH", 2, 1, 6, 0, 7, 0, 0) + bytes(8) + siaddr.ljust(4, b"\0") + bytes(4)
    data = head + MAC.ljust(16, b"\0") + sname.ljust(64, b"\0") + file.ljust(128, b"\0") + MAGIC
    data += bytes((52, 1, overload)) + options
    try:
        msg = parse(data)
    except DhcpParseError:
        return
    _everything_shown_is_safe(msg)


def _everything_shown_is_safe(msg: DhcpMessage) -> None:
    for port in (67, 4011):
        o = Offer(msg, "10.0.0.1", port, 0.0)
        kept = o.to_dict()
        for item in kept["options"]:
            assert _safe(item["value"])
        # JSON keeps the server's strings as sent (bounded), written as valid UTF-8; the terminal's are escaped
        fmt.json_line(kept).encode("utf-8")
        for key in ("bootfile", "next_server"):
            assert kept[key] is None or len(kept[key]) <= JSON_LIMIT
        assert all(_safe(cell) for cell in cells(o))
        choose_boot([o])
        analyse(PxeFacts("eth0", by_name("bios"), [o]))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=300))
def test_any_option_value_is_shown_bounded_and_printable(code, value):
    assert _safe(option_value(code, value))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_loader_magic_never_raises(head):
    loader_from_bytes(head)
    loader_from_bytes(b"MZ" + head)


# -- loaders ------------------------------------------------------------------------------------

def test_loaders_told_by_their_bytes_and_names():
    efi = loader_from_bytes(pe_image(0x8664))
    assert efi.firmware == "uefi" and efi.machine == 0x8664 and efi.cpu == "x64"
    assert loader_from_bytes(pe_image(0xAA64)).cpu == "ARM64"
    assert loader_from_bytes(pe_image(subsystem=3)).firmware is None  # a Windows console program
    assert loader_from_bytes(b"\xfa\xea\x05\x7c").firmware == NOT_UEFI  # no PE image: which is no BIOS proof
    assert loader_from_bytes(b"MZ\x90\x00").firmware is None  # too short to tell
    assert loader_from_name("boot\\x86\\wdsnbp.com").firmware == "bios"
    assert loader_from_name("EFI/BOOT/BOOTX64.EFI").firmware == "uefi"
    assert loader_from_name("undionly.kpxe").firmware == "bios"
    assert loader_from_name("boot/loader.bin").firmware is None


# -- findings ----------------------------------------------------------------------------------

def facts(offers, arch="bios", **kw) -> PxeFacts:
    return PxeFacts("eth0", by_name(arch), offers, **kw)


def ids(findings) -> list[str]:
    return [f.id for f in findings]


def test_nobody_answered():
    found = analyse(facts([], seen=3))
    assert ids(found) == ["no-offer"] and "3 other DHCP message(s)" in found[0].summary


def test_several_servers_agreeing_warn_and_disagreeing_err():
    a = offer(reply(siaddr="10.0.0.1", file=b"pxelinux.0"))
    b = offer(reply(siaddr="10.0.0.1", file=b"pxelinux.0", server="10.0.0.2"), source="10.0.0.2")
    c = offer(reply(siaddr="10.0.0.3", file=b"undionly.kpxe", server="10.0.0.3"), source="10.0.0.3")
    assert [(f.id, f.severity) for f in analyse(facts([a, b]))] == [("several-dhcp-servers", "warning")]
    assert [(f.id, f.severity) for f in analyse(facts([a, c]))] == [("several-dhcp-servers", "error")]


def test_no_boot_file_for_this_architecture():
    assert ids(analyse(facts([offer(reply(siaddr="10.0.0.1"))]))) == ["no-boot-file"]


def test_option_66_name_alone_is_an_error_and_beside_siaddr_a_warning():
    alone = offer(reply(file=b"pxelinux.0", options=[(66, b"tftp.invalid")]))
    found = analyse(facts([alone], resolved={"tftp.invalid": []}))
    assert [(f.id, f.severity) for f in found] == [("option-66-unresolved", "error")]
    beside = offer(reply(siaddr="10.0.0.1", file=b"pxelinux.0", options=[(66, b"tftp.invalid")]))
    assert [(f.id, f.severity) for f in analyse(facts([beside], resolved={}))] == [("option-66-unresolved", "warning")]
    assert analyse(facts([alone], resolved={"tftp.invalid": ["10.0.0.9"]})) == []


def test_proxy_without_a_boot_server_and_with_one():
    dhcp = offer(reply(siaddr="0.0.0.0"))
    proxy = offer(reply(yiaddr="0.0.0.0", server="10.0.0.2", options=[(60, b"PXEClient"), (43, b"\x06\x01\x08\xff")]),
                  source="10.0.0.2")
    found = ids(analyse(facts([dhcp, proxy], followups={"10.0.0.2": "silent"})))
    assert found == ["proxy-without-boot-server", "no-boot-file"]
    ack = offer(reply(yiaddr="0.0.0.0", kind=ACK, siaddr="10.0.0.2", file=b"pxelinux.0", server="10.0.0.2"),
                source="10.0.0.2", port=4011)
    boot = choose_boot([dhcp, proxy, ack])
    assert boot.address is dhcp and boot.boot is ack and boot.file == "pxelinux.0"
    assert analyse(facts([dhcp, proxy, ack], followups={"10.0.0.2": "answered"})) == []


def test_arch_mismatch_from_name_from_bytes_and_from_cpu():
    bios_file = offer(reply(siaddr="10.0.0.1", file=b"undionly.kpxe"))
    assert ids(analyse(facts([bios_file], arch="efi-x64"))) == ["arch-mismatch"]
    assert analyse(facts([bios_file], arch="bios")) == []
    neutral = offer(reply(siaddr="10.0.0.1", file=b"loader.bin"))
    probed = ProbeFacts("10.0.0.1", "loader.bin", ok=True, replied=True, head=pe_image(0x8664))
    assert ids(analyse(facts([neutral], probe=probed))) == ["arch-mismatch", "boot-file-ok"]
    assert ids(analyse(facts([neutral], arch="efi-x64", probe=probed))) == ["boot-file-ok"]
    arm = ProbeFacts("10.0.0.1", "loader.bin", ok=True, replied=True, head=pe_image(0xAA64))
    found = analyse(facts([neutral], arch="efi-x64", probe=arm))
    assert ids(found) == ["arch-mismatch", "boot-file-ok"] and "ARM64" in found[0].summary


def test_a_file_that_is_no_pe_image_is_not_uefi_not_for_bios():
    """A UEFI client given a file with a UEFI loader's name that is no PE image: not "for BIOS" (it is
    not shown to be anything), but not a UEFI executable; a BIOS client may well run it."""
    o = offer(reply(siaddr="10.0.0.1", file=b"grubx64.efi"))
    random = ProbeFacts("10.0.0.1", "grubx64.efi", ok=True, replied=True, head=b"\x7fELF" + bytes(60))
    found = analyse(facts([o], arch="efi-x64", probe=random))
    assert ids(found) == ["arch-mismatch", "boot-file-ok"]
    assert found[0].summary == ("The boot file 'grubx64.efi' is not a UEFI executable but the client is "
                                f"{by_name('efi-x64').title} (option 93 = 7): it does not start with 'MZ', so it "
                                "is not a PE image UEFI could run")
    assert ids(analyse(facts([o], arch="bios", probe=random))) == ["boot-file-ok"]


def test_the_pxe_client_an_architecture_makes_takes_its_article():
    assert by_name("bios").client == "a bios PXE client"
    assert by_name("efi-arm64").client == "an efi-arm64 PXE client"
    found = analyse(facts([], arch="efi-arm64"))
    assert found[0].summary == ("No DHCP server answered an efi-arm64 PXE client on eth0: no DHCP message at all "
                                "was seen on it")


def test_probe_results_become_findings():
    o = offer(reply(siaddr="10.0.0.99", file=b"pxelinux.0"))
    silent = ProbeFacts("10.0.0.99", "pxelinux.0", ok=False, replied=False, unreachable="no reply in 7 s")
    found = analyse(facts([o], probe=silent))
    assert ids(found) == ["next-server-unreachable"] and "siaddr" in found[0].summary
    missing = ProbeFacts("10.0.0.99", "pxelinux.0", ok=False, replied=True, error_code=1, error_message="nope",
                         nearest=("PXELINUX.0",))
    found = analyse(facts([o], probe=missing))
    assert ids(found) == ["boot-file-not-found"] and "'PXELINUX.0'" in found[0].summary


def test_candidate_names_for_a_missing_file():
    names = candidates("\\Boot\\PXELinux.0", by_name("bios"), ["undionly.kpxe"])
    assert names[:4] == ["/Boot/PXELinux.0", "Boot/PXELinux.0", "/boot/pxelinux.0", "boot/pxelinux.0"]
    assert "undionly.kpxe" in names and "Boot/pxelinux.0" in names and len(names) <= 16
    assert "ipxe.efi" in candidates("x.efi", by_name("efi-x64"), [])
