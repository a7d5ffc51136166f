"""The README's screenshots show the app as it is: drawn again from the same recorded sessions, each
one's footer (the keys the app offers) must read as in the committed picture. When a key is added,
renamed or removed, this fails until `python scripts/screenshots.py` is run again."""

from __future__ import annotations

import html
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("screenshots", ROOT / "scripts" / "screenshots.py")
assert _spec is not None and _spec.loader is not None
screenshots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(screenshots)

_TEXT = re.compile(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)" textLength="([\d.]+)"[^>]*>(.*?)</text>', re.S)


def svg_lines(svg: str) -> list[str]:
    """The screen's text, line by line, from an SVG that Textual exported (cells 12.2 units wide;
    runs of blanks are not written as text, so each run is placed by its x)."""
    rows: dict[float, dict[int, str]] = {}
    for x, y, _, text in _TEXT.findall(svg):
        column = round(float(x) / 12.2)
        cells = rows.setdefault(float(y), {})
        for offset, char in enumerate(html.unescape(text).replace("\xa0", " ")):
            cells[column + offset] = char
    lines = []
    for _, cells in sorted(rows.items()):
        width = max(cells) + 1 if cells else 0
        lines.append("".join(cells.get(i, " ") for i in range(width)).rstrip())
    return lines


def footer(svg: str) -> str:
    """The last line of text on the screen: the footer's keys."""
    lines = [line for line in svg_lines(svg) if line.strip()]
    return " ".join(lines[-1].split())


def readme_shots() -> list[str]:
    return re.findall(r"screenshots/([\w-]+)\.svg", (ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_shows_screenshots_that_the_script_makes() -> None:
    names = {shot[0] for shot in screenshots.SHOTS}
    shown = readme_shots()
    assert shown and set(shown) <= names, set(shown) - names


@pytest.mark.parametrize("name", sorted(set(readme_shots())))
async def test_the_footer_in_the_readme_screenshot_is_the_apps(name: str) -> None:
    committed = (ROOT / "screenshots" / f"{name}.svg").read_text(encoding="utf-8")
    now = await screenshots.render(name)
    assert footer(committed) == footer(now), (
        f"screenshots/{name}.svg shows a footer the app no longer has: run python scripts/screenshots.py")
    assert "Quit" in footer(now)
