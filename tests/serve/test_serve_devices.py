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
