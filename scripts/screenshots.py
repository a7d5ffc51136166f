"""Regenerate screenshots/*.svg from the recorded sample sessions in tests/tui_samples.py.

    python scripts/screenshots.py

The same recorded events feed the snapshot tests, so these pictures are the screens the tests check.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.pilot import Pilot  # noqa: E402

from tests import tui_samples  # noqa: E402
from tftpdiag.tui.app import TftpDiagApp  # noqa: E402

OUT = ROOT / "screenshots"
probe_app, serve_app = tui_samples.probe_app, tui_samples.serve_app


async def _noop(pilot: Pilot) -> None:
    return None


async def shoot(app: TftpDiagApp, name: str, size: tuple[int, int],
                before: Callable[[Pilot], Awaitable[None]] = _noop) -> Path:
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await before(pilot)
        await pilot.pause()
        path = OUT / f"{name}.svg"
        app.save_screenshot(str(path))
    return path


async def open_detail(pilot: Pilot) -> None:
    await pilot.press("down", "enter")


async def open_help(pilot: Pilot) -> None:
    await pilot.press("question_mark")


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    shots = [
        await shoot(probe_app(tui_samples.probe_success()), "probe", (120, 36)),
        await shoot(probe_app(tui_samples.probe_success()), "probe-80x24", (80, 24)),
        await shoot(probe_app(tui_samples.probe_failure()), "probe-failed", (100, 30)),
        await shoot(serve_app(), "serve", (120, 36)),
        await shoot(serve_app(), "session-detail", (120, 36), open_detail),
        await shoot(probe_app(tui_samples.probe_success()), "help", (100, 32), open_help),
        await shoot(tui_samples.trace_app(), "trace", (120, 36)),
    ]
    for path in shots:
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    asyncio.run(main())
