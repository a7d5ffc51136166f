"""What the oldest Python tftpdiag supports (3.10, as on Ubuntu 22.04) lacks from newer ones."""

from __future__ import annotations

import sys
from enum import Enum

__all__ = ["StrEnum"]

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:
    class StrEnum(str, Enum):
        """Python 3.11's ``enum.StrEnum``: members are their values, in ``str()`` and f-strings too
        (a plain ``str, Enum`` mix-in would print ``Role.CLIENT_READ`` where the value is meant)."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)
