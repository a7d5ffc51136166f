"""The devices `serve` prints when it stops, judged for what each did: a real `tftpdiag serve`, a real
client on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.serving import serve

pytestmark = pytest.mark.timeout(120)


def test_a_device_that_only_uploaded_is_judged_uploaded_not_booted(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    upload = tmp_path / "fw.bin"
    upload.write_bytes(b"u" * 3000)
    with serve(root, "--no-tui", "--allow-upload", tmp=tmp_path) as server:
        assert server.put("fw.bin", upload).ok
        assert server.stop() == 0
    devices = [text for text in server.stdout().splitlines() if " device 127.0.0.1 " in text]
    assert len(devices) == 1, server.stdout()
    assert " uploaded " in devices[0] and "booted" not in devices[0] and "'fw.bin' ✔" in devices[0], devices


def test_a_device_that_went_on_after_a_name_too_long_for_the_disk_is_not_judged_optional(tmp_path: Path) -> None:
    """serve refuses a name the file system cannot hold with ERROR 1 (why: bad-name). The device that then
    fetched its other files went on without a file it could never get: a refusal to warn of
    (device-went-on-without), not the optional per-device file firmware asks for on purpose."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "boot.bin").write_bytes(b"b" * 3000)
    with serve(root, "--no-tui", tmp=tmp_path) as server:
        assert not server.get("a" * 300).ok
        assert server.get("boot.bin").ok
        assert server.stop() == 0
    out = server.stdout()
    device = [text for text in out.splitlines() if " device 127.0.0.1 " in text]
    assert len(device) == 1 and " booted " in device[0], out
    assert "went on to other files after" in out and "was refused (cannot use this name" in out, out
