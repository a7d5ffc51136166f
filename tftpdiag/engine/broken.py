"""What a transfer stopped by an error nobody foresaw says, on either side (engine/client.py, engine/server.py).

Why a module: such an error (a bug of ours, an OSError no check anticipated) used to end the thread it
happened on with a traceback on stderr: a client's caller then waited for an outcome for ever, and one
bad session ended a server's every other. Now the session it happened in fails, with this reason in its
record and log, and the peer is told in words that say nothing of this machine (it may be anyone).
"""

from __future__ import annotations

import os
import traceback

from tftpdiag.protocol.events import Reason

__all__ = ["reason", "kind", "TOLD_BY_CLIENT", "TOLD_BY_SERVER"]

TOLD_BY_CLIENT = "the client stopped on an error of its own"
TOLD_BY_SERVER = "the server stopped on an error of its own"


def kind(exc: BaseException) -> Reason:
    """LOCAL for a failure of this machine's (an OSError that says what), INTERNAL for a bug of ours."""
    return Reason.LOCAL if isinstance(exc, OSError) and exc.strerror else Reason.INTERNAL


def reason(exc: BaseException) -> str:
    """The whole reason, for this machine's user: an OSError's own words and file, or where a bug was
    met (the exception's type, file and line: what a bug report needs first)."""
    if isinstance(exc, OSError) and kind(exc) is Reason.LOCAL:
        return f"a local error stopped the transfer: {exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"tftpdiag failed inside ({type(exc).__name__}{where}): a bug, please report it"
