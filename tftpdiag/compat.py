"""What the oldest Python tftpdiag supports (3.10, as on Ubuntu 22.04) lacks from newer ones."""

from __future__ import annotations

import sys
from enum import Enum

__all__ = ["StrEnum"]


class StrEnum310(str, Enum):
    """Python 3.11's ``enum.StrEnum`` for 3.10: members are their values in ``str()`` too (a plain
    ``str, Enum`` mix-in prints ``Role.CLIENT_READ`` there, and in f-strings from 3.12 on).
    Defined on every version, so that its tests run everywhere."""

    def __str__(self) -> str:
        return str(self.value)


if sys.version_info >= (3, 11):
    from enum import StrEnum  # novermin - only where it exists
else:
    StrEnum = StrEnum310
