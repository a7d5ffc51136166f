"""The name a device probably meant when it asks for a file that is not there, at a bounded cost.

The server answers every request on one thread, so a hint for the operator must not cost a transfer
its pace: comparing a name against thousands of entries took 95 ms, and twenty missing names a second
starved a download. Here a folder is listed once until it changes, a name in another case is a dict
look-up, the close-spelling search compares at most MAX_COMPARE names (those sorting nearest), answers
are remembered, and new searches (or listings) are limited to a few a second: past that budget a
refusal goes out without a hint rather than late. The hint only goes to the operator (the event), never
to the client, so leaving it out changes nothing on the wire.
"""

from __future__ import annotations

import bisect
import difflib
import os
from collections import OrderedDict
from itertools import islice
from pathlib import Path

from tftpdiag.records import record

__all__ = ["NameSuggester"]

MAX_ENTRIES = 5000  # names read from one folder
MAX_COMPARE = 300  # names a close-spelling search compares the request with
CUTOFF = 0.75  # difflib similarity a close spelling needs


@record
class _Listing:
    """A directory's names, kept until it changes, for near-miss suggestions."""

    mtime_ns: int
    by_lower: dict[str, str]  # case-folded name -> the name as it is on disk
    forward: list[str]  # the case-folded names, sorted: a misspelling late in a name sorts near it
    backward: list[str]  # the same, each reversed and sorted: a misspelling early in a name sorts near it


class NameSuggester:
    """``suggest(root, cleaned, now)``: the existing name closest to the missing ``cleaned``, or None.

    ``rate`` searches a second (after a burst of ``burst``) may do real work: list a folder or compare
    spellings. Everything else is answered from what is already known, or not at all.
    """

    def __init__(self, rate: float = 4.0, burst: float = 4.0, folders: int = 32, answers: int = 1024) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._refilled: float | None = None
        self._listings: OrderedDict[str, _Listing] = OrderedDict()
        self._answers: OrderedDict[tuple[str, int, str], str | None] = OrderedDict()
        self._folders, self._max_answers = folders, answers
        self.searches = 0  # work done: folder listings and spelling searches (for tests and the curious)
        self.skipped = 0  # requests answered without a hint because the budget was spent

    def suggest(self, root: Path, cleaned: str, now: float) -> str | None:
        prefix = os.path.dirname(cleaned)
        base = os.path.basename(cleaned)
        folder = os.fspath(root / prefix)
        try:
            mtime_ns = os.stat(folder).st_mtime_ns
        except OSError:
            return None
        key = (folder, mtime_ns, base)
        if key in self._answers:
            self._answers.move_to_end(key)
            return self._answers[key]
        listing = self._listings.get(folder)
        if listing is None or listing.mtime_ns != mtime_ns:
            if not self._spend(now):
                return None
            listing = self._list(folder, mtime_ns)
            if listing is None:
                return None
        self._listings.move_to_end(folder)
        found = listing.by_lower.get(base.lower())
        if found is None:
            if not self._spend(now):
                return None
            found = self._close(base, listing)
        self._remember(key, found)
        return os.path.join(prefix, found) if found is not None and prefix else found

    def _spend(self, now: float) -> bool:
        if self._refilled is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1.0:
            self.skipped += 1
            return False
        self._tokens -= 1.0
        self.searches += 1
        return True

    def _list(self, folder: str, mtime_ns: int) -> _Listing | None:
        try:
            with os.scandir(folder) as entries:
                names = [e.name for e in islice(entries, MAX_ENTRIES)]
        except OSError:
            return None
        by_lower = {n.lower(): n for n in names}
        listing = _Listing(mtime_ns, by_lower, sorted(by_lower), sorted(n[::-1] for n in by_lower))
        self._listings[folder] = listing
        while len(self._listings) > self._folders:
            self._listings.popitem(last=False)
        return listing

    @staticmethod
    def _close(base: str, listing: _Listing) -> str | None:
        """The closest spelling among the MAX_COMPARE names that sort nearest to it, forwards and
        backwards: a name with one slip shares all before it, or all after it, with the name meant."""
        key = base.lower()
        half = MAX_COMPARE // 2
        i = bisect.bisect_left(listing.forward, key)
        near = listing.forward[max(0, i - half):i + half]
        j = bisect.bisect_left(listing.backward, key[::-1])
        near += [name[::-1] for name in listing.backward[max(0, j - half):j + half]]
        close = difflib.get_close_matches(key, list(dict.fromkeys(near)), n=1, cutoff=CUTOFF)
        return listing.by_lower[close[0]] if close else None

    def _remember(self, key: tuple[str, int, str], found: str | None) -> None:
        self._answers[key] = found
        while len(self._answers) > self._max_answers:
            self._answers.popitem(last=False)
