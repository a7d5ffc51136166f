"""tftpdiag pxe against real DHCP servers on a LAN made of network namespaces (needs root).

Each test builds its own LAN (a bridge in one namespace, one namespace per host joined by veth pairs,
10.77.0.0/24 addresses that exist only inside them), starts dnsmasq as DHCP/proxyDHCP/TFTP server in
the servers' namespaces, runs ``tftpdiag pxe --json`` in the client's namespace, and removes it all
in a finaliser, whatever happened. dnsmasq runs with --no-ping (it would wait 3 s before each offer)
except in the test that checks the default --timeout is long enough for that wait.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.netns import Host, Lan, can_run

pytestmark = [pytest.mark.skipif(can_run() is not None, reason=can_run() or ""), pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]
SERVER, CLIENT, OTHER = "10.77.0.1/24", "10.77.0.200/24", "10.77.0.2/24"
NOBODY = "10.77.0.99"  # an address no host has


def pe_image(machine: int = 0x8664, subsystem: int = 10, size: int = 4096) -> bytes:
    """The start of a PE image: MZ, e_lfanew, PE signature, COFF machine, optional header subsystem."""
    image = bytearray(size)
    image[:2] = b"MZ"
    struct.pack_into("<I", image, 0x3C, 0x80)
    image[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<H", image, 0x84, machine)
    struct.pack_into("<H", image, 0x98, 0x20B)
    struct.pack_into("<H", image, 0x98 + 68, subsystem)
    return bytes(image)


BIOS_LOADER = b"\xfa\xea\x05\x7c\x00\x00" + bytes(range(256)) * 12  # real-mode code, no MZ


@pytest.fixture
def lan():
    with Lan() as made:
        yield made


@pytest.fixture
def tftp_root(tmp_path: Path) -> Path:
    root = tmp_path / "tftp"
    (root / "boot").mkdir(parents=True)
    (root / "pxelinux.0").write_bytes(BIOS_LOADER)
    (root / "undionly.kpxe").write_bytes(BIOS_LOADER)
    (root / "ipxe.efi").write_bytes(pe_image())
    (root / "boot" / "loader.bin").write_bytes(pe_image())
    return root


def dnsmasq(host: Host, tmp: Path, *conf: str, tftp: Path | None = None, ping: bool = False) -> None:
    """Start dnsmasq in ``host``'s namespace and wait until it says its DHCP (and TFTP) part is up."""
    lease = tmp / f"leases-{host.name}"
    cmd = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--interface=eth0",
           "--bind-interfaces", "--log-facility=-", "--log-dhcp", "--user=root", "--pid-file=",
           f"--dhcp-leasefile={lease}",
           *([] if ping else ["--no-ping"]), *conf]
    if tftp is not None:
        cmd += ["--enable-tftp", f"--tftp-root={tftp}"]
    proc = host.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    want = {"DHCP, "} | ({"TFTP root is"} if tftp is not None else set())
    deadline, seen = time.monotonic() + 10, []
    while want and time.monotonic() < deadline:
        try:
            text = lines.get(timeout=0.2)
        except queue.Empty:
            assert proc.poll() is None, f"dnsmasq exited: {''.join(seen)}"
            continue
        seen.append(text)
        want = {w for w in want if w not in text}
    assert not want, f"dnsmasq did not start: {''.join(seen)}"


def pxe(host: Host, *args: str, timeout: float | None = 1.5, without_capabilities: bool = False,
        interface: str | None = "eth0") -> tuple[int, dict | None, str]:
    """Run ``tftpdiag pxe --json`` in ``host``'s namespace (``timeout`` None: its default); (exit status,
    JSON, stderr)."""
    wait = [] if timeout is None else ["--timeout", str(timeout)]
    where = [] if interface is None else ["--interface", interface]
    cmd = [sys.executable, "-m", "tftpdiag", "pxe", *where, "--json", *wait, *args]
    if without_capabilities:
        # Still uid 0 (it can read the checkout wherever it is), but with no capability at all, as an
        # unprivileged user: binding port 68 is refused.
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = host.run(cmd, capture_output=True, text=True, timeout=40, env=env)
    data = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, data, done.stderr


def ids(data: dict) -> list[str]:
    return [f["id"] for f in data["findings"]]


ARCH_TAGS = ("--dhcp-match=set:bios,option:client-arch,0", "--dhcp-match=set:efi64,option:client-arch,7",
             "--dhcp-boot=tag:bios,pxelinux.0", "--dhcp-boot=tag:efi64,ipxe.efi")
RANGE = "--dhcp-range=10.77.0.10,10.77.0.20,255.255.255.0"


def test_default_timeout_waits_for_dnsmasqs_ping_and_the_device_boots(lan, tmp_path, tftp_root):
    server = lan.host("srv", SERVER)
    client = lan.host("cli", CLIENT)
    dnsmasq(server, tmp_path, RANGE, *ARCH_TAGS, tftp=tftp_root, ping=True)
    code, data, err = pxe(client, timeout=None)
    assert code == 0, err
    assert data["timeout_s"] == 5
    assert len(data["offers"]) == 1
    offer = data["offers"][0]
    assert offer["server"] == "10.77.0.1" and offer["your_ip"].startswith("10.77.0.")
    assert offer["bootfile"] == "pxelinux.0" and offer["next_server"] == "10.77.0.1" and not offer["proxy"]
    assert offer["time_s"] > 1  # the ping made it late: a 1 s listener would have missed it
    assert data["probe"]["ok"] and data["probe"]["bytes"] == len(BIOS_LOADER)
    assert data["ok"] and "boot-file-ok" in ids(data)


def test_each_architecture_gets_its_own_file_or_none(lan, tmp_path, tftp_root):
    server = lan.host("srv", SERVER)
    client = lan.host("cli", CLIENT)
    dnsmasq(server, tmp_path, RANGE, *ARCH_TAGS, "--dhcp-host=02:00:00:00:00:42,10.77.0.42", tftp=tftp_root)
    code, data, err = pxe(client, "--arch", "efi-x64")
    assert code == 0, err
    assert data["arch"] == "efi-x64" and data["chosen"]["bootfile"] == "ipxe.efi"
    assert data["probe"]["ok"] and data["probe"]["bytes"] == len(pe_image())
    code, data, err = pxe(client, "--arch", "efi-arm64", "--no-probe", "--mac", "02:00:00:00:00:42")
    assert code == 1, err
    assert ids(data) == ["no-boot-file"] and data["probe"] is None
    assert data["mac"] == "02:00:00:00:00:42" and data["offers"][0]["your_ip"] == "10.77.0.42"  # as that MAC


def test_a_loader_for_the_other_firmware_is_an_arch_mismatch(lan, tmp_path, tftp_root):
    server = lan.host("srv", SERVER)
    client = lan.host("cli", CLIENT)
    # BIOS gets a UEFI image under a neutral name (told by its PE header); x64 UEFI gets a BIOS loader's name.
    dnsmasq(server, tmp_path, RANGE, "--dhcp-match=set:bios,option:client-arch,0",
            "--dhcp-match=set:efi64,option:client-arch,7", "--dhcp-boot=tag:bios,boot/loader.bin",
            "--dhcp-boot=tag:efi64,undionly.kpxe", tftp=tftp_root)
    code, data, err = pxe(client, "--arch", "bios")
    assert code == 1, err
    mismatch = [f for f in data["findings"] if f["id"] == "arch-mismatch"]
    assert mismatch and "PE image" in mismatch[0]["summary"] and data["probe"]["ok"]
    code, data, err = pxe(client, "--arch", "efi-x64")
    assert code == 1, err
    assert "arch-mismatch" in ids(data) and data["probe"]["ok"]


def test_a_missing_boot_file_names_what_the_server_has(lan, tmp_path, tftp_root):
    server = lan.host("srv", SERVER)
    client = lan.host("cli", CLIENT)
    dnsmasq(server, tmp_path, RANGE, "--dhcp-boot=/PXELinux.0", tftp=tftp_root)
    code, data, err = pxe(client)
    assert code == 1, err
    found = [f for f in data["findings"] if f["id"] == "boot-file-not-found"]
    assert found and "'pxelinux.0'" in found[0]["summary"], data["findings"]
    assert "file-not-found" in [f["id"] for f in data["probe"]["findings"]]  # the probe's own finding too


def test_two_dhcp_servers_that_disagree(lan, tmp_path, tftp_root):
    one = lan.host("srv", SERVER)
    two = lan.host("two", OTHER)
    client = lan.host("cli", CLIENT)
    dnsmasq(one, tmp_path, RANGE, "--dhcp-boot=pxelinux.0", tftp=tftp_root)
    dnsmasq(two, tmp_path, "--dhcp-range=10.77.0.30,10.77.0.40,255.255.255.0", "--dhcp-boot=undionly.kpxe")
    code, data, err = pxe(client, "--no-probe")
    assert code == 1, err
    assert sorted(o["server"] for o in data["offers"]) == ["10.77.0.1", "10.77.0.2"]
    several = [f for f in data["findings"] if f["id"] == "several-dhcp-servers"]
    assert several and several[0]["severity"] == "error"
    assert any("pxelinux.0" in e for e in several[0]["evidence"])
    assert any("undionly" in e for e in several[0]["evidence"])


def test_proxy_dhcp_with_a_boot_server(lan, tmp_path, tftp_root):
    dhcp = lan.host("srv", SERVER)
    proxy = lan.host("pxy", OTHER)
    client = lan.host("cli", CLIENT)
    dnsmasq(dhcp, tmp_path, RANGE)  # addresses only
    dnsmasq(proxy, tmp_path, "--dhcp-range=10.77.0.0,proxy", '--pxe-service=x86PC,"Boot",pxelinux', tftp=tftp_root)
    code, data, err = pxe(client)
    assert code == 0, (err, data and data["findings"])
    kinds = sorted((o["server"], o["port"], o["proxy"]) for o in data["offers"])
    assert kinds == [("10.77.0.1", 67, False), ("10.77.0.2", 67, True), ("10.77.0.2", 4011, True)]
    assert data["chosen"]["your_ip"] and data["chosen"]["boot_from"] == "10.77.0.2"
    assert data["chosen"]["bootfile"] == "pxelinux.0" and data["probe"]["ok"]


def test_proxy_dhcp_without_a_boot_server(lan, tmp_path):
    dhcp = lan.host("srv", SERVER)
    proxy = lan.host("pxy", OTHER)
    client = lan.host("cli", CLIENT)
    dnsmasq(dhcp, tmp_path, RANGE)
    dnsmasq(proxy, tmp_path, "--dhcp-range=10.77.0.0,proxy", '--pxe-prompt="Booting",1')  # no pxe-service
    code, data, err = pxe(client)
    assert code == 1, err
    assert "proxy-without-boot-server" in ids(data) and "no-boot-file" in ids(data)
    assert data["probe"] is None


def test_option_66_with_a_name_that_does_not_resolve(lan, tmp_path, tftp_root):
    server = lan.host("srv", SERVER)
    client = lan.host("cli", CLIENT)
    # dnsmasq always fills siaddr with its own address, so PXE firmware still boots from it: a warning for
    # the devices that read option 66 first (phones, some firmware). With siaddr empty it is an error (unit test).
    dnsmasq(server, tmp_path, RANGE, "--dhcp-boot=pxelinux.0", "--dhcp-option=66,tftp.example.invalid", tftp=tftp_root)
    code, data, err = pxe(client)
    assert code == 0, err
    options = {o["code"]: o["value"] for o in data["offers"][0]["options"]}
    assert options[66] == "'tftp.example.invalid'"
    unresolved = [f for f in data["findings"] if f["id"] == "option-66-unresolved"]
    assert unresolved and unresolved[0]["severity"] == "warning" and "tftp.example.invalid" in unresolved[0]["summary"]


def test_a_next_server_nobody_has(lan, tmp_path, tftp_root):
    server = lan.host("srv", SERVER)
    client = lan.host("cli", CLIENT)
    dnsmasq(server, tmp_path, RANGE, f"--dhcp-boot=pxelinux.0,,{NOBODY}", tftp=tftp_root)
    code, data, err = pxe(client)
    assert code == 1, err
    assert data["chosen"]["next_server"] == NOBODY
    assert "next-server-unreachable" in ids(data) and not data["probe"]["ok"]


def test_an_interface_without_an_address_still_hears_the_offers(lan, tmp_path):
    server = lan.host("srv", SERVER)
    client = lan.host("cli", None)
    dnsmasq(server, tmp_path, RANGE, "--dhcp-boot=pxelinux.0")
    code, data, err = pxe(client, "--no-probe")
    assert code == 0, err
    assert [(o["server"], o["bootfile"]) for o in data["offers"]] == [("10.77.0.1", "pxelinux.0")]


def test_nobody_answers(lan):
    client = lan.host("cli", CLIENT)
    code, data, err = pxe(client, "--timeout", "1")
    assert code == 1, err
    assert ids(data) == ["no-offer"] and data["offers"] == [] and data["probe"] is None


def test_asking_one_server_in_another_subnet_as_a_relay_agent(lan, tmp_path, tftp_root):
    # The server is in 10.77.1.0/24 and serves the client's 10.77.0.0/24 only through relays (giaddr):
    # a broadcast DISCOVER gets nothing from it, a relayed one gets an offer for the client's subnet.
    server = lan.host("srv", "10.77.1.1/24")
    client = lan.host("cli", CLIENT)
    server.run(["ip", "route", "add", "10.77.0.0/24", "dev", "eth0"], check=True)
    client.run(["ip", "route", "add", "10.77.1.0/24", "dev", "eth0"], check=True)
    dnsmasq(server, tmp_path, RANGE, *ARCH_TAGS, tftp=tftp_root)
    code, data, err = pxe(client, "--no-probe")
    assert code == 1 and ids(data) == ["no-offer"], err
    code, data, err = pxe(client, "--server", "10.77.1.1", interface=None)  # routed, bound to no interface
    assert code == 0, (err, data and data["findings"])
    assert [(o["server"], o["bootfile"]) for o in data["offers"]] == [("10.77.1.1", "pxelinux.0")]
    assert data["offers"][0]["your_ip"].startswith("10.77.0.") and data["server"] == "10.77.1.1"
    assert data["probe"]["ok"]  # and the boot file comes from the server in the other subnet


def test_without_capabilities_one_clear_line(lan):
    client = lan.host("cli", CLIENT)
    code, data, err = pxe(client, "--timeout", "1", without_capabilities=True)
    assert code == 2 and data is None
    assert err.strip().splitlines()[-1].startswith("tftpdiag pxe: needs root") and "Traceback" not in err
