"""Regenerate screenshots/*.svg from the recorded sample sessions in tests/support/tui_samples.py.

    python scripts/screenshots.py

The same recorded events feed the snapshot tests, so these pictures are the screens the tests check.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.pilot import Pilot  # noqa: E402

from tests.support import tui_samples  # noqa: E402
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


async def open_devices(pilot: Pilot) -> None:
    await pilot.press("d")


async def open_help(pilot: Pilot) -> None:
    await pilot.press("question_mark")


# name, the app, terminal size, keys before the shot. tests/tui/test_readme_screenshots.py draws each of
# these again and fails when the footer in the committed picture is not the app's footer any more.
SHOTS: list[tuple[str, Callable[[], TftpDiagApp], tuple[int, int], Callable[[Pilot], Awaitable[None]]]] = [
    ("probe", lambda: probe_app(tui_samples.probe_success()), (120, 36), _noop),
    ("probe-80x24", lambda: probe_app(tui_samples.probe_success()), (80, 24), _noop),
    ("probe-failed", lambda: probe_app(tui_samples.probe_failure()), (100, 30), _noop),
    ("serve", serve_app, (120, 36), _noop),
    ("session-detail", serve_app, (120, 36), open_detail),
    ("help", lambda: probe_app(tui_samples.probe_success()), (100, 32), open_help),
    ("trace", tui_samples.trace_app, (120, 36), _noop),
    ("devices", tui_samples.trace_app, (120, 36), open_devices),
]


async def render(name: str) -> str:
    """The SVG of one shot, as the app draws it now."""
    _, factory, size, before = next(shot for shot in SHOTS if shot[0] == name)
    app = factory()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await before(pilot)
        await pilot.pause()
        return app.export_screenshot()


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, factory, size, before in SHOTS:
        path = await shoot(factory(), name, size, before)
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    asyncio.run(main())
