"""The base of the apps whose view is redrawn by a tick: the screens they push ask for one at once."""

from __future__ import annotations

from textual.app import App


class TickedApp(App[int]):
    """An app (the live/trace view, the sweep) that drains its feed and redraws in ``refresh_now``, on a
    timer and whenever a screen changes what it shows. Screens reach it as ``getters.app(TickedApp)``,
    which types ``self.app`` (and checks it is one)."""

    def refresh_now(self) -> None:
        raise NotImplementedError
